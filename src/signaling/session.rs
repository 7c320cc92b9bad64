//! The Socket.IO handshake: who is on this socket.
//!
//! A connect middleware verifies the JWT from the CONNECT packet's auth payload
//! (`io(url, { auth: { token } })`) or an `Authorization: Bearer` header (never
//! the query string: URLs end up in logs), checks that the user exists, stores
//! the [`Session`] in the socket's extensions and joins `user:{id}` and
//! `group:{gid}` for each of the user's groups. Handlers read identity only
//! from there.
//!
//! Event handlers are registered here too, inside the middleware, because
//! socketioxide acknowledges CONNECT before it runs (spawns) the connect
//! handler: handlers registered there can miss events a client emits right on
//! `connect`, as the seed frontend does with `userOnline`. Middlewares run
//! before the CONNECT acknowledgement, so nothing can arrive unhandled.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use socketioxide::extract::{SocketRef, State, TryData};

use super::{Hub, rooms};
use crate::auth::TokenError;
use crate::domain::{DisplayName, UserId};
use crate::error::{ClientError, ErrorCode};

/// Who is on a socket, fixed at the handshake.
#[derive(Debug, Clone)]
pub struct Session {
    /// The verified user.
    pub user_id: UserId,
    /// Their display name from the directory.
    pub display_name: DisplayName,
    /// The token's `exp` (seconds since the Unix epoch).
    pub expires_at: u64,
}

/// Why a handshake was refused. `Display` is the stable code the client gets
/// as its `connect_error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// No token, bad signature, unknown user, wrong issuer or audience, ...
    #[error("unauthorized")]
    Unauthorized,
    /// A genuine token past its `exp`.
    #[error("token_expired")]
    TokenExpired,
    /// The directory could not be asked.
    #[error("internal")]
    Internal,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token from the auth payload, else from the Authorization header.
fn presented_token<'a>(
    auth: &'a Option<Value>,
    headers: &'a axum::http::HeaderMap,
) -> Option<&'a str> {
    auth.as_ref()
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .or_else(|| crate::http::extract::bearer_token(headers))
}

/// The connect middleware. See the module docs.
pub async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(hub): State<Arc<Hub>>,
) -> Result<(), ConnectError> {
    let auth = auth.ok();
    let peer = socket
        .req_parts()
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let Some(token) = presented_token(&auth, &socket.req_parts().headers) else {
        tracing::info!(reason = "missing", ip = ?peer, "handshake refused");
        return Err(ConnectError::Unauthorized);
    };
    let verified = hub.keys.verify(token).map_err(|e| {
        let reason = match e {
            TokenError::Expired => "expired",
            TokenError::Invalid(r) => r.as_str(),
        };
        tracing::info!(reason, ip = ?peer, "handshake refused");
        match e {
            TokenError::Expired => ConnectError::TokenExpired,
            TokenError::Invalid(_) => ConnectError::Unauthorized,
        }
    })?;
    let user = match hub.store.user(&verified.user_id).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            tracing::info!(reason = "unknown_user", user_id = %verified.user_id, ip = ?peer, "handshake refused");
            return Err(ConnectError::Unauthorized);
        }
        Err(e) => {
            tracing::error!(error = %e, "directory failed during handshake");
            return Err(ConnectError::Internal);
        }
    };
    let groups = hub.store.groups_of(&user.id).await.map_err(|e| {
        tracing::error!(error = %e, "directory failed during handshake");
        ConnectError::Internal
    })?;

    socket.extensions.insert(Session {
        user_id: user.id.clone(),
        display_name: user.display_name.clone(),
        expires_at: verified.expires_at,
    });
    socket.join(rooms::user_room(&user.id));
    socket.join(
        groups
            .iter()
            .map(|g| rooms::group_room(&g.id))
            .collect::<Vec<_>>(),
    );
    super::register_handlers(&socket);
    tracing::debug!(user_id = %user.id, groups = groups.len(), "handshake accepted");
    Ok(())
}

/// The session of a socket that passed the handshake, refusing events once the
/// token has expired.
///
/// # Errors
/// `unauthorized` with no session (cannot happen after the middleware), and
/// `token_expired` past the token's `exp`.
pub fn current(socket: &SocketRef) -> Result<Session, ClientError> {
    let session = socket
        .extensions
        .get::<Session>()
        .ok_or(ClientError::new(ErrorCode::Unauthorized))?;
    if now_secs() >= session.expires_at {
        return Err(ClientError::new(ErrorCode::TokenExpired));
    }
    Ok(session)
}
