//! Socket.IO signaling: the handshake ([`session`]), rooms ([`rooms`]), event
//! names ([`events`]), payload reading ([`payload`]) and replies ([`reply`]).

pub mod call_store;
pub mod calls;
pub mod events;
pub mod io;
pub mod liveness;
pub mod payload;
pub mod registry;
pub mod reply;
pub mod rooms;
pub mod session;
pub mod timers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde_json::{Map, Value};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::ConnectHandler;

use crate::auth::TokenKeys;
use crate::cluster::ClusterError;
use crate::cluster::call_state::ClaimedTimer;
use crate::domain::CallId;
use crate::error::ClientError;
use crate::http::client_ip::TrustedProxies;
use crate::jitsi::Jitsi;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::policy::CallPolicy;
use crate::store::Store;
use call_store::{CallStore, Effects, Scope};
use registry::{Outcome, Reason, Registry};

/// What every signaling handler shares (socketioxide state).
#[derive(Debug)]
pub struct Hub {
    /// The directory.
    pub store: Store,
    /// Token verification.
    pub keys: Arc<TokenKeys>,
    /// Rate limits and connection caps.
    pub limits: Arc<Limits>,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The Jitsi deployment and its room-token key (`None`: no domain set).
    pub jitsi: Option<Arc<Jitsi>>,
    /// Every live call: this process's registry, or the cluster's in Redis
    /// (see [`call_store`] and [`Hub::with_calls`]).
    calls: CallStore,
    /// The ring-timeout task of each ringing or recently answered call,
    /// aborted when the call ends: a call answered in a second must not
    /// keep a sleeping task (and its memory) for the rest of the ring time.
    ring_timers: Mutex<HashMap<CallId, tokio::task::AbortHandle>>,
    /// Cluster mode: the cluster-wide checks (liveness, presence and caps,
    /// rate limits). Unset in one process.
    cluster: OnceLock<crate::cluster::admission::Admission>,
}

impl Hub {
    /// A hub with an empty call registry under `policy`.
    pub fn new(
        store: Store,
        keys: Arc<TokenKeys>,
        limits: Arc<Limits>,
        trusted_proxies: TrustedProxies,
        metrics: Arc<Metrics>,
        policy: CallPolicy,
        jitsi: Option<Arc<Jitsi>>,
    ) -> Self {
        Self {
            store,
            keys,
            limits,
            trusted_proxies,
            metrics,
            jitsi,
            calls: CallStore::memory(policy),
            ring_timers: Mutex::new(HashMap::new()),
            cluster: OnceLock::new(),
        }
    }

    /// Cluster mode: installs the cluster-wide checks (once, at start-up,
    /// before the server accepts sockets).
    pub fn set_cluster(&self, admission: crate::cluster::admission::Admission) {
        let _ = self.cluster.set(admission);
    }

    /// The cluster-wide checks, in cluster mode.
    pub fn cluster(&self) -> Option<&crate::cluster::admission::Admission> {
        self.cluster.get()
    }

    /// The hub with `calls` as its call state (cluster mode:
    /// `CallStore::redis(redis, policy.calls)`), in place of the in-memory one.
    #[must_use]
    pub fn with_call_store(mut self, calls: CallStore) -> Self {
        self.calls = calls;
        self
    }

    /// The call state.
    pub fn calls(&self) -> &CallStore {
        &self.calls
    }

    /// Runs one call transition on the call state (see
    /// [`CallStore::run`]): in memory under the registry's lock, which `f`
    /// (synchronous) can never hold across an `.await`; in cluster mode as a
    /// compare-and-set commit in Redis, where `f` may run more than once.
    /// `scope` names what the transition is about (ignored in memory).
    ///
    /// # Errors
    /// Cluster mode only ([`ClusterError`], a client's `unavailable`):
    /// nothing changed.
    pub async fn with_calls<T: Effects>(
        &self,
        scope: Scope,
        f: impl Fn(&mut Registry) -> T,
    ) -> Result<T, ClusterError> {
        let done = self.calls.run(scope, f).await?;
        self.ended(done.ended);
        Ok(done.value)
    }

    /// [`Hub::with_calls`] behind `gate` (see [`CallStore::run_gated`]).
    ///
    /// # Errors
    /// [`call_store::GateError`]: nothing changed.
    pub async fn with_calls_gated<T: Effects>(
        &self,
        scope: Scope,
        gate: call_store::Gate,
        f: impl Fn(&mut Registry) -> T,
    ) -> Result<T, call_store::GateError> {
        let done = self.calls.run_gated(scope, gate, f).await?;
        self.ended(done.ended);
        Ok(done.value)
    }

    /// Fires a timer this node claimed (cluster mode; see [`timers`]).
    ///
    /// # Errors
    /// [`ClusterError`]: the timer fires again once its claim lapses.
    pub async fn fire_claimed(
        &self,
        timer: &ClaimedTimer,
        user_online: bool,
    ) -> Result<Outcome, ClusterError> {
        let done = self.calls.fire_claimed(timer, user_online).await?;
        self.ended(done.ended);
        Ok(done.value)
    }

