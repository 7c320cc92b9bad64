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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};

use super::registry::Refusal;
use super::reply::{self, Channel};
use super::{Hub, events, rooms};
use crate::auth::TokenError;
use crate::cluster::ClusterError;
use crate::cluster::admission::Admission;
use crate::cluster::presence::{AcquireError, PresenceSlot};
use crate::cluster::rates::Limited;
use crate::domain::{DisplayName, UserId};
use crate::error::{ClientError, ErrorCode};
use crate::http::client_ip::client_ip;
use crate::limits::{EventClass, Slot};

/// Who is on a socket, fixed at the handshake.
#[derive(Debug, Clone)]
pub struct Session {
    /// The verified user.
    pub user_id: UserId,
    /// Their display name from the directory.
    pub display_name: DisplayName,
    /// The token's `exp` (seconds since the Unix epoch).
    pub expires_at: u64,
    /// The client's address (through trusted proxies).
    pub ip: IpAddr,
    /// What the socket holds while it lives; dropped with the socket.
    guard: Arc<SocketGuard>,
}

/// Resources tied to a socket's life: its connection slot, its token-expiry
/// timer, and its count of consecutive rate-limited events. Dropping the
/// socket drops the guard, which frees the slot and stops the timer.
#[derive(Debug)]
struct SocketGuard {
    _slot: Slot,
    /// Cluster mode: the cluster-wide slot (released at disconnect, or in
    /// the background when dropped unreleased).
    presence: Option<PresenceSlot>,
    expiry: tokio::task::AbortHandle,
    limited_in_a_row: AtomicU32,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.expiry.abort();
    }
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
    /// Too many handshakes from this address.
    #[error("rate_limited")]
    RateLimited,
    /// A connection cap (per user, per IP, total) is full.
    #[error("too_many_connections")]
    TooManyConnections,
    /// The directory did not answer within `store.mongodb.query_timeout_ms`
    /// (or failed): try again later, the token is fine.
    #[error("unavailable")]
    Unavailable,
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

/// The client address of a socket's opening request.
fn socket_ip<A: Adapter>(socket: &SocketRef<A>, hub: &Hub) -> IpAddr {
    let parts = socket.req_parts();
    // Set by the transport gate, which drops the forwarding headers.
    if let Some(addr) = parts.extensions.get::<crate::http::client_ip::ClientAddr>() {
        return addr.0;
    }
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    client_ip(peer, &parts.headers, &hub.trusted_proxies)
}

/// The connect middleware. See the module docs. Refusals are counted in
/// the `handshake_failures` metric by code.
pub async fn authenticate<A: Adapter>(
    socket: SocketRef<A>,
    io: SocketIo<A>,
    auth: TryData<Value>,
    State(hub): State<Arc<Hub>>,
) -> Result<(), ConnectError> {
    let result = admit_socket(socket, io, auth, &hub).await;
    if let Err(e) = &result {
        hub.metrics.handshake_failed(e.code());
    }
    result
}

impl ConnectError {
    /// The stable code (also the `connect_error` message).
    pub fn code(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::TokenExpired => "token_expired",
            Self::RateLimited => "rate_limited",
            Self::TooManyConnections => "too_many_connections",
            Self::Unavailable => "unavailable",
        }
    }
}

