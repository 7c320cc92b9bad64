//! Cluster-wide rate limits: governor's GCRA, run in Redis.
//!
//! The same algorithm and parameters as [`crate::limits::RateLimiters`]
//! (governor): emission interval `T = 60 s / per_minute`, tolerance
//! `tau = T * (burst - 1)`, one theoretical arrival time (TAT) per key in
//! `p:rl:{class}:{key}`, on Redis's clock (`TIME`), so nodes' clocks do not
//! matter. A request at `now` passes when `now >= tat - tau`, and then moves
//! `tat` to `max(tat, now) + T`; a refusal waits `tat - tau - now`. A key
//! expires once its bucket is full again.
//!
//! Governor stays the local first filter (no round trip for a flood on one
//! node); this is the cluster's word after it. Which limits are cluster-wide:
//! the per-user event classes, group changes, and the per-IP handshake,
//! login and registration limits (password guessing must not multiply by the
//! number of nodes). `session_open_per_ip` stays per node: it guards that
//! node's Engine.IO session memory.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use fred::types::Value;

use super::script::Script;
use super::{ClusterError, Redis};
use crate::domain::{UserId, Username};
use crate::limits::{EventClass, IpKey, RetryAfter};
use crate::policy::{Rate, RateLimitPolicy};

/// Lua: `gcra(first, count, arg)` checks the buckets `KEYS[first ..
/// first + count - 1]` in order, charging each that passes, and stops at the
/// first that refuses (as `RateLimiters::login` does). Bucket `i` reads `T`
/// and `tau` (microseconds) from `ARGV[arg + 2i - 1]` and `ARGV[arg + 2i]`.
/// `nil` when every bucket passed, else `{i, wait in microseconds}`.
macro_rules! gcra_lua {
    () => {
        r"
local function gcra(first, count, arg)
  if count == 0 then return nil end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  for i = 1, count do
    local key = KEYS[first + i - 1]
    local period = tonumber(ARGV[arg + 2 * i - 1])
    local tau = tonumber(ARGV[arg + 2 * i])
    local tat = tonumber(redis.call('GET', key) or now) or now
    local earliest = tat - tau
    if now < earliest then
      return {i, earliest - now}
    end
    local next = math.max(tat, now) + period
    redis.call('SET', key, string.format('%.0f', next), 'PX', math.max(1, math.ceil((next - now) / 1000)))
  end
  return nil
end
"
    };
}
pub(crate) use gcra_lua;

/// Checks buckets (see [`gcra_lua`]). KEYS: buckets. ARGV: `T` and `tau`
/// per bucket. `{0}` passed, else `{index, wait in microseconds}`.
static GCRA: Script = Script::new(concat!(gcra_lua!(), "return gcra(1, #KEYS, 0) or {0}\n"));

/// One bucket to charge: its Redis key and its GCRA parameters. Taken on its
/// own ([`ClusterRates::settle`]) or with a transition's first read (the
/// call state's gate, one round trip for both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The bucket's key (`p:rl:{class}:{key}`).
    pub key: String,
    /// `T`, microseconds.
    pub period: i64,
    /// `tau`, microseconds.
    pub tau: i64,
}

/// The wait a refusing bucket answered (microseconds, at least 1).
pub fn wait_of(micros: i64) -> RetryAfter {
    RetryAfter(Duration::from_micros(
        u64::try_from(micros).unwrap_or(1).max(1),
    ))
}

/// Charges `buckets` in order, stopping at the first that refuses: one
/// round trip.
///
/// # Errors
/// [`Limited`].
pub(crate) async fn take(redis: &Redis, buckets: Vec<Charge>) -> Result<(), Limited> {
    let mut keys = Vec::with_capacity(buckets.len());
    let mut args = Vec::with_capacity(2 * buckets.len());
    for c in buckets {
        keys.push(c.key);
        args.push(Value::from(c.period));
        args.push(Value::from(c.tau));
    }
    let answer: Vec<i64> = GCRA.run(redis, keys, args).await?;
    match answer.as_slice() {
        [0] => Ok(()),
        [_, wait] => Err(Limited::Wait(wait_of(*wait))),
        _ => Err(ClusterError::Unavailable.into()),
    }
}

/// Why a cluster-wide limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    /// Over the limit: wait this long.
    #[error("rate limited")]
    Wait(RetryAfter),
    /// Redis did not answer: refused, nothing charged that can be known.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// `T` and `tau` of a rate, in microseconds (as governor, `T` at least 1).
