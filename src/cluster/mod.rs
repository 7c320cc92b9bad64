//! Cluster mode: several callgate nodes sharing one Redis.
//!
//! This module owns the connection to Redis ([`Redis`]): the command client
//! every cluster component uses (call state, timers, node leases, presence,
//! limits) and the subscriber client socketioxide's adapter delivers events
//! through. Both reconnect by themselves with a capped exponential back-off,
//! and the subscriber resubscribes its channels after a reconnect, so a Redis
//! restart never leaves a node deaf. Every command is bounded by
//! `cluster.redis_timeout_ms`: while Redis is unreachable, callers get
//! [`ClusterError::Unavailable`] within that bound, never a hang.
//!
//! Keys are `{key_prefix}:{…}` ([`Redis::key`]); which component owns which
//! keys is listed in the README ("Running several nodes", "Redis").

pub mod admission;
pub mod call_state;
pub mod nodes;
pub mod presence;
pub mod rates;
pub mod relay;
mod script;

use std::fmt;
use std::time::Duration;

use fred::prelude::{Builder, ClientLike, Config as FredConfig, ReconnectPolicy};
use fred::types::RespVersion;
use fred::types::config::ServerConfig;
use secrecy::ExposeSecret;

use crate::config::ClusterConfig;
use crate::error::{ClientError, ErrorCode};

/// The Socket.IO adapter of a cluster node: socketioxide's Redis adapter on
/// the fred driver.
pub type ClusterAdapter = socketioxide_redis::FredAdapter<socketioxide::adapter::Emitter>;

/// Why a cluster operation did not happen. Nothing was changed in either case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// Redis did not answer within `cluster.redis_timeout_ms`, or failed.
    #[error("redis unavailable")]
    Unavailable,
    /// This node lost its liveness lease: other nodes may already have taken
    /// over its sockets, so it must not act on call state until it has
    /// re-registered.
    #[error("node fenced: liveness lease lost")]
    Fenced,
}

impl From<ClusterError> for ClientError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Unavailable => ClientError::with_message(
                ErrorCode::Unavailable,
                "the call service is briefly unavailable; try again",
            ),
            ClusterError::Fenced => ClientError::with_message(
                ErrorCode::Unavailable,
                "this server is rejoining the cluster; reconnect or try again",
            ),
        }
    }
}

impl From<fred::error::Error> for ClusterError {
    fn from(_: fred::error::Error) -> Self {
        // Deliberately dropped: a fred error can quote the URL it failed on.
        ClusterError::Unavailable
    }
}

/// Why start-up could not reach Redis (never quotes the URL: it may hold a password).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL did not parse.
    #[error("cluster.redis_url is not a valid Redis URL")]
    BadUrl,
    /// Redis did not answer at start-up.
    #[error("Redis at {0} did not answer: {1}")]
    Unreachable(String, String),
}

/// The shared handle to Redis. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    client: fred::clients::Client,
    prefix: String,
    node: String,
    timeout: Duration,
    /// Redis's clock less this node's, in ms ([`Redis::sync_clock`]).
    clock_offset: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No URL: it may hold a password.
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Now, in Unix ms on this node's clock.
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Where a URL points, for messages: host and port only, never credentials.
fn describe(config: &FredConfig) -> String {
    match &config.server {
        ServerConfig::Centralized { server } => format!("{}:{}", server.host, server.port),
        _ => "the configured servers".into(),
    }
}

/// Slots of fred's broadcast channels, the one pub/sub messages reach the
/// adapter through among them. fred's default, 32, is a few milliseconds of
/// cross-node traffic at 1 000 calls/s: a node busy for that long dropped
/// events (calls that never rang, seen in the benchmark). 1 024 holds about
/// 200 ms of that traffic. fred allocates every slot of its 8 channels up
/// front, about 2.5 MiB per client at this size (4 096 cost 10 MiB).
const PUBSUB_CAPACITY: usize = 1024;