async fn admit_socket<A: Adapter>(
    socket: SocketRef<A>,
    io: SocketIo<A>,
    TryData(auth): TryData<Value>,
    hub: &Hub,
) -> Result<(), ConnectError> {
    let auth = auth.ok();
    let ip = socket_ip(&socket, hub);
    let ip_key = hub.limits.ip_key(ip);
    if hub.limits.rates().handshake(ip_key).is_err() {
        tracing::warn!(reason = "rate_limited", %ip, "handshake refused");
        return Err(ConnectError::RateLimited);
    }
    if let Some(cluster) = hub.cluster() {
        cluster_handshake(cluster, ip_key, ip).await?;
    }
    let Some(token) = presented_token(&auth, &socket.req_parts().headers) else {
        tracing::info!(reason = "missing", %ip, "handshake refused");
        return Err(ConnectError::Unauthorized);
    };
    let verified = hub.keys.verify(token).map_err(|e| {
        let reason = match e {
            TokenError::Expired => "expired",
            TokenError::Invalid(r) => r.as_str(),
        };
        tracing::info!(reason, %ip, "handshake refused");
        match e {
            TokenError::Expired => ConnectError::TokenExpired,
            TokenError::Invalid(_) => ConnectError::Unauthorized,
        }
    })?;
    let user = match hub.store.user(&verified.user_id).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            tracing::info!(reason = "unknown_user", user_id = %verified.user_id, %ip, "handshake refused");
            return Err(ConnectError::Unauthorized);
        }
        Err(e) => {
            tracing::warn!(error = %e, "handshake refused: directory unavailable");
            return Err(ConnectError::Unavailable);
        }
    };
    let groups = hub.store.groups_of(&user.id).await.map_err(|e| {
        tracing::warn!(error = %e, "handshake refused: directory unavailable");
        ConnectError::Unavailable
    })?;

    let slot = hub
        .limits
        .connections
        .acquire(&user.id, hub.limits.ip_key(ip), &hub.limits.caps())
        .map_err(|cap| {
            tracing::warn!(reason = "connection_cap", cap = cap.as_str(), user_id = %user.id, %ip, "handshake refused");
            ConnectError::TooManyConnections
        })?;
    let presence = match hub.cluster() {
        Some(cluster) => Some(
            cluster
                .presence
                .acquire(&user.id, ip_key, &hub.limits.caps())
                .await
                .map_err(|e| match e {
                    AcquireError::Cap(cap) => {
                        tracing::warn!(reason = "connection_cap", cap = cap.as_str(), scope = "cluster", user_id = %user.id, %ip, "handshake refused");
                        ConnectError::TooManyConnections
                    }
                    AcquireError::Cluster(e) => {
                        tracing::warn!(error = %e, "handshake refused: cluster unavailable");
                        ConnectError::Unavailable
                    }
                })?,
        ),
        None => None,
    };
    // Fenced while the slot was being taken: this socket might miss the
    // fence's disconnect sweep, so it is refused now (its slot is released).
    if hub.cluster().is_some_and(|c| !c.serving()) {
        return Err(ConnectError::Unavailable);
    }
    let expiry = spawn_expiry(io, socket.id, verified.expires_at);
    socket.extensions.insert(Arc::new(Session {
        user_id: user.id.clone(),
        display_name: user.display_name.clone(),
        expires_at: verified.expires_at,
        ip,
        guard: Arc::new(SocketGuard {
            _slot: slot,
            presence,
            expiry,
            limited_in_a_row: AtomicU32::new(0),
        }),
    }));
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

/// Cluster mode, before the token is even read: a fenced node refuses at
/// once, and the handshake rate holds across every node (one round trip).
async fn cluster_handshake(
    cluster: &Admission,
    ip_key: crate::limits::IpKey,
    ip: IpAddr,
) -> Result<(), ConnectError> {
    if !cluster.serving() {
        let reason = if cluster.nodes.is_fenced() {
            "fenced"
        } else {
            "resubscribing"
        };
        tracing::warn!(reason, %ip, "handshake refused");
        return Err(ConnectError::Unavailable);
    }
    match cluster.rates.handshake(ip_key).await {
        Ok(()) => Ok(()),
        Err(Limited::Wait(_)) => {
            tracing::warn!(reason = "rate_limited", scope = "cluster", %ip, "handshake refused");
            Err(ConnectError::RateLimited)
        }
        Err(Limited::Cluster(e)) => {
            tracing::warn!(error = %e, "handshake refused: cluster unavailable");
            Err(ConnectError::Unavailable)
        }
    }
}

impl Session {
    /// Cluster mode: frees the socket's cluster-wide slot now (once), and
    /// reports the user offline when it was their last socket anywhere. One
    /// process: nothing (the local slot goes with the socket).
    pub async fn release_presence(&self) {
        if let Some(presence) = &self.guard.presence {
            presence.release().await;
        }
    }
}

