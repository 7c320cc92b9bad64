//! Node liveness: leases, heartbeats, fencing and dead-node cleanup.
//!
//! Each node holds a lease, `p:node:{id}` = a random token with a TTL of
//! `cluster.node_timeout_ms`, renewed every `cluster.heartbeat_ms`, and is a
//! member of `p:nodes`. The sockets it holds are listed in
//! `p:node:{id}:users` (a hash `"{ip key} {user}"` -> sockets; see
//! [`super::presence`]).
//!
//! **Fencing.** A node that cannot renew its lease within `node_timeout`
//! (counted from when it *sent* its last successful renewal, so never later
//! than Redis expires it), or finds it gone or holding another token, is
//! fenced: [`Nodes::is_fenced`] answers true (every cluster check then
//! answers `unavailable`, and part A's commits, which require the lease key
//! to exist, are refused by Redis itself), it disconnects its local sockets
//! ([`Hooks::disconnect_local`]) so their clients reconnect to a live node,
//! then cleans up what it still holds, takes a fresh lease (a new token) and
//! serves again.
//!
//! **Dead nodes.** On every heartbeat each live node looks for members of
//! `p:nodes` whose lease is gone and claims each one's cleanup with
//! `SET p:node:{dead}:claim NX PX node_timeout` (exactly one claimer; a
//! claimer that dies lets the claim expire and another node takes over). The
//! claimer removes the dead node's field from `p:conn:user:{id}` and
//! `p:conn:ip:{key}` for every entry of `p:node:{dead}:users`, in batches,
//! and reports each user left with no socket anywhere through
//! [`Hooks::user_offline`]. A node cannot re-register while it is being
//! cleaned (the register script refuses while a claim exists or its users
//! hash is not empty), so a cleanup never removes a newer incarnation's
//! counts. A dead node is accounted for within `node_timeout` + one heartbeat
//! (+ the cleanup's few round trips).
//!
//! **Shutdown.** [`Nodes::shutdown`] cleans up this node's own entries while
//! its lease still holds (so the offline transitions can commit), then
//! deletes its lease and leaves `p:nodes`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use fred::types::Value;
use futures_util::future::BoxFuture;

use super::script::Script;
use super::{ClusterError, Redis};
use crate::config::ClusterConfig;
use crate::domain::UserId;

/// What the node does when the cluster tells it to (wired by the app).
pub trait Hooks: Send + Sync + 'static {
    /// This node was fenced: close every local socket, so the clients
    /// reconnect to a live node.
    fn disconnect_local(&self) -> BoxFuture<'static, ()>;
    /// `user` has no socket left anywhere in the cluster (after a socket's
    /// release or a dead node's cleanup). At least once: it can come twice
    /// for one departure (a release and a cleanup racing), so it must be
    /// idempotent, as the call store's "went offline" transition is.
    fn user_offline(&self, user: UserId) -> BoxFuture<'static, ()>;
}

/// Lease timing, from `[cluster]`.
#[derive(Debug, Clone, Copy)]
pub struct NodeTimes {
    /// Lease renewal period (`heartbeat_ms`).
    pub heartbeat: Duration,
    /// Lease TTL (`node_timeout_ms`).
    pub node_timeout: Duration,
}

impl From<&ClusterConfig> for NodeTimes {
    fn from(c: &ClusterConfig) -> Self {
        Self {
            heartbeat: Duration::from_millis(c.heartbeat_ms),
            node_timeout: Duration::from_millis(c.node_timeout_ms),
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Redis did not answer.
    #[error("Redis did not answer while registering this node")]
    Unavailable,
    /// A live lease holds this node id: another process runs with the same
    /// `cluster.node_id`.
    #[error(
        "another live node holds the lease of node id {0}: give each node its own cluster.node_id"
    )]
    NodeIdInUse(String),
}

/// Entries of a dead node's users hash handled per cleanup script run.
const CLEAN_BATCH: u32 = 256;

/// Registers a lease. KEYS: lease, claim, users, nodes. ARGV: token, ttl, node, retire.
/// `retire` (may be empty) is a token of this node's own previous lease,
/// which may be replaced.
static REGISTER: Script = Script::new(
    r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 'claimed' end
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and cur ~= ARGV[4] then return 'held' end
if redis.call('EXISTS', KEYS[3]) == 1 then return 'dirty' end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
return 'ok'
",
);