fn builder(cfg: &ClusterConfig) -> Result<(Builder, String), ConnectError> {
    let url = cfg.redis_url.expose_secret().trim();
    let mut config = FredConfig::from_url(url).map_err(|_| ConnectError::BadUrl)?;
    // The adapter's driver needs RESP3 (Redis 7+); fred does not read it from the URL.
    config.version = RespVersion::RESP3;
    // Start-up reports an unreachable Redis at once instead of retrying for ever.
    config.fail_fast = true;
    let where_ = describe(&config);
    let timeout = Duration::from_millis(cfg.redis_timeout_ms);
    let mut b = Builder::from_config(config);
    b.with_performance_config(|p| {
        p.default_command_timeout = timeout;
        // fred hands pub/sub messages to the adapter through a broadcast
        // channel and drops the oldest when its reader falls behind: each
        // drop is an event lost across nodes. See [`PUBSUB_CAPACITY`].
        p.broadcast_channel_capacity = PUBSUB_CAPACITY;
    })
    .with_connection_config(|c| {
        c.connection_timeout = timeout.max(Duration::from_millis(500));
        c.internal_command_timeout = timeout.max(Duration::from_millis(500));
        // A command sent while Redis is down fails once its timeout passes; it is
        // not replayed after a reconnect (nothing is applied late, behind a
        // client's back).
        c.max_command_attempts = 1;
        // Commands queued while reconnecting are bounded too.
        c.max_command_buffer_len = 10_000;
        // Every command is small and waits for its answer: Nagle's algorithm
        // would hold one behind another's unacknowledged segment.
        c.tcp.nodelay = Some(true);
    })
    // Reconnect for ever: 50 ms doubling to 1 s.
    .set_policy(ReconnectPolicy::new_exponential(0, 50, 1000, 2));
    Ok((b, where_))
}

impl Redis {
    /// Connects the command client (fails fast when Redis does not answer).
    ///
    /// # Errors
    /// [`ConnectError`], which never quotes the URL.
    pub async fn connect(cfg: &ClusterConfig, node: String) -> Result<Self, ConnectError> {
        let (b, where_) = builder(cfg)?;
        let client = b.build().map_err(|_| ConnectError::BadUrl)?;
        client
            .init()
            .await
            .map_err(|e| ConnectError::Unreachable(where_.clone(), e.kind().to_str().into()))?;
        let redis = Self {
            client,
            prefix: cfg.key_prefix.clone(),
            node,
            timeout: Duration::from_millis(cfg.redis_timeout_ms),
            clock_offset: std::sync::Arc::default(),
        };
        redis.sync_clock().await;
        Ok(redis)
    }

    /// Measures Redis's clock against this node's (`TIME`, halfway through
    /// the round trip), for [`Redis::deadline_ms`]. Run at start and on
    /// every heartbeat; an unanswered one keeps the last offset, and so does
    /// one whose round trip took over a quarter of the command timeout (its
    /// error, up to half the round trip, would eat the deadline's margin).
    pub async fn sync_clock(&self) {
        let before = unix_ms();
        let time = fred::types::CustomCommand::new_static(
            "TIME",
            fred::types::ClusterHash::FirstKey,
            false,
        );
        let time: Result<Vec<String>, _> = self.client.custom(time, Vec::<String>::new()).await;
        let after = unix_ms();
        let slow = i64::try_from((self.timeout / 4).as_millis()).unwrap_or(i64::MAX);
        let Ok([secs, micros]) = time.as_deref() else {
            return;
        };
        if after - before > slow {
            return;
        }
        let (Ok(secs), Ok(micros)) = (secs.parse::<i64>(), micros.parse::<i64>()) else {
            return;
        };
        let redis_ms = secs * 1000 + micros / 1000;
        let offset = redis_ms - (before + after) / 2;
        self.clock_offset
            .store(offset, std::sync::atomic::Ordering::Relaxed);
    }