/// When the token expires, tells the socket (`tokenExpired`) and disconnects
/// it. Holds only the server handle and the socket id, so it keeps nothing
/// alive; the socket's guard aborts it when the socket goes first.
fn spawn_expiry<A: Adapter>(
    io: SocketIo<A>,
    sid: socketioxide::socket::Sid,
    expires_at: u64,
) -> tokio::task::AbortHandle {
    let wait = Duration::from_secs(expires_at.saturating_sub(now_secs()));
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        if let Some(socket) = super::rooms::namespace(&io).and_then(|ns| ns.get_socket(sid)) {
            let error = ClientError::new(ErrorCode::TokenExpired);
            let _ = socket.emit(
                events::TOKEN_EXPIRED,
                &json!({ "code": error.code, "message": error.message }),
            );
            if let Ok(s) = current_unchecked(&socket) {
                tracing::info!(user_id = %s.user_id, "token expired: socket disconnected");
            }
            let _ = socket.disconnect();
        }
    })
    .abort_handle()
}

fn current_unchecked<A: Adapter>(socket: &SocketRef<A>) -> Result<Arc<Session>, ClientError> {
    of(socket).ok_or(ClientError::new(ErrorCode::Unauthorized))
}

/// The session the handshake stored on `socket`, expired or not (shared:
/// reading it per event costs a reference count, not a copy).
pub fn of<A: Adapter>(socket: &SocketRef<A>) -> Option<Arc<Session>> {
    socket.extensions.get::<Arc<Session>>()
}

/// An event refused before it ran: the reply to send, and whether the socket
/// has been refused so often in a row that it is to be disconnected.
#[derive(Debug)]
pub struct Refused {
    refusal: Refusal,
    disconnect: bool,
}

impl Refused {
    /// Answers the sender (ack and error event), then disconnects it when it
    /// kept hammering after being limited.
    pub fn reply<A: Adapter>(
        self,
        metrics: &crate::metrics::Metrics,
        socket: SocketRef<A>,
        ack: AckSender<A>,
        event: &'static str,
        channel: Channel,
    ) {
        reply::fail(
            metrics,
            &socket,
            ack,
            event,
            channel,
            &self.refusal.error,
            self.refusal.context,
        );
        if self.disconnect {
            let _ = socket.disconnect();
        }
    }
}

impl From<ClientError> for Refused {
    fn from(error: ClientError) -> Self {
        Self {
            refusal: error.into(),
            disconnect: false,
        }
    }
}

/// Admits an event of `class`: a live session (token not expired) and a
/// free rate-limit slot, checked before any payload decoding, directory
/// lookup or relay.
///
/// # Errors
/// `token_expired`, `unauthorized`, or `rate_limited` with `retryAfterMs`
/// (and a disconnect after `rate_limits.disconnect_after` in a row).
pub async fn admit<A: Adapter>(
    socket: &SocketRef<A>,
    hub: &Hub,
    class: EventClass,
    event: &'static str,
) -> Result<Arc<Session>, Refused> {
    let session = current(socket)?;
    let rates = hub.limits.rates();
    // Governor first (no round trip for a flood), then, in cluster mode, the
    // same limit across every node.
    let verdict = match rates.event(class, &session.user_id) {
        Ok(()) => cluster_event(hub, class, &session.user_id).await,
        Err(wait) => Err(Limited::Wait(wait)),
    };
    match verdict {
        Ok(()) => {
            session.guard.limited_in_a_row.store(0, Ordering::Relaxed);
            Ok(session)
        }
        Err(e) => Err(refused(&session, hub, e, event)),
    }
}

/// The refusal of an event over a limit (counting refusals in a row, so a
/// socket that keeps hammering is disconnected) or with the cluster down.
fn refused(session: &Session, hub: &Hub, e: Limited, event: &'static str) -> Refused {
    match e {
        Limited::Cluster(e) => {
            tracing::warn!(user_id = %session.user_id, event, error = %e, "event refused: cluster unavailable");
            ClientError::from(e).into()
        }
        Limited::Wait(wait) => {
            let in_a_row = session
                .guard
                .limited_in_a_row
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            let limit = hub.limits.rates().disconnect_after();
            let disconnect = limit > 0 && in_a_row >= limit;
            tracing::warn!(user_id = %session.user_id, ip = %session.ip, event, in_a_row, disconnect, "rate limited");
            let mut context = Map::new();
            context.insert("retryAfterMs".into(), json!(wait.as_millis()));
            Refused {
                refusal: Refusal {
                    error: ClientError::new(ErrorCode::RateLimited),
                    context,
                },
                disconnect,
            }
        }
    }
}

