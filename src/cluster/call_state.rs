//! The cluster's call state in Redis: records, one compare-and-set commit,
//! and durable timers. No call rule lives here or in Lua: every transition
//! is a [`Registry`] method, run on the records it may touch.
//!
//! # Keys (prefix `p`)
//! | key | value |
//! |---|---|
//! | `p:call:{id}` | a live call ([`crate::domain::call::Call`] as JSON) |
//! | `p:user:{id}` | a user's live call ids and presence epoch ([`UserRecord`]) |
//! | `p:room:{room}` | the call id holding a Jitsi room |
//! | `p:group:{gid}:call` | the live call id of a group |
//! | `p:timers` | sorted set: [`Timer`] as JSON, scored by due time (Unix ms) |
//!
//! # A transition
//! 1. Load: one read of the scope's keys (acting users, named calls, rooms,
//!    groups, new parties), and a second `MGET` of the calls those records
//!    name when they are not loaded yet. A call event's first read is the
//!    [`GATE`] script: it takes the event's cluster-wide rate charge and
//!    counts the callee's presence (an initiate) in the same round trip,
//!    and reads nothing when the charge is refused; otherwise it is an
//!    `MGET`.
//! 2. Run the rule on a fresh [`Registry`] built from the records. If it
//!    created or ended a call whose index records were not loaded (the other
//!    party of a call being hung up, its room), load them (one `MGET`) and
//!    run the rule again from scratch.
//! 3. Commit, when anything changed: one `EVALSHA` of [`CAS`]. It refuses
//!    (`Fenced`) when this node's lease `p:node:{id}` is gone; checks that
//!    every record read still holds what was read (absent ones still
//!    absent, new ones absent); then sets or deletes the changed records,
//!    adds the timers the rule asked for and removes those of ended calls,
//!    all or nothing. A conflict starts again at 1, at most
//!    [`MAX_ATTEMPTS`] times, then the transition is `unavailable`.
//!
//! A one-to-one call's setup costs 4 round trips, admission included:
//! initiate (1 gated load + 1 commit), accept (1 gated load + 1 commit). A
//! hang-up costs 2 when the payload's `callerId`/`receiverId` name the
//! parties (their records are read ahead, never trusted), else 3 (the other
//! party's record is loaded when the rule ends the call).
//!
//! # Cleanup
//! Ended calls are deleted with every index record in the commit that ends
//! them, with their ring timer. Every record written or read by a commit
//! gets a safety TTL of [`RECORD_TTL`] (24 h) from that commit, so state a
//! bug or a lost node leaves behind cannot grow without bound; a record
//! that outlives the call it names is dropped when next loaded.
//!
//! # Timers
//! A timer is a member of `p:timers`, written in the commit of the
//! transition that asked for it. Every node polls every
//! `cluster.timer_poll_ms` and claims the due members with [`CLAIM`]: one
//! script re-scores each to now + [`CLAIM_LEASE`], so no other node sees it
//! while it fires. The claimer runs [`Registry::fire`] as a transition whose
//! commit also removes the member. A node that dies after claiming leaves
//! the member to come due again when the claim lapses; firing twice is
//! harmless (the second run finds the call changed and does nothing), so a
//! timer's effect happens exactly once even when its node was killed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::interfaces::{KeysInterface, LuaInterface};

use super::{ClusterError, Redis};
use crate::policy::CallPolicy;
use crate::signaling::call_store::{Done, Effects, Gate, GateError, Scope};
use crate::signaling::registry::{Outcome, RecordKey, Registry, Timer, diff, references};

pub use crate::signaling::registry::UserRecord;

/// Safety TTL of every call-state record, refreshed by every commit that
/// reads or writes it.
pub const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a claimed timer is hidden from other nodes while it fires.
pub const CLAIM_LEASE: Duration = Duration::from_secs(5);

/// Commits tried before a transition is `unavailable`.
pub const MAX_ATTEMPTS: usize = 8;