    /// A deadline on Redis's clock (Unix ms) for a command sent now: three
    /// quarters of the command timeout from now. A commit that Redis only
    /// runs after it (held up while this node gave up waiting) is refused
    /// by the script itself, so it never applies behind the node's back.
    pub fn deadline_ms(&self) -> i64 {
        let margin = i64::try_from((self.timeout * 3 / 4).as_millis()).unwrap_or(i64::MAX);
        unix_ms()
            .saturating_add(self.clock_offset.load(std::sync::atomic::Ordering::Relaxed))
            .saturating_add(margin)
    }

    /// A subscriber client for the adapter. Once the adapter has
    /// subscribed, start [`resubscribe_on_reconnect`] on it.
    ///
    /// # Errors
    /// [`ConnectError`], which never quotes the URL.
    pub fn subscriber(
        cfg: &ClusterConfig,
    ) -> Result<fred::clients::SubscriberClient, ConnectError> {
        let (b, _) = builder(cfg)?;
        let sub = b
            .build_subscriber_client()
            .map_err(|_| ConnectError::BadUrl)?;
        Ok(sub)
    }

    /// The command client.
    pub fn client(&self) -> &fred::clients::Client {
        &self.client
    }

    /// `{prefix}:{rest}`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The bound on each command.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether Redis answers a PING within the command timeout.
    pub async fn ping(&self) -> bool {
        let ping: Result<String, _> = self.client.ping(None).await;
        ping.is_ok()
    }
}

/// After every reconnect of `sub`, subscribes again to the shard channels it
/// tracks (the adapter's), so a Redis restart never leaves a node deaf.
///
/// fred's own `manage_subscriptions` is not used: its `resubscribe_all`
/// sends `SUBSCRIBE` with the (empty) list of plain channels first, Redis
/// refuses a bare SUBSCRIBE, and it gives up before the shard channels the
/// adapter uses (seen with fred 10.1: after a Redis restart, events stopped
/// crossing nodes). Each channel is resubscribed on its own, and a failure
/// is retried at the next reconnect, or after a second.
///
/// `subscribed` is false from the moment the subscriber is seen disconnected
/// (checked every 100 ms, and at every reconnect) until every channel is
/// subscribed again: a node that would not hear the other nodes is not ready
/// ([`Subscribed::is_ready`]) and refuses sockets.
pub fn resubscribe_on_reconnect(sub: fred::clients::SubscriberClient, subscribed: Subscribed) {
    use fred::interfaces::{EventInterface, PubsubInterface};
    {
        let sub = sub.clone();
        let subscribed = subscribed.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if !sub.is_connected() {
                    subscribed.set(false);
                }
            }
        });
    }
    tokio::spawn(async move {
        let mut reconnects = sub.reconnect_rx();
        loop {
            match reconnects.recv().await {
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
            subscribed.set(false);
            let mut attempt = 0u32;
            loop {
                let channels = sub.tracked_shard_channels();
                let mut failed = 0usize;
                for channel in &channels {
                    if sub.ssubscribe(channel.to_string()).await.is_err() {
                        failed += 1;
                    }
                }
                if failed == 0 && sub.is_connected() {
                    subscribed.set(true);
                    tracing::info!(
                        channels = channels.len(),
                        "Redis reconnected: adapter channels subscribed again"
                    );
                    break;
                }
                attempt += 1;
                tracing::warn!(
                    failed,
                    attempt,
                    "Redis reconnected but some adapter channels could not be subscribed; retrying"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
}

/// Whether this node's adapter is subscribed to the other nodes' channels
/// (false while its subscriber reconnects). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Subscribed(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Subscribed {
    /// Subscribed (the adapter subscribes before the node serves).
    pub fn new() -> Self {
        Self(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
            true,
        )))
    }

    /// Whether events from other nodes reach this one.
    pub fn is_ready(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set(&self, ready: bool) {
        let was = self.0.swap(ready, std::sync::atomic::Ordering::AcqRel);
        if was && !ready {
            tracing::warn!("Redis subscriber disconnected: not ready until it has resubscribed");
        }
    }
}

impl Default for Subscribed {
    fn default() -> Self {
        Self::new()
    }
}
