//! `POST /auth/register`, `POST /auth/login`, `GET /auth/me`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::ApiState;
use super::error::ApiError;
use super::extract::{ClientIp, CurrentUser, JsonObject};
use crate::domain::{DisplayName, Password, Username};
use crate::error::{ClientError, ErrorCode};
use crate::store::{NewUser, User};

/// What register and login answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    token: String,
    expires_at: u64,
    user: User,
}

fn session(state: &ApiState, user: User) -> Result<Session, ApiError> {
    let issued = state
        .keys
        .issue(&user.id, &user.display_name)
        .map_err(|_| {
            tracing::error!("token signing failed");
            ClientError::new(ErrorCode::Internal)
        })?;
    Ok(Session {
        token: issued.token,
        expires_at: issued.expires_at,
        user,
    })
}

fn password_field(body: &JsonObject) -> Result<Password, ClientError> {
    body.field("password", |s| Password::parse(s.to_string()))
}

/// Registers a user and logs them in.
#[tracing::instrument(skip_all)]
pub async fn register(
    State(state): State<ApiState>,
    ClientIp(ip): ClientIp,
    body: JsonObject,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let key = state.limits.ip_key(ip);
    let limited = |wait| {
        tracing::warn!(%ip, route = "register", "rate limited");
        ApiError::rate_limited(wait)
    };
    state.limits.rates().register(key).map_err(limited)?;
    if let Some(cluster) = state.limits.cluster() {
        cluster
            .register(key)
            .await
            .map_err(|e| cluster_refusal(e, limited))?;
    }
    if !state.registration_open {
        return Err(ClientError::new(ErrorCode::RegistrationClosed).into());
    }
    let username = body.field("username", Username::parse)?;
    let password = password_field(&body)?;
    let display_name = body.field("displayName", DisplayName::parse)?;
    if state.store.credentials(&username).await?.is_some() {
        return Err(ClientError::new(ErrorCode::UsernameTaken).into());
    }
    let password_hash = state.hasher.hash(password).await?;
    let user = state
        .store
        .create_user(NewUser {
            username,
            display_name,
            password_hash,
        })
        .await?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok((StatusCode::CREATED, Json(session(&state, user)?)))
}

/// A parsed login body.
#[derive(Debug)]
pub struct LoginRequest {
    /// The username; `None` when it cannot be a valid one (answered exactly
    /// like an unknown user).
    pub username: Option<Username>,
    /// The password; `None` when it breaks the length rule (likewise).
    pub password: Option<Password>,
}

impl LoginRequest {
    /// Reads `{username, password}`: both must be strings.
    ///
    /// # Errors
    /// `bad_request` when a field is missing or not a string.
    pub fn parse(body: &JsonObject) -> Result<Self, ClientError> {
        Ok(Self {
            username: body.field("username", |s| Ok::<_, &str>(Username::parse(s).ok()))?,
            password: body.field("password", |s| {
                Ok::<_, &str>(Password::parse(s.to_string()).ok())
            })?,
        })
    }
}

/// Logs a user in. An unknown username and a wrong password give the same
/// answer, byte for byte, after the same work.
#[tracing::instrument(skip_all)]
pub async fn login(
    State(state): State<ApiState>,
    ClientIp(ip): ClientIp,
    body: JsonObject,
) -> Result<Json<Session>, ApiError> {
    let started = std::time::Instant::now();
    let result = login_inner(&state, ip, body).await;
    state.metrics.login(started.elapsed());
    result
}

async fn login_inner(
    state: &ApiState,
    ip: std::net::IpAddr,
    body: JsonObject,
) -> Result<Json<Session>, ApiError> {
    let invalid = || ClientError::new(ErrorCode::InvalidCredentials);
    let LoginRequest { username, password } = LoginRequest::parse(&body)?;
    let limited = |wait| {
        tracing::warn!(%ip, route = "login", "rate limited");
        ApiError::rate_limited(wait)
    };
    let key = state.limits.ip_key(ip);
    state
        .limits
        .rates()
        .login(key, username.as_ref())
        .map_err(limited)?;
    // Cluster mode: password guessing must not multiply by the number of nodes.
    if let Some(cluster) = state.limits.cluster() {
        cluster
            .login(key, username.as_ref())
            .await
            .map_err(|e| cluster_refusal(e, limited))?;
    }
    let password = password.ok_or_else(invalid)?;
    let credentials = match &username {
        Some(u) => state.store.credentials(u).await?,
        None => None,
    };
    let (user, stored) = match credentials {
        Some(c) => (Some(c.user), c.password_hash),
        None => (None, None),
    };
    let verified = state.hasher.verify(password, stored).await?;
    match user {
        Some(user) if verified => {
            tracing::info!(user_id = %user.id, "login succeeded");
            Ok(Json(session(state, user)?))
        }
        _ => {
            tracing::info!(reason = "invalid_credentials", %ip, "login failed");
            Err(invalid().into())
        }
    }
}

/// The user behind the bearer token.
pub async fn me(CurrentUser(user): CurrentUser) -> Json<User> {
    Json(user)
}

/// A cluster-wide limit's refusal: `rate_limited` with its wait, or
/// `unavailable` when Redis did not answer.
fn cluster_refusal(
    e: crate::cluster::rates::Limited,
    limited: impl FnOnce(crate::limits::RetryAfter) -> ApiError,
) -> ApiError {
    match e {
        crate::cluster::rates::Limited::Wait(wait) => limited(wait),
        crate::cluster::rates::Limited::Cluster(e) => e.into(),
    }
}
