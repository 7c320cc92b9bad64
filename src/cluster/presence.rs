//! Cluster-wide presence and connection caps.
//!
//! `p:conn:user:{id}` and `p:conn:ip:{key}` are hashes node id -> sockets
//! there; `p:node:{id}:users` is a hash `"{ip key} {user}"` -> sockets, the
//! list a dead node's cleanup walks ([`super::nodes`]). Zero fields are
//! removed, so a hash exists only while it counts someone.
//!
//! Counts only include nodes whose lease is alive: the sockets of a node
//! that died a second ago no longer fill a user's cap (their clients are
//! reconnecting elsewhere right now) nor keep them "online", even before
//! the cleanup has run.
//!
//! Every entry is written under the node's current lease token: a release
//! that arrives after the node was fenced (its entries already cleaned up)
//! changes nothing, so it can never take a count of the node's next
//! incarnation.
//!
//! `connections.max_total` stays per node (it guards the process's file
//! descriptors); the local [`crate::limits::Connections`] caps still apply
//! first, exactly as in one process.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fred::types::Value;

use super::ClusterError;
use super::nodes::Nodes;
use super::script::Script;
use crate::domain::UserId;
use crate::limits::{CapExceeded, IpKey};
use crate::policy::ConnectionPolicy;

/// Lua: the sockets counted in hash `key` on nodes whose lease is alive
/// (`prefix`: the key prefix).
macro_rules! live_sum {
    () => {
        r"
local function live_sum(key, prefix)
  local t = redis.call('HGETALL', key)
  local s = 0
  for i = 1, #t, 2 do
    if redis.call('EXISTS', prefix .. ':node:' .. t[i]) == 1 then
      s = s + tonumber(t[i + 1])
    end
  end
  return s
end
"
    };
}
pub(crate) use live_sum;

/// KEYS: lease, user hash, ip hash, node users. ARGV: prefix, token, node,
/// max per user, max per ip, pair. -1 fenced, 1 user cap, 2 ip cap, 0 taken.
static ACQUIRE: Script = Script::new(concat!(
    live_sum!(),
    r"
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return -1 end
if live_sum(KEYS[2], ARGV[1]) >= tonumber(ARGV[4]) then return 1 end
if live_sum(KEYS[3], ARGV[1]) >= tonumber(ARGV[5]) then return 2 end
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
return 0
"
));

/// KEYS: lease, user hash, ip hash, node users. ARGV: prefix, token, node,
/// pair. -1: written under another lease (already cleaned up), else the
/// user's sockets left on live nodes.
static RELEASE: Script = Script::new(concat!(
    live_sum!(),
    r"
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return -1 end
local function dec(key, field)
  if redis.call('HINCRBY', key, field, -1) <= 0 then redis.call('HDEL', key, field) end
end
dec(KEYS[2], ARGV[3])
dec(KEYS[3], ARGV[3])
dec(KEYS[4], ARGV[4])
return live_sum(KEYS[2], ARGV[1])
"
));

/// KEYS: user hash. ARGV: prefix. The user's sockets on live nodes.
static ONLINE: Script = Script::new(concat!(live_sum!(), "return live_sum(KEYS[1], ARGV[1])\n"));

/// KEYS: user hashes. ARGV: prefix. Each user's sockets on live nodes.
static ONLINE_MANY: Script = Script::new(concat!(
    live_sum!(),
    r"
local out = {}
for i, key in ipairs(KEYS) do out[i] = live_sum(key, ARGV[1]) end
return out
"
));

/// Why a cluster-wide slot was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    /// A cap is full across the cluster.
    #[error("connection cap full: {}", .0.as_str())]
    Cap(CapExceeded),
    /// Redis is unavailable or this node is fenced.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Cluster-wide presence. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Presence {
    nodes: Arc<Nodes>,
}

fn text(s: &str) -> Value {
    Value::from(s)
}

fn count(n: usize) -> Value {
    Value::from(i64::try_from(n).unwrap_or(i64::MAX))
}

#[derive(Debug)]
struct Held {
    user: UserId,
    ip: IpKey,
    token: String,
}

/// A cluster-wide connection slot. [`PresenceSlot::release`] frees it (and
/// reports the user offline when it was their last socket anywhere);
/// dropping it unreleased releases it in the background.
#[derive(Debug)]
pub struct PresenceSlot {
    presence: Presence,
    held: Mutex<Option<Held>>,
}

impl Presence {
    /// Presence for this node.
    pub fn new(nodes: Arc<Nodes>) -> Self {
        Self { nodes }
    }