fn gcra(rate: Rate) -> (i64, i64) {
    let per_minute = u64::from(rate.per_minute.max(1));
    let period = (60_000_000u64 / per_minute).max(1);
    let tau = period * u64::from(rate.burst.max(1) - 1);
    (
        i64::try_from(period).unwrap_or(i64::MAX),
        i64::try_from(tau).unwrap_or(i64::MAX),
    )
}

/// The cluster-wide rate limits. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClusterRates {
    redis: Redis,
    policy: Arc<RwLock<RateLimitPolicy>>,
}

impl ClusterRates {
    /// Limits of `policy` on `redis`.
    pub fn new(redis: Redis, policy: &RateLimitPolicy) -> Self {
        Self {
            redis,
            policy: Arc::new(RwLock::new(policy.clone())),
        }
    }

    /// Installs a reloaded policy (buckets keep their state; new rates apply
    /// from the next request).
    pub fn replace(&self, policy: &RateLimitPolicy) {
        *self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = policy.clone();
    }

    fn policy(&self) -> RateLimitPolicy {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn charge(&self, name: &str, rate: Rate) -> Charge {
        let (period, tau) = gcra(rate);
        Charge {
            key: self.redis.key(&format!("rl:{name}")),
            period,
            tau,
        }
    }

    /// Checks `buckets` in order: one round trip.
    async fn check(&self, buckets: Vec<Charge>) -> Result<(), Limited> {
        take(&self.redis, buckets).await
    }

    /// What a Socket.IO event of `class` by `user` is charged, to take with
    /// the transition's first read (or [`ClusterRates::settle`] it alone).
    pub fn event_charge(&self, class: EventClass, user: &UserId) -> Charge {
        let p = self.policy();
        let (name, rate) = match class {
            EventClass::CallInitiate => ("call_initiate", p.call_initiate),
            EventClass::CallControl => ("call_control", p.call_control),
            EventClass::Rooms => ("rooms", p.rooms),
        };
        self.charge(&format!("{name}:{user}"), rate)
    }

    /// Takes `charge` on its own: one round trip.
    ///
    /// # Errors
    /// [`Limited`].
    pub async fn settle(&self, charge: Charge) -> Result<(), Limited> {
        self.check(vec![charge]).await
    }

    /// A Socket.IO event of `class` by `user`.
    ///
    /// # Errors
    /// [`Limited`].
    pub async fn event(&self, class: EventClass, user: &UserId) -> Result<(), Limited> {
        self.settle(self.event_charge(class, user)).await
    }

    /// A group creation or membership change by `user`.
    ///
    /// # Errors
    /// [`Limited`].
    pub async fn group_change(&self, user: &UserId) -> Result<(), Limited> {
        let rate = self.policy().group_changes;
        self.check(vec![self.charge(&format!("group_changes:{user}"), rate)])
            .await
    }

    /// A Socket.IO handshake from `ip`.
    ///
    /// # Errors
    /// [`Limited`].
    pub async fn handshake(&self, ip: IpKey) -> Result<(), Limited> {
        let rate = self.policy().handshake_per_ip;
        self.check(vec![self.charge(&format!("handshake:{ip}"), rate)])
            .await
    }

    /// A login from `ip` for `username`: the IP bucket first, the (username,
    /// IP) bucket only when the IP bucket passed, as in one process.
    ///
    /// # Errors
    /// [`Limited`].
    pub async fn login(&self, ip: IpKey, username: Option<&Username>) -> Result<(), Limited> {
        let p = self.policy();
        let mut buckets = vec![self.charge(&format!("login_ip:{ip}"), p.login_per_ip)];
        if let Some(u) = username {
            buckets.push(self.charge(&format!("login_user:{ip} {u}"), p.login_per_username));
        }
        self.check(buckets).await
    }

    /// A registration from `ip`.
    ///
    /// # Errors
    /// [`Limited`].
    pub async fn register(&self, ip: IpKey) -> Result<(), Limited> {
        let rate = self.policy().register_per_ip;
        self.check(vec![self.charge(&format!("register:{ip}"), rate)])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_governors() {
        // 10 a minute, burst 5: T = 6 s, tau = 24 s.
        let r = Rate {
            per_minute: 10,
            burst: 5,
        };
        assert_eq!(gcra(r), (6_000_000, 24_000_000));
        let unlimited = Rate {
            per_minute: 100_000_000,
            burst: 1,
        };
        assert_eq!(gcra(unlimited), (1, 0));
    }
}