/// Renews a lease. KEYS: lease, nodes. ARGV: token, ttl, node. 1 renewed, 0 lost.
static RENEW: Script = Script::new(
    r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
",
);

/// Claims the cleanup of every dead member of `p:nodes` (lease gone, no live
/// claim). KEYS: nodes. ARGV: prefix, self, claim token, ttl. Returns the
/// claimed node ids.
static CLAIM_DEAD: Script = Script::new(
    r"
local claimed = {}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if n ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. ':node:' .. n) == 0 then
    if redis.call('SET', ARGV[1] .. ':node:' .. n .. ':claim', ARGV[3], 'NX', 'PX', ARGV[4]) then
      table.insert(claimed, n)
    end
  end
end
return claimed
",
);

/// Claims this node's own cleanup. KEYS: lease, claim. ARGV: claim token,
/// ttl, this node's token, mode. Mode `own`: the lease must hold the token
/// (kept: a graceful shutdown still commits). Mode `retire`: the lease must
/// be gone or hold the token (then it is deleted: the node was fenced).
static CLAIM_SELF: Script = Script::new(
    r"
local cur = redis.call('GET', KEYS[1])
if ARGV[4] == 'own' then
  if cur ~= ARGV[3] then return 0 end
else
  if cur then
    if cur ~= ARGV[3] then return 0 end
    redis.call('DEL', KEYS[1])
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
",
);

/// One cleanup batch of a claimed node. KEYS: claim, users, nodes. ARGV:
/// claim token, prefix, node, batch, ttl. Returns `{-1}` when the claim was
/// lost, else `{done, offline users...}`; when done, the node has left
/// `p:nodes` and the claim is deleted.
static CLEAN: Script = Script::new(
    r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local out = {0}
local seen = {}
local cursor = '0'
local n = 0
local batch = tonumber(ARGV[4])
repeat
  local r = redis.call('HSCAN', KEYS[2], cursor, 'COUNT', batch)
  cursor = r[1]
  local items = r[2]
  for i = 1, #items, 2 do
    local pair = items[i]
    local sp = string.find(pair, ' ', 1, true)
    if sp then
      local ip = string.sub(pair, 1, sp - 1)
      local user = string.sub(pair, sp + 1)
      local uk = ARGV[2] .. ':conn:user:' .. user
      redis.call('HDEL', uk, ARGV[3])
      redis.call('HDEL', ARGV[2] .. ':conn:ip:' .. ip, ARGV[3])
      if redis.call('HLEN', uk) == 0 and not seen[user] then
        seen[user] = true
        table.insert(out, user)
      end
    end
    redis.call('HDEL', KEYS[2], pair)
    n = n + 1
  end
until cursor == '0' or n >= batch
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[3])
  redis.call('DEL', KEYS[1])
  out[1] = 1
end
return out
",
);

/// Deletes the lease if it holds the token, and leaves `p:nodes`.
/// KEYS: lease, nodes. ARGV: token, node.
static RESIGN: Script = Script::new(
    r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
",
);

#[derive(Debug)]
struct Lease {
    token: String,
    /// When the lease may have expired in Redis: the send time of the last
    /// successful renewal plus `node_timeout`.
    deadline: Instant,
}

/// This node's liveness in the cluster. See the module docs.
pub struct Nodes {
    redis: Redis,
    times: NodeTimes,
    lease: Mutex<Lease>,
    fenced: AtomicBool,
    sweeping: AtomicBool,
    stopping: AtomicBool,
    hooks: OnceLock<Arc<dyn Hooks>>,
    /// Users found offline by a cleanup, not yet reported (reported once
    /// hooks are set and the node holds a lease, so the offline transitions
    /// can commit).
    pending: Mutex<Vec<UserId>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodes")
            .field("node", &self.redis.node())
            .field("fenced", &self.is_fenced())
            .finish_non_exhaustive()
    }
}