/// Wider loads one transition may need before it is refused.
const MAX_WIDENINGS: usize = 3;

/// Timers claimed per poll.
const CLAIM_BATCH: usize = 256;

/// The generic compare-and-set commit. No call rule: it compares, writes and
/// schedules what the caller computed.
///
/// KEYS: the node's lease, the timer set, then every record touched.
/// ARGV: TTL (ms), timers to add, timers to remove; then for each record its
/// expected value (`""` absent, else `"="` .. value) and its action (`"k"`
/// keep and refresh the TTL, `"d"` delete, `"s"` .. value set); then
/// (score, member) pairs to add; then members to remove.
/// Returns 1 (committed), 0 (a record changed since it was read), -1 (no lease).
pub const CAS: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local n = #KEYS - 2
for i = 1, n do
  local want = ARGV[2 + 2 * i]
  local have = redis.call('GET', KEYS[2 + i])
  if want == '' then
    if have then return 0 end
  elseif (not have) or ('=' .. have) ~= want then
    return 0
  end
end
local ttl = ARGV[1]
for i = 1, n do
  local op = ARGV[3 + 2 * i]
  local k = KEYS[2 + i]
  local c = string.sub(op, 1, 1)
  if c == 's' then
    redis.call('SET', k, string.sub(op, 2), 'PX', ttl)
  elseif c == 'd' then
    redis.call('DEL', k)
  else
    redis.call('PEXPIRE', k, ttl)
  end
end
local a = 4 + 2 * n
for i = 1, tonumber(ARGV[2]) do
  redis.call('ZADD', KEYS[2], ARGV[a], ARGV[a + 1])
  a = a + 2
end
for i = 1, tonumber(ARGV[3]) do
  redis.call('ZREM', KEYS[2], ARGV[a])
  a = a + 1
end
return 1
";

/// Claims due timers: re-scores each due member to the claim's end, so
/// exactly one node gets it, and returns them. A node without its lease
/// claims nothing.
///
/// KEYS: the timer set, the node's lease. ARGV: now (ms), claimed until
/// (ms), batch size.
pub const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then return {} end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], m)
end
return due
";

/// A transition's first read with its admission: one round trip for the
/// event's cluster-wide rate charge, the presence of a user it needs online
/// and the records in scope. No call rule: it charges, counts and reads.
///
/// KEYS: the charged buckets, the presence hashes, then the records.
/// ARGV: the key prefix, the number of buckets, the number of presence
/// hashes, then `T` and `tau` per bucket ([`crate::cluster::rates`]).
/// Returns `{i, wait}` when bucket `i` refuses (nothing read), else `{0}`
/// followed by each presence hash's sockets on live nodes and each record
/// (false when absent).
pub const GATE: &str = concat!(
    crate::cluster::presence::live_sum!(),
    crate::cluster::rates::gcra_lua!(),
    r"
local nb, np = tonumber(ARGV[2]), tonumber(ARGV[3])
local limited = gcra(1, nb, 3)
if limited then return limited end
local out = {0}
for i = nb + 1, nb + np do out[#out + 1] = live_sum(KEYS[i]) end
if #KEYS > nb + np then
  local values = redis.call('MGET', unpack(KEYS, nb + np + 1))
  for i = 1, #values do out[#out + 1] = values[i] end
end
return out
"
);

/// A timer this node claimed, with its member in `p:timers`.
#[derive(Debug, Clone)]
pub struct ClaimedTimer {
    /// The member as stored (removed by the firing commit).
    pub member: String,
    /// The timer.
    pub timer: Timer,
}

/// Redis round trips made by one store, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundTrips {
    /// `MGET`s (loads).
    pub loads: u64,
    /// `EVALSHA`s of the commit script.
    pub commits: u64,
    /// Commits refused because a record changed (each was retried).
    pub conflicts: u64,
    /// `EVALSHA`s of the claim script.
    pub claims: u64,
    /// `SCRIPT LOAD`s.
    pub script_loads: u64,
}