    /// Counts ended calls; in memory, their ring-timeout tasks stop.
    fn ended(&self, ended: Vec<(CallId, Reason)>) {
        if ended.is_empty() {
            return;
        }
        let mut timers = self.ring_timers();
        for (id, reason) in ended {
            self.metrics.call_ended(reason.as_str());
            if let Some(timer) = timers.remove(&id) {
                timer.abort();
            }
        }
    }

    fn ring_timers(&self) -> std::sync::MutexGuard<'_, HashMap<CallId, tokio::task::AbortHandle>> {
        self.ring_timers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `call`'s ring-timeout task, to abort when the call ends first.
    pub(crate) fn track_ring_timer(&self, call: CallId, task: tokio::task::AbortHandle) {
        self.ring_timers().insert(call, task);
    }

    /// The ring timer of `call` fired: it is no longer abortable.
    pub(crate) fn ring_timer_fired(&self, call: CallId) {
        self.ring_timers().remove(&call);
    }

    /// Ring-timeout tasks still pending (each call that has not ended and
    /// has not rung out holds one).
    pub fn pending_ring_timers(&self) -> usize {
        self.ring_timers().len()
    }
}

/// Tells every connected socket the server is going away
/// (`serverShutdown`), then closes them all.
pub async fn shutdown<A: Adapter>(io: &SocketIo<A>) {
    let notice = serde_json::json!({ "code": "server_shutdown", "message": "the server is restarting; reconnect shortly" });
    let Some(ns) = rooms::namespace(io) else {
        return;
    };
    // This node's sockets only: in cluster mode a plain emit reaches every node.
    if let Err(e) = ns.local().emit(events::SERVER_SHUTDOWN, &notice).await {
        tracing::debug!(error = %e, "shutdown notice not delivered to every socket");
    }
    io.close().await;
}

impl Hub {
    /// Installs a new policy: fresh rate-limit buckets, new connection caps
    /// and call rules (live calls keep their timers; new ones use the new
    /// values). Connection counts and live calls are kept.
    pub fn apply_policy(&self, policy: &crate::policy::Policy) {
        self.limits.replace(&policy.rate_limits, policy.connections);
        self.limits.set_groups(policy.groups);
        self.calls.set_policy(policy.calls.clone());
    }
}

/// Registers the default namespace with its handshake middleware.
pub fn attach(io: &SocketIo) {
    io.ns("/", on_connect.with(session::authenticate));
}

/// [`attach`] on a cluster node: the Redis adapter subscribes to its channels
/// before the namespace serves anyone.
///
/// # Errors
/// Redis refused the subscriptions.
pub async fn attach_cluster(
    io: &SocketIo<crate::cluster::ClusterAdapter>,
) -> Result<(), crate::cluster::ClusterError> {
    io.ns("/", on_connect.with(session::authenticate))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "the cluster adapter could not subscribe");
            crate::cluster::ClusterError::Unavailable
        })
}

/// Runs after the handshake was accepted and CONNECT was sent. Handlers are
/// already registered by then (see [`session`]).
async fn on_connect<A: Adapter>(
    socket: SocketRef<A>,
    socketioxide::extract::State(hub): socketioxide::extract::State<Arc<Hub>>,
) {
    if let Ok(s) = session::current(&socket) {
        tracing::debug!(user_id = %s.user_id, "socket connected");
    }
    calls::on_connected(&socket, &hub).await;
}

/// Registers every event handler on a socket that passed the handshake.
pub(crate) fn register_handlers<A: Adapter>(socket: &SocketRef<A>) {
    socket.on(events::USER_ONLINE, rooms::user_online::<A>);
    socket.on(events::JOIN_VIDEO_ROOM, rooms::join_video_room::<A>);
    socket.on(events::JOIN_GROUP, rooms::join_group_event::<A>);
    socket.on(events::LEAVE_GROUP, rooms::leave_group_event::<A>);
    socket.on(events::GROUP_CREATED, rooms::group_created::<A>);
    socket.on(events::INITIATE_VIDEO_CALL, calls::initiate_video_call::<A>);
    socket.on(
        events::INITIATE_GROUP_VIDEO_CALL,
        calls::initiate_group_video_call::<A>,
    );
    socket.on(events::ACCEPT_VIDEO_CALL, calls::accept_video_call::<A>);
    socket.on(events::REJECT_VIDEO_CALL, calls::reject_video_call::<A>);
    socket.on(events::END_VIDEO_CALL, calls::end_video_call::<A>);
    socket.on(events::REFRESH_JITSI_TOKEN, calls::refresh_jitsi_token::<A>);
    socket.on_disconnect(calls::on_disconnect::<A>);
    socket.on_fallback(unknown_event::<A>);
}

/// Any other event: `bad_request` by ack and `error` event, so a client that
/// waits for an ack is not left hanging.
async fn unknown_event<A: Adapter>(
    socket: SocketRef<A>,
    ack: AckSender<A>,
    socketioxide::extract::State(hub): socketioxide::extract::State<Arc<Hub>>,
) {
    let error = ClientError::bad_field("event", "is not one callgate handles");
    reply::fail(
        &hub.metrics,
        &socket,
        ack,
        "unknown",
        reply::Channel::General,
        &error,
        Map::<String, Value>::new(),
    );
}