fn fresh_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn millis(d: Duration) -> Value {
    Value::from(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn text(s: &str) -> Value {
    Value::from(s)
}

/// What a cleanup achieved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cleaned {
    /// Whether the node's entries are all gone (else the claim was lost).
    pub done: bool,
    /// Users left with no socket anywhere.
    pub offline: Vec<UserId>,
}

impl Nodes {
    /// Registers this node (waiting, at most about two node timeouts, for a
    /// previous incarnation's lease of the same id to expire and be cleaned
    /// up), then heartbeats and sweeps in the background until
    /// [`Nodes::shutdown`].
    ///
    /// # Errors
    /// [`StartError`].
    pub async fn start(redis: Redis, times: NodeTimes) -> Result<Arc<Self>, StartError> {
        let nodes = Arc::new(Self {
            redis,
            times,
            lease: Mutex::new(Lease {
                token: fresh_token(),
                deadline: Instant::now(),
            }),
            fenced: AtomicBool::new(true),
            sweeping: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            hooks: OnceLock::new(),
            pending: Mutex::new(Vec::new()),
            task: Mutex::new(None),
        });
        let give_up = Instant::now() + 2 * times.node_timeout + 2 * times.heartbeat;
        loop {
            match nodes.rejoin().await {
                Ok(Joined::Yes) => break,
                Ok(Joined::Held) if Instant::now() >= give_up => {
                    return Err(StartError::NodeIdInUse(nodes.redis.node().to_owned()));
                }
                Err(_) if Instant::now() >= give_up => return Err(StartError::Unavailable),
                Ok(_) | Err(_) => tokio::time::sleep(times.heartbeat).await,
            }
        }
        let task = tokio::spawn(heartbeat(Arc::downgrade(&nodes), times.heartbeat));
        *nodes.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
        Ok(nodes)
    }

    /// Installs the hooks. Until then, no dead node is swept (its offline
    /// users would have nowhere to go).
    pub fn set_hooks(&self, hooks: Arc<dyn Hooks>) {
        let _ = self.hooks.set(hooks);
    }

    pub(crate) fn hooks(&self) -> Option<&Arc<dyn Hooks>> {
        self.hooks.get()
    }

    /// The Redis handle.
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// Whether this node must not act on cluster state: its lease is lost or
    /// may have expired. Answers from memory, with no Redis round trip.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire) || Instant::now() >= self.lease().deadline
    }

    /// The current lease token, unless fenced. Presence entries are written
    /// under it, so a release from a previous incarnation changes nothing.
    pub fn token(&self) -> Option<String> {
        if self.is_fenced() {
            return None;
        }
        Some(self.lease().token.clone())
    }

    /// The current token, fenced or not.
    pub(crate) fn current_token(&self) -> String {
        self.lease().token.clone()
    }

    fn lease(&self) -> std::sync::MutexGuard<'_, Lease> {
        self.lease.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `p:node:{id}`: the lease key of a node.
    pub fn lease_key(&self, node: &str) -> String {
        self.redis.key(&format!("node:{node}"))
    }

    /// `p:node:{id}:users`: the socket entries of a node.
    pub fn users_key(&self, node: &str) -> String {
        self.redis.key(&format!("node:{node}:users"))
    }

    fn claim_key(&self, node: &str) -> String {
        self.redis.key(&format!("node:{node}:claim"))
    }

    fn nodes_key(&self) -> String {
        self.redis.key("nodes")
    }

    fn ttl(&self) -> Value {
        millis(self.times.node_timeout)
    }

    /// One renewal. `Ok(false)`: the lease is gone or holds another token.
    async fn renew(&self) -> Result<bool, ClusterError> {
        let token = self.current_token();
        let me = self.redis.node().to_owned();
        let sent = Instant::now();
        let renewed: i64 = RENEW
            .run(
                &self.redis,
                vec![self.lease_key(&me), self.nodes_key()],
                vec![text(&token), self.ttl(), text(&me)],
            )
            .await?;
        if renewed != 1 {
            return Ok(false);
        }
        let mut lease = self.lease();
        if lease.token == token {
            lease.deadline = sent + self.times.node_timeout;
        }
        Ok(true)
    }

    /// Marks the node fenced and disconnects its local sockets (once per fence).
    async fn fence(&self, why: &'static str) {
        if self.fenced.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            node = self.redis.node(),
            why,
            "node fenced: disconnecting local sockets, then rejoining"
        );
        if let Some(hooks) = self.hooks() {
            hooks.disconnect_local().await;
        }
    }

    /// Cleans up what this node still holds and takes a fresh lease.
    async fn rejoin(&self) -> Result<Joined, ClusterError> {
        let me = self.redis.node().to_owned();
        let old = self.current_token();
        let claim = fresh_token();
        let claimed: i64 = CLAIM_SELF
            .run(
                &self.redis,
                vec![self.lease_key(&me), self.claim_key(&me)],
                vec![text(&claim), self.ttl(), text(&old), text("retire")],
            )
            .await?;
        if claimed == 1 {
            let cleaned = self.clean(&me, &claim).await?;
            self.defer(cleaned.offline);
            if !cleaned.done {
                return Ok(Joined::Busy);
            }
        }
        let token = fresh_token();
        let sent = Instant::now();
        let answer: String = REGISTER
            .run(
                &self.redis,
                vec![
                    self.lease_key(&me),
                    self.claim_key(&me),
                    self.users_key(&me),
                    self.nodes_key(),
                ],
                vec![text(&token), self.ttl(), text(&me), text(&old)],
            )
            .await?;
        match answer.as_str() {
            "ok" => {
                *self.lease() = Lease {
                    token,
                    deadline: sent + self.times.node_timeout,
                };
                self.fenced.store(false, Ordering::Release);
                tracing::info!(node = %me, "node registered: lease held");
                Ok(Joined::Yes)
            }
            "held" => {
                tracing::warn!(node = %me, "node id held by another live lease: waiting for it to expire");
                Ok(Joined::Held)
            }
            _ => Ok(Joined::Busy),
        }
    }

    /// Runs the cleanup of `node` under the claim `claim` until done or lost.
    async fn clean(&self, node: &str, claim: &str) -> Result<Cleaned, ClusterError> {
        let mut offline = Vec::new();
        let mut seen = HashSet::new();
        loop {
            let out: Vec<Value> = CLEAN
                .run(
                    &self.redis,
                    vec![self.claim_key(node), self.users_key(node), self.nodes_key()],
                    vec![
                        text(claim),
                        text(self.redis.prefix()),
                        text(node),
                        Value::from(i64::from(CLEAN_BATCH)),
                        self.ttl(),
                    ],
                )
                .await?;
            let mut out = out.into_iter();
            let status = out.next().and_then(|v| v.as_i64()).unwrap_or(-1);
            for user in out {
                if let Some(user) = user.as_string().and_then(|u| UserId::parse(&u).ok())
                    && seen.insert(user.clone())
                {
                    offline.push(user);
                }
            }
            match status {
                1 => {
                    return Ok(Cleaned {
                        done: true,
                        offline,
                    });
                }
                0 => continue,
                _ => {
                    tracing::warn!(
                        node,
                        "cleanup claim lost (expired): another node takes over"
                    );
                    return Ok(Cleaned {
                        done: false,
                        offline,
                    });
                }
            }
        }
    }

    fn defer(&self, users: Vec<UserId>) {
        if !users.is_empty() {
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(users);
        }
    }

    /// Reports the users found offline, once hooks are set and the lease holds.
    async fn flush(&self) {
        if self.is_fenced() {
            return;
        }
        let Some(hooks) = self.hooks().cloned() else {
            return;
        };
        let users =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        let mut tasks = tokio::task::JoinSet::new();
        for user in users {
            tasks.spawn(hooks.user_offline(user));
        }
        while tasks.join_next().await.is_some() {}
    }

    /// One sweep: claims every dead node's cleanup and runs it. Returns the
    /// nodes cleaned up completely.
    ///
    /// # Errors
    /// [`ClusterError`]: nothing was claimed, or a claim is left to expire.
    pub async fn sweep(&self) -> Result<Vec<String>, ClusterError> {
        if self.is_fenced() {
            return Err(ClusterError::Fenced);
        }
        let claim = format!("{}:{}", self.redis.node(), fresh_token());
        let claimed: Vec<String> = CLAIM_DEAD
            .run(
                &self.redis,
                vec![self.nodes_key()],
                vec![
                    text(self.redis.prefix()),
                    text(self.redis.node()),
                    text(&claim),
                    self.ttl(),
                ],
            )
            .await?;
        let mut cleaned = Vec::new();
        for node in claimed {
            let result = self.clean(&node, &claim).await?;
            tracing::info!(dead = %node, offline = result.offline.len(), done = result.done, "dead node cleaned up");
            self.defer(result.offline);
            self.flush().await;
            if result.done {
                cleaned.push(node);
            }
        }
        Ok(cleaned)
    }

    /// One heartbeat: renews the lease (fencing on loss), rejoins when
    /// fenced, sweeps dead nodes when healthy (in the background, so a long
    /// cleanup never delays the next renewal).
    async fn beat(self: &Arc<Self>) {
        if self.stopping.load(Ordering::Acquire) {
            // Shutting down: keep the lease while the cleanup's offline
            // transitions commit, nothing else.
            if !self.fenced.load(Ordering::Acquire) {
                let _ = self.renew().await;
            }
            return;
        }
        if !self.fenced.load(Ordering::Acquire) {
            match self.renew().await {
                Ok(true) => {}
                Ok(false) => self.fence("lease lost").await,
                Err(_) if Instant::now() >= self.lease().deadline => {
                    self.fence("lease not renewed within node_timeout").await;
                }
                Err(_) => {}
            }
        }
        // After the renewal, which a slow clock sample must not delay.
        self.redis.sync_clock().await;
        if self.fenced.load(Ordering::Acquire) {
            match self.rejoin().await {
                Ok(Joined::Yes) => {}
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "rejoin failed: retrying next heartbeat");
                    return;
                }
            }
        }
        self.flush().await;
        if self.hooks().is_some() && !self.sweeping.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.sweep().await {
                    tracing::debug!(error = %e, "sweep failed: retrying next heartbeat");
                }
                me.sweeping.store(false, Ordering::Release);
            });
        }
    }

    /// Aborts the heartbeat-and-sweep task, if it runs.
    fn stop_task(&self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    /// Stops heartbeating and sweeping at once, cleaning up nothing: what a
    /// crash (kill -9) leaves behind. The lease expires by itself and
    /// another node cleans up. For tests and for a node that must stop
    /// acting now.
    pub fn halt(&self) {
        self.stopping.store(true, Ordering::Release);
        self.fenced.store(true, Ordering::Release);
        self.stop_task();
    }

    /// Graceful shutdown: cleans up this node's entries (reporting offline
    /// users while the lease still holds), deletes the lease and leaves
    /// `p:nodes`. Best effort: when Redis does not answer, the lease expires
    /// and another node cleans up.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        let me = self.redis.node().to_owned();
        let token = self.current_token();
        let claim = fresh_token();
        let claimed: Result<i64, _> = CLAIM_SELF
            .run(
                &self.redis,
                vec![self.lease_key(&me), self.claim_key(&me)],
                vec![text(&claim), self.ttl(), text(&token), text("own")],
            )
            .await;
        if claimed == Ok(1) {
            match self.clean(&me, &claim).await {
                Ok(cleaned) => {
                    self.defer(cleaned.offline);
                    self.flush().await;
                }
                Err(e) => tracing::warn!(error = %e, "shutdown cleanup failed: another node will"),
            }
        }
        self.fenced.store(true, Ordering::Release);
        self.stop_task();
        let resigned: Result<i64, _> = RESIGN
            .run(
                &self.redis,
                vec![self.lease_key(&me), self.nodes_key()],
                vec![text(&token), text(&me)],
            )
            .await;
        match resigned {
            Ok(_) => tracing::info!(node = %me, "node left the cluster"),
            Err(e) => {
                tracing::warn!(error = %e, "could not delete the lease: it expires by itself")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Joined {
    Yes,
    /// Another live lease holds the id.
    Held,
    /// A cleanup of this node is under way.
    Busy,
}

async fn heartbeat(nodes: std::sync::Weak<Nodes>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(nodes) = nodes.upgrade() else {
            break;
        };
        nodes.beat().await;
    }
}