impl RoundTrips {
    /// Every round trip.
    pub fn total(&self) -> u64 {
        self.loads + self.commits + self.claims + self.script_loads
    }
}

#[derive(Debug, Default)]
struct Counters {
    loads: AtomicU64,
    commits: AtomicU64,
    conflicts: AtomicU64,
    claims: AtomicU64,
    script_loads: AtomicU64,
}

/// A script and its SHA1 once loaded.
#[derive(Debug)]
struct Script {
    lua: &'static str,
    sha: RwLock<Option<String>>,
}

impl Script {
    const fn new(lua: &'static str) -> Self {
        Self {
            lua,
            sha: RwLock::new(None),
        }
    }

    fn sha(&self) -> Option<String> {
        self.sha
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_sha(&self, sha: String) {
        *self.sha.write().unwrap_or_else(PoisonError::into_inner) = Some(sha);
    }
}

/// What the commit script answered.
enum Commit {
    Done,
    Conflict,
}

/// The cluster's call state (see the module docs).
#[derive(Debug)]
pub struct RedisCalls {
    redis: Redis,
    policy: RwLock<CallPolicy>,
    cas: Script,
    claim: Script,
    gate: Script,
    lease_key: String,
    timers_key: String,
    counters: Counters,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn corrupt(e: crate::signaling::registry::RecordError) -> ClusterError {
    tracing::error!(record = ?e.key, "unparseable call-state record; transition refused");
    ClusterError::Unavailable
}

/// A record as the gate returned it: absent is false (RESP3) or nil.
fn record_value(v: fred::types::Value) -> Option<String> {
    match v {
        fred::types::Value::Null | fred::types::Value::Boolean(false) => None,
        other => other.into_string(),
    }
}

fn member(timer: &Timer) -> Option<String> {
    serde_json::to_string(timer).ok()
}

impl RedisCalls {
    /// The store of node `redis.node()`.
    pub fn new(redis: Redis, policy: CallPolicy) -> Self {
        let lease_key = redis.key(&format!("node:{}", redis.node()));
        let timers_key = redis.key("timers");
        Self {
            redis,
            policy: RwLock::new(policy),
            cas: Script::new(CAS),
            claim: Script::new(CLAIM),
            gate: Script::new(GATE),
            lease_key,
            timers_key,
            counters: Counters::default(),
        }
    }