/// An event this node's limits admitted whose cluster-wide charge is still
/// to be taken: by the gate of the transition's first read (one round trip
/// for both, see [`super::call_store::Gate`]), or on its own, before the
/// answer, when the event stops earlier. Either way every event is charged
/// once, and an event over the cluster's limit answers `rate_limited`
/// whatever else was wrong with it. One process: nothing is pending.
#[derive(Debug)]
pub struct Pending {
    session: Arc<Session>,
    charge: Option<crate::cluster::rates::Charge>,
    limited: Option<Limited>,
    event: &'static str,
}

impl Pending {
    /// The sender's session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The charge, for a gate (taken once).
    pub fn take_charge(&mut self) -> Option<crate::cluster::rates::Charge> {
        self.charge.take()
    }

    /// What a gate's refusal answers. A refused charge is remembered, so
    /// [`Pending::finish`] counts it like any limit.
    pub fn gate_refusal(&mut self, e: super::call_store::GateError) -> Refusal {
        use super::call_store::GateError;
        match e {
            GateError::Limited(wait) => {
                self.limited = Some(Limited::Wait(wait));
                ClientError::new(ErrorCode::RateLimited).into()
            }
            GateError::Offline => ClientError::new(ErrorCode::Offline).into(),
            GateError::Cluster(e) => ClientError::from(e).into(),
        }
    }

    /// Settles the charge (on its own when no gate took it) and says how
    /// to answer: `Ok(result)`, or `Err` when the event was over a limit
    /// (or the cluster did not answer the charge).
    ///
    /// # Errors
    /// The [`Refused`] to reply with instead of `result`.
    pub async fn finish<T>(mut self, hub: &Hub, result: T) -> Result<T, Refused> {
        if self.limited.is_none()
            && let Some(charge) = self.charge.take()
            && let Some(cluster) = hub.cluster()
            && let Err(e) = Box::pin(cluster.rates.settle(charge)).await
        {
            self.limited = Some(e);
        }
        match self.limited {
            Some(e) => Err(refused(&self.session, hub, e, self.event)),
            None => {
                self.session
                    .guard
                    .limited_in_a_row
                    .store(0, Ordering::Relaxed);
                Ok(result)
            }
        }
    }

    /// [`Pending::finish`] for a call event, answering a refusal itself:
    /// `None` once the sender was told it was over a limit.
    pub async fn settled<T, A: Adapter>(
        self,
        hub: &Hub,
        result: T,
        socket: &SocketRef<A>,
        ack: AckSender<A>,
    ) -> Option<(T, AckSender<A>)> {
        let event = self.event;
        let finished = self.finish(hub, result).await;
        or_reply(finished, socket, hub, event, Channel::Call, ack)
    }
}

/// [`admit`] with the cluster-wide charge left [`Pending`]: this node's
/// limits (and, in cluster mode, its lease) are checked now, without a
/// round trip.
///
/// # Errors
/// [`Refused`] by this node's limits, a fenced node, or an expired token.
pub fn admit_pending<A: Adapter>(
    socket: &SocketRef<A>,
    hub: &Hub,
    class: EventClass,
    event: &'static str,
) -> Result<Pending, Refused> {
    let session = current(socket)?;
    if let Err(wait) = hub.limits.rates().event(class, &session.user_id) {
        return Err(refused(&session, hub, Limited::Wait(wait), event));
    }
    let charge = match hub.cluster() {
        None => None,
        Some(cluster) if cluster.nodes.is_fenced() => {
            return Err(refused(
                &session,
                hub,
                Limited::Cluster(ClusterError::Fenced),
                event,
            ));
        }
        Some(cluster) => Some(cluster.rates.event_charge(class, &session.user_id)),
    };
    Ok(Pending {
        session,
        charge,
        limited: None,
        event,
    })
}