    fn keys(&self, user: &UserId, ip: IpKey) -> Vec<String> {
        let redis = self.nodes.redis();
        vec![
            self.nodes.lease_key(redis.node()),
            redis.key(&format!("conn:user:{user}")),
            redis.key(&format!("conn:ip:{ip}")),
            self.nodes.users_key(redis.node()),
        ]
    }

    /// Takes a slot for `user` from `ip` when the cluster-wide caps allow it
    /// (one round trip).
    ///
    /// # Errors
    /// [`AcquireError`]: nothing was counted.
    pub async fn acquire(
        &self,
        user: &UserId,
        ip: IpKey,
        caps: &ConnectionPolicy,
    ) -> Result<PresenceSlot, AcquireError> {
        let token = self.nodes.token().ok_or(ClusterError::Fenced)?;
        let redis = self.nodes.redis();
        let answer: i64 = ACQUIRE
            .run(
                redis,
                self.keys(user, ip),
                vec![
                    text(redis.prefix()),
                    text(&token),
                    text(redis.node()),
                    count(caps.max_per_user),
                    count(caps.max_per_ip),
                    text(&format!("{ip} {user}")),
                ],
            )
            .await?;
        match answer {
            0 => Ok(PresenceSlot {
                presence: self.clone(),
                held: Mutex::new(Some(Held {
                    user: user.clone(),
                    ip,
                    token,
                })),
            }),
            1 => Err(AcquireError::Cap(CapExceeded::PerUser)),
            2 => Err(AcquireError::Cap(CapExceeded::PerIp)),
            _ => Err(ClusterError::Fenced.into()),
        }
    }

    /// Whether `user` has a socket on any live node (one round trip).
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`].
    pub async fn online(&self, user: &UserId) -> Result<bool, ClusterError> {
        let redis = self.nodes.redis();
        let n: i64 = ONLINE
            .run(
                redis,
                vec![redis.key(&format!("conn:user:{user}"))],
                vec![text(redis.prefix())],
            )
            .await?;
        Ok(n > 0)
    }

    /// Whether each of `users` has a socket on any live node (one round trip).
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`].
    pub async fn online_many(&self, users: &[UserId]) -> Result<Vec<bool>, ClusterError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let redis = self.nodes.redis();
        let keys = users
            .iter()
            .map(|u| redis.key(&format!("conn:user:{u}")))
            .collect();
        let counts: Vec<i64> = ONLINE_MANY
            .run(redis, keys, vec![text(redis.prefix())])
            .await?;
        if counts.len() != users.len() {
            return Err(ClusterError::Unavailable);
        }
        Ok(counts.into_iter().map(|n| n > 0).collect())
    }

    /// One release attempt. `Ok(true)`: the user has no socket left anywhere.
    async fn release_once(&self, held: &Held) -> Result<bool, ClusterError> {
        let redis = self.nodes.redis();
        let left: i64 = RELEASE
            .run(
                redis,
                self.keys(&held.user, held.ip),
                vec![
                    text(redis.prefix()),
                    text(&held.token),
                    text(redis.node()),
                    text(&format!("{} {}", held.ip, held.user)),
                ],
            )
            .await?;
        Ok(left == 0)
    }

    /// Releases, retrying while Redis fails and the lease it was taken under
    /// is still this node's (after a fence, the cleanup has removed it).
    async fn release_held(self, held: Held, mut first: Option<Result<bool, ClusterError>>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = match first.take() {
                Some(r) => r,
                None => self.release_once(&held).await,
            };
            match attempt {
                Ok(true) => {
                    if let Some(hooks) = self.nodes.hooks() {
                        hooks.user_offline(held.user).await;
                    }
                    return;
                }
                Ok(false) => return,
                Err(_) if self.nodes.current_token() != held.token => return,
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

impl PresenceSlot {
    fn take(&self) -> Option<Held> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Frees the slot (once; later calls do nothing). When it was the user's
    /// last socket anywhere, reports them offline ([`super::nodes::Hooks`])
    /// before returning. When Redis fails, retries in the background.
    pub async fn release(&self) {
        let Some(held) = self.take() else {
            return;
        };
        let first = self.presence.release_once(&held).await;
        if first.is_err() {
            tokio::spawn(self.presence.clone().release_held(held, Some(first)));
        } else {
            self.presence.clone().release_held(held, Some(first)).await;
        }
    }
}

impl Drop for PresenceSlot {
    fn drop(&mut self) {
        if let Some(held) = self.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(self.presence.clone().release_held(held, None));
        }
    }
}