    /// The call policy in force on this node.
    pub fn policy(&self) -> CallPolicy {
        self.policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces this node's call policy.
    pub fn set_policy(&self, policy: CallPolicy) {
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = policy;
    }

    /// Round trips so far.
    pub fn round_trips(&self) -> RoundTrips {
        let c = &self.counters;
        RoundTrips {
            loads: c.loads.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
            claims: c.claims.load(Ordering::Relaxed),
            script_loads: c.script_loads.load(Ordering::Relaxed),
        }
    }

    /// The Redis key of a record.
    pub fn key(&self, record: &RecordKey) -> String {
        match record {
            RecordKey::Call(id) => self.redis.key(&format!("call:{id}")),
            RecordKey::User(user) => self.redis.key(&format!("user:{user}")),
            RecordKey::Room(room) => self.redis.key(&format!("room:{room}")),
            RecordKey::Group(group) => self.redis.key(&format!("group:{group}:call")),
        }
    }

    async fn mget(
        &self,
        keys: &BTreeSet<RecordKey>,
        into: &mut BTreeMap<RecordKey, Option<String>>,
    ) -> Result<(), ClusterError> {
        if keys.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        self.counters.loads.fetch_add(1, Ordering::Relaxed);
        let values: Vec<Option<String>> = self.redis.client().mget(names).await?;
        if values.len() != keys.len() {
            return Err(ClusterError::Unavailable);
        }
        into.extend(keys.iter().cloned().zip(values));
        Ok(())
    }

    /// The records a scope names.
    fn scope_keys(scope: &Scope) -> BTreeSet<RecordKey> {
        let mut keys: BTreeSet<RecordKey> = BTreeSet::new();
        keys.extend(scope.users.iter().cloned().map(RecordKey::User));
        keys.extend(scope.parties.iter().cloned().map(RecordKey::User));
        keys.extend(scope.calls.iter().copied().map(RecordKey::Call));
        keys.extend(scope.rooms.iter().cloned().map(RecordKey::Room));
        keys.extend(scope.groups.iter().cloned().map(RecordKey::Group));
        keys
    }

    /// Loads the scope and the calls its records name.
    async fn load(
        &self,
        scope: &Scope,
    ) -> Result<BTreeMap<RecordKey, Option<String>>, ClusterError> {
        let mut fetched = BTreeMap::new();
        self.mget(&Self::scope_keys(scope), &mut fetched).await?;
        self.follow(scope, &mut fetched).await?;
        Ok(fetched)
    }

    /// [`Self::load`] with the gate's admission in the same round trip (see
    /// [`GATE`]). Nothing is read when the charge is refused.
    async fn load_gated(
        &self,
        scope: &Scope,
        gate: &Gate,
    ) -> Result<BTreeMap<RecordKey, Option<String>>, GateError> {
        let keys = Self::scope_keys(scope);
        let mut names = Vec::with_capacity(keys.len() + 2);
        let mut args = vec![self.redis.prefix().to_owned()];
        args.push(usize::from(gate.charge.is_some()).to_string());
        args.push(usize::from(gate.online.is_some()).to_string());
        if let Some(charge) = &gate.charge {
            names.push(charge.key.clone());
            args.push(charge.period.to_string());
            args.push(charge.tau.to_string());
        }
        if let Some(user) = &gate.online {
            names.push(self.redis.key(&format!("conn:user:{user}")));
        }
        names.extend(keys.iter().map(|k| self.key(k)));
        self.counters.loads.fetch_add(1, Ordering::Relaxed);
        let answer: Vec<fred::types::Value> = self.eval(&self.gate, names, args).await?;
        let mut answer = answer.into_iter();
        match answer.next().and_then(|v| v.as_i64()) {
            Some(0) => {}
            Some(_) => {
                let wait = answer.next().and_then(|v| v.as_i64()).unwrap_or(1);
                return Err(GateError::Limited(crate::cluster::rates::wait_of(wait)));
            }
            None => return Err(ClusterError::Unavailable.into()),
        }
        if gate.online.is_some() {
            match answer.next().and_then(|v| v.as_i64()) {
                Some(n) if n > 0 => {}
                Some(_) => return Err(GateError::Offline),
                None => return Err(ClusterError::Unavailable.into()),
            }
        }
        let values: Vec<Option<String>> = answer.map(record_value).collect();
        if values.len() != keys.len() {
            return Err(ClusterError::Unavailable.into());
        }
        let mut fetched: BTreeMap<RecordKey, Option<String>> =
            keys.into_iter().zip(values).collect();
        self.follow(scope, &mut fetched).await?;
        Ok(fetched)
    }

    /// Loads the calls that the acting users', rooms' and groups' records
    /// name, when not loaded yet (the parties' other calls are none of this
    /// transition's business).
    async fn follow(
        &self,
        scope: &Scope,
        fetched: &mut BTreeMap<RecordKey, Option<String>>,
    ) -> Result<(), ClusterError> {
        let mut follow = BTreeSet::new();
        for (key, value) in fetched.iter() {
            let followed = match key {
                RecordKey::User(u) => scope.users.contains(u),
                RecordKey::Room(_) | RecordKey::Group(_) => true,
                RecordKey::Call(_) => false,
            };
            if let (true, Some(value)) = (followed, value) {
                for id in references(key, value).map_err(corrupt)? {
                    let k = RecordKey::Call(id);
                    if !fetched.contains_key(&k) {
                        follow.insert(k);
                    }
                }
            }
        }
        self.mget(&follow, fetched).await
    }

    /// Runs `f` as a transition (see the module docs); `done` is a timer
    /// member to remove in the same commit (the timer being fired).
    pub(crate) async fn run<T: Effects>(
        &self,
        scope: &Scope,
        f: impl Fn(&mut Registry) -> T,
        done: Option<&str>,
    ) -> Result<Done<T>, ClusterError> {
        self.run_gated(scope, f, done, None)
            .await
            .map_err(|e| match e {
                GateError::Cluster(e) => e,
                // No gate, so no charge refused and nobody required online.
                GateError::Limited(_) | GateError::Offline => ClusterError::Unavailable,
            })
    }

    /// [`Self::run`] with `gate` checked by the first read (one round trip
    /// for both; a retry after a conflict reads without it, as the charge
    /// was taken).
    pub(crate) async fn run_gated<T: Effects>(
        &self,
        scope: &Scope,
        f: impl Fn(&mut Registry) -> T,
        done: Option<&str>,
        mut gate: Option<&Gate>,
    ) -> Result<Done<T>, GateError> {
        for attempt in 0..MAX_ATTEMPTS {
            let mut fetched = match gate.take() {
                Some(g) if !g.is_empty() => self.load_gated(scope, g).await?,
                _ => self.load(scope).await?,
            };
            let mut widenings = 0;
            let (mut value, mut registry) = loop {
                let mut registry =
                    Registry::from_records(self.policy(), &fetched).map_err(corrupt)?;
                let before = registry.calls_with_index_keys();
                let value = f(&mut registry);
                let after = registry.calls_with_index_keys();
                let mut missing = BTreeSet::new();
                for (id, keys) in &before {
                    if !after.contains_key(id) {
                        // An ended call: every index record must be loaded to be removed.
                        missing.extend(keys.iter().filter(|k| !fetched.contains_key(*k)).cloned());
                    }
                }
                for (id, keys) in &after {
                    if !before.contains_key(id) {
                        // A new call: its parties' records must be loaded to be extended
                        // (its room and group are checked absent by the commit).
                        missing.extend(
                            keys.iter()
                                .filter(|k| {
                                    matches!(k, RecordKey::User(_)) && !fetched.contains_key(*k)
                                })
                                .cloned(),
                        );
                    }
                }
                if missing.is_empty() {
                    break (value, registry);
                }
                if widenings == MAX_WIDENINGS {
                    tracing::error!("call transition needs ever more records; refused");
                    return Err(ClusterError::Unavailable.into());
                }
                widenings += 1;
                self.mget(&missing, &mut fetched).await?;
            };
            let timers = value.take_timers();
            let ended = registry.take_ended();
            let writes = diff(&fetched, &registry.records());
            let mut removals: Vec<String> = ended
                .iter()
                .filter_map(|(id, _)| member(&Timer::RingTimeout(*id)))
                .collect();
            removals.extend(done.map(str::to_owned));
            if writes.is_empty() && timers.is_empty() && removals.is_empty() {
                // A read, or a refusal: nothing to commit.
                return Ok(Done { value, ended });
            }
            match self.commit(&fetched, writes, &timers, &removals).await? {
                Commit::Done => return Ok(Done { value, ended }),
                Commit::Conflict => {
                    self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                    // Another node committed in between: start again from its state,
                    // after a short random pause so two racing nodes do not collide again.
                    let pause = rand::random_range(0..=(1u64 << attempt.min(4)));
                    tokio::time::sleep(Duration::from_micros(pause * 250)).await;
                }
            }
        }
        tracing::warn!("call transition kept conflicting; refused as unavailable");
        Err(ClusterError::Unavailable.into())
    }

    async fn commit(
        &self,
        fetched: &BTreeMap<RecordKey, Option<String>>,
        writes: Vec<(RecordKey, Option<String>)>,
        timers: &[(Duration, Timer)],
        removals: &[String],
    ) -> Result<Commit, ClusterError> {
        let mut writes: BTreeMap<RecordKey, Option<String>> = writes.into_iter().collect();
        let mut keys = vec![self.lease_key.clone(), self.timers_key.clone()];
        let mut args = vec![
            ms(RECORD_TTL).to_string(),
            timers.len().to_string(),
            removals.len().to_string(),
        ];
        // Every record read, with what was read; then every new record, absent.
        for (key, was) in fetched {
            keys.push(self.key(key));
            args.push(was.as_ref().map_or_else(String::new, |v| format!("={v}")));
            args.push(match writes.remove(key) {
                Some(Some(v)) => format!("s{v}"),
                Some(None) => "d".into(),
                None => "k".into(),
            });
        }
        for (key, now) in writes {
            keys.push(self.key(&key));
            args.push(String::new());
            args.push(now.map_or_else(|| "d".into(), |v| format!("s{v}")));
        }
        let now = now_ms();
        for (after, timer) in timers {
            let Some(m) = member(timer) else { continue };
            args.push(now.saturating_add(ms(*after)).to_string());
            args.push(m);
        }
        args.extend(removals.iter().cloned());
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        let answer: i64 = self.eval(&self.cas, keys, args).await?;
        match answer {
            1 => Ok(Commit::Done),
            0 => Ok(Commit::Conflict),
            _ => Err(ClusterError::Fenced),
        }
    }

    /// `EVALSHA`, loading the script first when this node has not yet, and
    /// again when Redis lost it (`NOSCRIPT` after a restart).
    async fn eval<R: fred::types::FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, ClusterError> {
        let client = self.redis.client();
        if let Some(sha) = script.sha() {
            match client.evalsha(sha, keys.clone(), args.clone()).await {
                Err(e) if e.details().starts_with("NOSCRIPT") => {}
                other => return Ok(other?),
            }
        }
        self.counters.script_loads.fetch_add(1, Ordering::Relaxed);
        let sha: String = client.script_load(script.lua).await?;
        script.set_sha(sha.clone());
        Ok(client.evalsha(sha, keys, args).await?)
    }

    /// Claims the timers that are due (see the module docs).
    pub(crate) async fn claim_due(&self) -> Result<Vec<ClaimedTimer>, ClusterError> {
        let now = now_ms();
        let keys = vec![self.timers_key.clone(), self.lease_key.clone()];
        let args = vec![
            now.to_string(),
            now.saturating_add(ms(CLAIM_LEASE)).to_string(),
            CLAIM_BATCH.to_string(),
        ];
        self.counters.claims.fetch_add(1, Ordering::Relaxed);
        let members: Vec<String> = self.eval(&self.claim, keys, args).await?;
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            match serde_json::from_str::<Timer>(&m) {
                Ok(timer) => out.push(ClaimedTimer { member: m, timer }),
                Err(_) => {
                    tracing::error!("unparseable timer in the timer set; removed");
                    let _: Result<i64, _> = fred::interfaces::SortedSetsInterface::zrem(
                        self.redis.client(),
                        &self.timers_key,
                        m,
                    )
                    .await;
                }
            }
        }
        Ok(out)
    }

    /// Fires a claimed timer as a transition; its commit removes the member.
    pub(crate) async fn fire(
        &self,
        claimed: &ClaimedTimer,
        user_online: bool,
    ) -> Result<Done<Outcome>, ClusterError> {
        let timer = &claimed.timer;
        let mut scope = Scope::default().and_call(Some(timer.call()));
        scope.users.extend(timer.user().cloned());
        self.run(
            &scope,
            |r| r.fire(timer, user_online),
            Some(&claimed.member),
        )
        .await
    }

    /// The timer set's key (`p:timers`).
    pub fn timer_key(&self) -> &str {
        &self.timers_key
    }
}