/// [`admit_pending`], answering the refusal itself (see [`admitted`]).
pub fn admitted_pending<A: Adapter>(
    socket: &SocketRef<A>,
    hub: &Hub,
    class: EventClass,
    event: &'static str,
    channel: Channel,
    ack: AckSender<A>,
) -> Option<(Pending, AckSender<A>)> {
    let admission = admit_pending(socket, hub, class, event);
    or_reply(admission, socket, hub, event, channel, ack)
}

/// The admitted value with the ack, or `None` once a refusal was answered.
fn or_reply<T, A: Adapter>(
    admission: Result<T, Refused>,
    socket: &SocketRef<A>,
    hub: &Hub,
    event: &'static str,
    channel: Channel,
    ack: AckSender<A>,
) -> Option<(T, AckSender<A>)> {
    match admission {
        Ok(admitted) => Some((admitted, ack)),
        Err(refused) => {
            refused.reply(&hub.metrics, socket.clone(), ack, event, channel);
            None
        }
    }
}

/// Cluster mode: the cluster-wide limit of `class` for `user` (one round
/// trip), refused at once when this node is fenced. One process: nothing.
async fn cluster_event(hub: &Hub, class: EventClass, user: &UserId) -> Result<(), Limited> {
    let Some(cluster) = hub.cluster() else {
        return Ok(());
    };
    if cluster.nodes.is_fenced() {
        return Err(ClusterError::Fenced.into());
    }
    // Boxed: see `CallStore::run`.
    Box::pin(cluster.rates.event(class, user)).await
}

/// [`admit`], answering the refusal itself: `None` means the event was
/// refused and answered, and the handler has nothing more to do.
pub async fn admitted<A: Adapter>(
    socket: &SocketRef<A>,
    hub: &Hub,
    class: EventClass,
    event: &'static str,
    channel: Channel,
    ack: AckSender<A>,
) -> Option<(Arc<Session>, AckSender<A>)> {
    let admission = admit(socket, hub, class, event).await;
    or_reply(admission, socket, hub, event, channel, ack)
}

/// The session of a socket that passed the handshake, refusing events once the
/// token has expired.
///
/// # Errors
/// `unauthorized` with no session (cannot happen after the middleware), and
/// `token_expired` past the token's `exp`.
pub fn current<A: Adapter>(socket: &SocketRef<A>) -> Result<Arc<Session>, ClientError> {
    let session = current_unchecked(socket)?;
    if now_secs() >= session.expires_at {
        return Err(ClientError::new(ErrorCode::TokenExpired));
    }
    Ok(session)
}

/// Most user ids asked of the directory in one query by [`spawn_recheck`].
const RECHECK_CHUNK: usize = 500;

/// Every `period`, disconnects the live sockets whose user the directory no
/// longer knows (a deleted account), so a deleted user loses access within
/// `period` plus one directory round trip, not when their token expires.
/// Stops when the server closes. A directory that fails is retried at the
/// next tick, and nobody is disconnected for it.
pub fn spawn_recheck<A: Adapter>(io: SocketIo<A>, store: crate::store::Store, period: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(ns) = rooms::namespace(&io) else {
                break;
            };
            let mut by_user: std::collections::HashMap<UserId, Vec<SocketRef<A>>> =
                std::collections::HashMap::new();
            for socket in ns.sockets() {
                if let Some(s) = of(&socket) {
                    by_user.entry(s.user_id.clone()).or_default().push(socket);
                }
            }
            let users: Vec<UserId> = by_user.keys().cloned().collect();
            for chunk in users.chunks(RECHECK_CHUNK) {
                let existing = match store.existing_users(chunk).await {
                    Ok(ids) => ids.into_iter().collect::<std::collections::HashSet<_>>(),
                    Err(e) => {
                        tracing::warn!(error = %e, "session recheck: directory failed; retrying next time");
                        break;
                    }
                };
                for gone in chunk.iter().filter(|u| !existing.contains(*u)) {
                    for socket in by_user.remove(gone).unwrap_or_default() {
                        let _ = socket.disconnect();
                    }
                    tracing::info!(user_id = %gone, "user no longer in the directory: sockets disconnected");
                }
            }
        }
    });
}
