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
//! | `p:commit:{token}` | one commit's undo record, then its undo's tombstone ([`UNDO_WINDOW`]) |
//!
//! # A transition
//! 0. A likely-new transition (an initiate: [`Scope::likely_new`]) first
//!    skips 1: its rule runs on the scope's records taken as absent, and 3
//!    commits that with the whole gate (the charge, then the callee online:
//!    `{-4}` offline). When a record turns out to exist, the commit refuses
//!    as a conflict (nothing charged or written), and the transition runs
//!    from 1 as any other. A rule that needs more records, or commits
//!    nothing, also runs from 1. Either way the outcome is the rule's on
//!    the records as they are.
//! 1. Load: one read of the scope's keys (acting users, named calls, rooms,
//!    groups, new parties), and a second `MGET` of the calls those records
//!    name when they are not loaded yet. An initiate's first read is the
//!    [`GATE`] script: it takes the event's cluster-wide rate charge and
//!    counts the callee's presence in the same round trip, and reads
//!    nothing when the charge is refused. Any other read is an `MGET`: the
//!    charge of accept, reject and end is taken by their commit (3), or on
//!    its own when they have nothing to commit (a refusal).
//! 2. Run the rule on a fresh [`Registry`] built from the records. If it
//!    created or ended a call whose index records were not loaded (the other
//!    party of a call being hung up, its room), load them (one `MGET`) and
//!    run the rule again from scratch.
//! 3. Commit, when anything changed: one `EVALSHA` of [`CAS`], with a fresh
//!    random token and a deadline on Redis's clock
//!    ([`Redis::deadline_ms`]): run after it, it refuses and nothing
//!    applies. It refuses (`Fenced`) when this node's lease
//!    `p:node:{id}` is gone, and refuses outright when `p:commit:{token}`
//!    exists (the tombstone of its own undo, below); checks that every
//!    record read still holds what was read (absent ones still absent, new
//!    ones absent); takes the event's rate charge when it carries one
//!    (refused: nothing written, the event is `rate_limited`); then sets or
//!    deletes the changed records, adds the timers the rule asked for and
//!    removes those of ended calls, and writes `p:commit:{token}` (for
//!    [`UNDO_WINDOW`]) with what an undo needs that the node does not know:
//!    the score each timer it touched had before. Last, it reads which of
//!    the users the events go to have a socket on another live node, and
//!    publishes the events for those users itself: the adapter's broadcast
//!    requests, encoded by this node ([`crate::cluster::relay`]), so they
//!    leave the moment the commit applies instead of a round trip later.
//!    This node delivers every event to its own sockets once the commit
//!    answered. All or nothing. A conflict starts again at 1, at most
//!    [`MAX_ATTEMPTS`] times, then the transition is `unavailable`.
//! 4. Only when the commit got no answer (it timed out after
//!    `cluster.redis_timeout_ms`, or the connection was lost): the outcome
//!    is unknown, the sender hears `unavailable`, so the commit must not
//!    stand. A task of its own runs [`UNDO`] for the token, on the same
//!    connection (so after the commit when both were sent on it), every
//!    250 ms while Redis does not answer, for at most [`UNDO_WINDOW`] less
//!    10 s. [`UNDO`] answers [`Undone`]: with no undo record the commit
//!    never applied, and the tombstone it writes makes sure it never will
//!    (a commit that arrives later, over a connection since lost, is
//!    refused); with one, and every record the commit set or deleted still
//!    as the commit left it, the records get back the values read in 1 and
//!    the timers their scores before (added ones removed, removed ones
//!    re-added); if another transition has changed one of those records
//!    since, it has built on the commit, and undoing would break it: left
//!    as it is, logged at warn. An undone commit had published its events
//!    for other nodes: every call it created is withdrawn from the users it
//!    rang (`videoCallEnded`, `cancelled`, through the adapter). A commit
//!    held up past its deadline never applies, so its undo finds nothing.
//!    Either way the undo record becomes a
//!    tombstone that repeats the answer. Until the undo is answered, every
//!    transition of this node runs it first (and is `unavailable` while it
//!    gets no answer), so a retry on the same node, once Redis is back,
//!    never builds on the commit and makes the undo moot; one on another
//!    node in that window can. Nothing of this costs a round trip when the
//!    commit answers.
//!
//! A one-to-one call's setup costs 3 round trips, admission included:
//! initiate (1 commit that takes the charge and checks the callee online,
//! when neither party is in a call), accept (1 load + 1 commit that takes
//! the charge). A
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use fred::interfaces::{KeysInterface, LuaInterface};

use super::rates::{self, Charge};
use super::relay::Relay;
use super::{ClusterError, Redis};
use crate::domain::{CallId, UserId};
use crate::policy::CallPolicy;
use crate::signaling::call_store::{Done, Effects, Gate, GateError, Scope};
use crate::signaling::registry::{
    Outcome, Reason, RecordKey, Registry, Timer, To, diff, references, withdrawal,
};
use crate::signaling::rooms;

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

/// How long a commit's undo record `p:commit:{token}`, and the tombstone an
/// undo leaves in its place, live: the window within which a commit whose
/// answer never came is undone, or refused if it arrives after its undo.
pub const UNDO_WINDOW: Duration = Duration::from_secs(60);

/// An undo is retried this often while Redis does not answer...
const UNDO_RETRY: Duration = Duration::from_millis(250);

/// ...until this long before [`UNDO_WINDOW`] closes (counted from when the
/// commit was sent), so an undo never runs after the undo record expired
/// and mistakes an applied commit for one that never was.
const UNDO_MARGIN: Duration = Duration::from_secs(10);

/// The generic compare-and-set commit. No call rule: it compares, charges,
/// writes and schedules what the caller computed, and leaves what undoing
/// it needs.
///
/// KEYS: the node's lease, the timer set, the commit's undo record
/// `p:commit:{token}`, then every record touched, then the presence hashes
/// (`p:conn:user:{id}`) of the users the transition's events go to, then
/// the rate bucket to charge, if any, then the presence hash of a user who
/// must be online, if any.
/// ARGV: TTL (ms), timers to add, timers to remove, the undo record's TTL
/// (ms), presence hashes, buckets (0 or 1), the key prefix, this node's
/// id, the bucket's `T` and `tau` (microseconds, see
/// [`crate::cluster::rates`]; ignored without a bucket), users required
/// online (0 or 1), the deadline (Unix ms on Redis's clock, `"0"` none:
/// run later, the commit refuses, `{-5}`, and nothing applies); then for
/// each record its expected value (`""` absent,
/// else `"="` .. value) and its action (`"k"` keep and refresh the TTL,
/// `"d"` delete, `"s"` .. value set); then (score, member) pairs to add;
/// then members to remove; then, when the node relays its events
/// ([`crate::cluster::relay`]), the adapter's request channel and, per
/// event, the (1-based) index of its recipient's presence hash and the
/// adapter message: published on that channel, in order, once the commit
/// applied, for each recipient that has a socket on another live node.
///
/// The charge is taken once the records compared equal, so a conflict
/// (retried) charges nothing and the attempt that applies charges once.
/// The user required online is counted after the charge, as [`GATE`] does:
/// offline, the charge stands and nothing is written.
///
/// The undo record is `"c"`, then `"|" .. i .. ":" .. score` for each timer
/// operation `i` (1-based: the additions, then the removals) whose member
/// was in the set before, with its score then: what [`UNDO`] needs that
/// the node does not know.
///
/// Returns `{1, ..}` (committed: then, per presence hash, 1 when that user
/// has a socket on another node whose lease is alive, else 0), `{0}` (a
/// record changed since it was read), `{-1}` (no lease), `{-2}` (refused:
/// [`UNDO`] already ran for this token), `{-3, wait}` (the bucket refused:
/// nothing written; wait in microseconds), `{-4}` (the user required online
/// has no socket on a live node: nothing written). The presence is read in the
/// commit itself: a device that connects elsewhere counts itself before it
/// reads its calls (`activeVideoCalls`), so it is either seen here or
/// reads this commit.
pub const CAS: &str = concat!(
    crate::cluster::presence::live_sum!(),
    crate::cluster::rates::gcra_lua!(),
    r"
if ARGV[12] ~= '0' then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[12]) then
    return {-5}
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {-2} end
local np, nc, no = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[11])
local n = #KEYS - 3 - np - nc - no
for i = 1, n do
  local want = ARGV[11 + 2 * i]
  local have = redis.call('GET', KEYS[3 + i])
  if want == '' then
    if have then return {0} end
  elseif (not have) or ('=' .. have) ~= want then
    return {0}
  end
end
if nc == 1 then
  local limited = gcra(4 + n + np, 1, 8)
  if limited then return {-3, limited[2]} end
end
if no == 1 and live_sum(KEYS[#KEYS], ARGV[7]) == 0 then return {-4} end
local ttl = ARGV[1]
for i = 1, n do
  local op = ARGV[12 + 2 * i]
  local k = KEYS[3 + i]
  local c = string.sub(op, 1, 1)
  if c == 's' then
    redis.call('SET', k, string.sub(op, 2), 'PX', ttl)
  elseif c == 'd' then
    redis.call('DEL', k)
  else
    redis.call('PEXPIRE', k, ttl)
  end
end
local undo = 'c'
local a = 13 + 2 * n
local nadd = tonumber(ARGV[2])
for i = 1, nadd do
  local had = redis.call('ZSCORE', KEYS[2], ARGV[a + 1])
  if had then undo = undo .. '|' .. i .. ':' .. had end
  redis.call('ZADD', KEYS[2], ARGV[a], ARGV[a + 1])
  a = a + 2
end
for i = 1, tonumber(ARGV[3]) do
  local had = redis.call('ZSCORE', KEYS[2], ARGV[a])
  if had then
    undo = undo .. '|' .. (nadd + i) .. ':' .. had
    redis.call('ZREM', KEYS[2], ARGV[a])
  end
  a = a + 1
end
redis.call('SET', KEYS[3], undo, 'PX', ARGV[4])
local out = {1}
for j = 1, np do
  local t = redis.call('HGETALL', KEYS[3 + n + j])
  local away = 0
  for f = 1, #t, 2 do
    if t[f] ~= ARGV[8] and redis.call('EXISTS', ARGV[7] .. ':node:' .. t[f]) == 1 then
      away = 1
      break
    end
  end
  out[j + 1] = away
end
if a <= #ARGV then
  for i = a + 1, #ARGV, 2 do
    if out[tonumber(ARGV[i]) + 1] == 1 then redis.call('SPUBLISH', ARGV[a], ARGV[i + 1]) end
  end
end
return out
"
);

/// Undoes one [`CAS`] commit whose answer never came (see the module docs),
/// or makes sure it never applies. No call rule: it compares and restores
/// what the node computed for that commit.
///
/// KEYS: the commit's undo record `p:commit:{token}`, the timer set, then
/// every record the commit set or deleted.
/// ARGV: the undo record's TTL (ms), the records' TTL (ms), timers the commit
/// added, timers it removed; then for each record the value the commit wrote
/// and the value it replaced (each `""` absent, else `"="` .. value); then
/// the members the commit added; then those it removed.
///
/// Leaves a tombstone in place of the undo record (`"u"`, `"n"` or `"s"`,
/// for the answer given), so a commit arriving later is refused and a
/// repeated undo answers the same. Returns 1 (undone), 2 (never applied:
/// now it never will), 3 (applied, and the records have moved on since:
/// left as they are).
pub const UNDO: &str = r"
local m = redis.call('GET', KEYS[1])
if m == 'u' then return 1 elseif m == 'n' then return 2 elseif m == 's' then return 3 end
if not m then
  redis.call('SET', KEYS[1], 'n', 'PX', ARGV[1])
  return 2
end
local n = #KEYS - 2
for i = 1, n do
  local wrote = ARGV[3 + 2 * i]
  local have = redis.call('GET', KEYS[2 + i])
  local moved
  if wrote == '' then
    moved = have ~= false
  else
    moved = (not have) or ('=' .. have) ~= wrote
  end
  if moved then
    redis.call('SET', KEYS[1], 's', 'PX', ARGV[1])
    return 3
  end
end
for i = 1, n do
  local before = ARGV[4 + 2 * i]
  if before == '' then
    redis.call('DEL', KEYS[2 + i])
  else
    redis.call('SET', KEYS[2 + i], string.sub(before, 2), 'PX', ARGV[2])
  end
end
local prior = {}
for i, score in string.gmatch(m, '|(%d+):([^|]+)') do
  prior[tonumber(i)] = score
end
local base = 4 + 2 * n
for i = tonumber(ARGV[3]) + tonumber(ARGV[4]), 1, -1 do
  local member = ARGV[base + i]
  if prior[i] then
    redis.call('ZADD', KEYS[2], prior[i], member)
  else
    redis.call('ZREM', KEYS[2], member)
  end
end
redis.call('SET', KEYS[1], 'u', 'PX', ARGV[1])
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
for i = nb + 1, nb + np do out[#out + 1] = live_sum(KEYS[i], ARGV[1]) end
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
    /// Commits refused because a record changed since it was read, or (a
    /// likely-new transition's first commit) existed; each was retried.
    pub conflicts: u64,
    /// `EVALSHA`s of the claim script.
    pub claims: u64,
    /// `EVALSHA`s of the undo script (none unless a commit's answer was lost).
    pub undos: u64,
    /// `SCRIPT LOAD`s.
    pub script_loads: u64,
}

impl RoundTrips {
    /// Every round trip.
    pub fn total(&self) -> u64 {
        self.loads + self.commits + self.claims + self.undos + self.script_loads
    }
}

#[derive(Debug, Default)]
struct Counters {
    loads: AtomicU64,
    commits: AtomicU64,
    conflicts: AtomicU64,
    claims: AtomicU64,
    undos: AtomicU64,
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
    /// Applied; the recipients with no socket on another live node.
    Done(BTreeSet<UserId>),
    Conflict,
    /// The charge was refused (wait, microseconds): nothing written.
    Limited(i64),
    /// The user required online has no socket on a live node: nothing written.
    Offline,
}

/// A rule's run: its value and registry, or the records it needs that
/// were not loaded.
type Evaluated<T> = Result<(T, Registry), BTreeSet<RecordKey>>;

/// What one transition commits, computed from its rule's run.
struct Plan {
    /// Records set (`Some`) or deleted (`None`).
    writes: BTreeMap<RecordKey, Option<String>>,
    /// Timers to add: (due, Unix ms; member).
    added: Vec<(u64, String)>,
    /// Timer members to remove (ended calls' ring timers, the fired one).
    removals: Vec<String>,
    /// Calls the rule ended, and why.
    ended: Vec<(CallId, Reason)>,
}

impl Plan {
    /// The plan of a rule's run on `fetched`; `done` is a timer member to
    /// remove with it (the timer being fired).
    fn of<T: Effects>(
        value: &mut T,
        registry: &mut Registry,
        fetched: &BTreeMap<RecordKey, Option<String>>,
        done: Option<&str>,
    ) -> Self {
        let now = now_ms();
        let added = value
            .take_timers()
            .iter()
            .filter_map(|(after, timer)| Some((now.saturating_add(ms(*after)), member(timer)?)))
            .collect();
        let ended = registry.take_ended();
        let writes = diff(fetched, &registry.records()).into_iter().collect();
        let mut removals: Vec<String> = ended
            .iter()
            .filter_map(|(id, _)| member(&Timer::RingTimeout(*id)))
            .collect();
        removals.extend(done.map(str::to_owned));
        Self {
            writes,
            added,
            removals,
            ended,
        }
    }

    /// Nothing to commit: a read, or a refusal.
    fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.added.is_empty() && self.removals.is_empty()
    }
}

/// What [`UNDO`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undone {
    /// The commit had applied; its records and timers are as they were before it.
    Undone,
    /// The commit had not applied, and now never will.
    NeverApplied,
    /// The commit had applied and another transition has since changed one
    /// of its records: left as it is.
    Superseded,
}

/// One [`UNDO`] run, computed alongside the commit it undoes.
#[derive(Debug, Clone)]
struct UndoPlan {
    keys: Vec<String>,
    args: Vec<String>,
    /// When the commit relayed its events: the adapter's channel and the
    /// messages that withdraw the calls it created ([`withdrawal`]), sent
    /// once the undo finds the commit had applied.
    withdraw: Option<(String, Vec<Vec<u8>>)>,
}

/// This node's undos not yet answered (see the module docs).
#[derive(Debug)]
struct Undos {
    redis: Redis,
    script: Script,
    counters: Arc<Counters>,
    pending: Mutex<BTreeMap<u64, (Arc<UndoPlan>, Instant)>>,
    any: AtomicBool,
    next: AtomicU64,
}

impl Undos {
    fn new(redis: Redis, counters: Arc<Counters>) -> Self {
        Self {
            redis,
            script: Script::new(UNDO),
            counters,
            pending: Mutex::new(BTreeMap::new()),
            any: AtomicBool::new(false),
            next: AtomicU64::new(0),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Arc<UndoPlan>, Instant)>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Undoes a commit whose answer never came (sent at `sent`): tried at
    /// once, then every [`UNDO_RETRY`] while Redis does not answer, in a
    /// task of its own; and first thing in every transition of this node
    /// meanwhile ([`Self::settle`]).
    fn start(self: &Arc<Self>, plan: UndoPlan, sent: Instant) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let give_up = sent + UNDO_WINDOW.saturating_sub(UNDO_MARGIN);
        let plan = Arc::new(plan);
        {
            let mut pending = self.pending();
            pending.insert(id, (plan.clone(), give_up));
            self.any.store(true, Ordering::Release);
        }
        let undos = self.clone();
        tokio::spawn(async move {
            loop {
                if !undos.pending().contains_key(&id) || undos.try_once(id, &plan).await.is_ok() {
                    return;
                }
                if Instant::now() + UNDO_RETRY >= give_up {
                    if undos.remove(id) {
                        tracing::error!(
                            "a commit whose answer was lost could not be undone within the undo \
                             window; it may stand"
                        );
                    }
                    return;
                }
                tokio::time::sleep(UNDO_RETRY).await;
            }
        });
    }

    fn remove(&self, id: u64) -> bool {
        let mut pending = self.pending();
        let removed = pending.remove(&id).is_some();
        self.any.store(!pending.is_empty(), Ordering::Release);
        removed
    }

    /// One run of the undo `id`; `Err` when Redis did not answer.
    async fn try_once(&self, id: u64, plan: &UndoPlan) -> Result<(), ClusterError> {
        self.counters.undos.fetch_add(1, Ordering::Relaxed);
        let answer: i64 = eval(
            &self.redis,
            &self.counters,
            &self.script,
            plan.keys.clone(),
            plan.args.clone(),
        )
        .await?;
        // Whoever got the answer first (the task or a transition) tells it.
        if self.remove(id) {
            match undone(answer) {
                Some(Undone::Undone) => {
                    tracing::info!("a commit whose answer was lost had applied: undone");
                    self.withdraw(plan).await;
                }
                Some(Undone::NeverApplied) => {
                    tracing::info!(
                        "a commit whose answer was lost had not applied: refused for good"
                    );
                }
                Some(Undone::Superseded) => tracing::warn!(
                    "a commit whose answer was lost had applied and was built on before it could \
                     be undone: left as it is"
                ),
                None => {
                    tracing::error!("the undo script answered out of range; commit left as it is")
                }
            }
        }
        Ok(())
    }

    /// Tells the users an undone commit rang, through the adapter, that
    /// those calls are over: its events were published by the commit
    /// itself, before its answer was lost. Best effort.
    async fn withdraw(&self, plan: &UndoPlan) {
        use fred::interfaces::PubsubInterface;
        let Some((channel, messages)) = &plan.withdraw else {
            return;
        };
        for message in messages {
            let sent: Result<i64, _> = self
                .redis
                .client()
                .spublish(channel.as_str(), message.as_slice())
                .await;
            if sent.is_err() {
                tracing::warn!("an undone call could not be withdrawn from those it rang");
            }
        }
    }

    /// Runs every undo still pending on this node, so no transition of this
    /// node builds on a commit that may yet be undone. Free when none is.
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] while one gets no answer.
    async fn settle(&self) -> Result<(), ClusterError> {
        if !self.any.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = Instant::now();
        let due: Vec<(u64, Arc<UndoPlan>)> = self
            .pending()
            .iter()
            .filter(|(_, (_, give_up))| now < *give_up)
            .map(|(id, (plan, _))| (*id, plan.clone()))
            .collect();
        for (id, plan) in due {
            self.try_once(id, &plan).await?;
        }
        Ok(())
    }
}

/// The cluster's call state (see the module docs).
#[derive(Debug)]
pub struct RedisCalls {
    redis: Redis,
    policy: RwLock<CallPolicy>,
    cas: Script,
    claim: Script,
    gate: Script,
    undos: Arc<Undos>,
    lease_key: String,
    timers_key: String,
    counters: Arc<Counters>,
    /// How this node's events reach other nodes' sockets from the commit
    /// itself; until set, they go through the adapter once it answered.
    relay: std::sync::OnceLock<Relay>,
}

fn now_ms() -> u64 {
    u64::try_from(super::unix_ms()).unwrap_or(0)
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

/// A record as the commit expects it: `""` absent, else `"="` .. value.
fn expected(value: Option<&String>) -> String {
    value.map_or_else(String::new, |v| format!("={v}"))
}

/// What the commit does with a changed record: `"d"` delete, `"s"` .. value set.
fn action(now: Option<&String>) -> String {
    now.map_or_else(|| "d".into(), |v| format!("s{v}"))
}

fn member(timer: &Timer) -> Option<String> {
    serde_json::to_string(timer).ok()
}

fn undone(answer: i64) -> Option<Undone> {
    match answer {
        1 => Some(Undone::Undone),
        2 => Some(Undone::NeverApplied),
        3 => Some(Undone::Superseded),
        _ => None,
    }
}

/// A script argument: text, or bytes (an adapter message).
trait Arg: Into<fred::types::Value> + Clone + Send {}

impl Arg for String {}
impl Arg for fred::types::Value {}

/// `EVALSHA`, loading the script first when this node has not yet, and
/// again when Redis lost it (`NOSCRIPT` after a restart).
async fn eval<R: fred::types::FromValue, A: Arg>(
    redis: &Redis,
    counters: &Counters,
    script: &Script,
    keys: Vec<String>,
    args: Vec<A>,
) -> Result<R, ClusterError> {
    let client = redis.client();
    if let Some(sha) = script.sha() {
        match client.evalsha(sha, keys.clone(), args.clone()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {}
            other => return Ok(other?),
        }
    }
    counters.script_loads.fetch_add(1, Ordering::Relaxed);
    let sha: String = client.script_load(script.lua).await?;
    script.set_sha(sha.clone());
    Ok(client.evalsha(sha, keys, args).await?)
}

impl RedisCalls {
    /// The store of node `redis.node()`.
    pub fn new(redis: Redis, policy: CallPolicy) -> Self {
        let lease_key = redis.key(&format!("node:{}", redis.node()));
        let timers_key = redis.key("timers");
        let counters = Arc::new(Counters::default());
        let undos = Arc::new(Undos::new(redis.clone(), counters.clone()));
        Self {
            redis,
            policy: RwLock::new(policy),
            cas: Script::new(CAS),
            claim: Script::new(CLAIM),
            gate: Script::new(GATE),
            undos,
            lease_key,
            timers_key,
            counters,
            relay: std::sync::OnceLock::new(),
        }
    }

    /// From now on, commits publish this node's events for recipients on
    /// other nodes themselves ([`crate::cluster::relay`]). Set once.
    pub fn relay_through(&self, relay: Relay) {
        let _ = self.relay.set(relay);
    }

    /// The adapter messages of `value`'s events, with their recipient's
    /// 1-based index in `recipients`; `None` (nothing relayed: every event
    /// goes through the adapter) without a relay, or when one event does
    /// not encode.
    fn relayed<T: Effects>(
        &self,
        value: &T,
        recipients: &BTreeSet<UserId>,
    ) -> Option<Vec<(usize, Vec<u8>)>> {
        let relay = self.relay.get()?;
        let index: BTreeMap<&UserId, usize> = recipients
            .iter()
            .enumerate()
            .map(|(i, u)| (u, i + 1))
            .collect();
        value
            .emits()
            .iter()
            .filter_map(|e| match &e.to {
                To::User(u) | To::UserExcept(u, _) => Some((u, e)),
                To::Socket(_) => None,
            })
            .map(|(u, e)| {
                let message = relay.encode(rooms::user_room(u), e.event, &e.payload)?;
                Some((*index.get(u)?, message))
            })
            .collect()
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
            undos: c.undos.load(Ordering::Relaxed),
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
    /// was taken), or by the commit when the scope is
    /// [`Scope::likely_new`](crate::signaling::call_store::Scope) and the
    /// speculative commit applies.
    pub(crate) async fn run_gated<T: Effects>(
        &self,
        scope: &Scope,
        f: impl Fn(&mut Registry) -> T,
        done: Option<&str>,
        gate: Option<&Gate>,
    ) -> Result<Done<T>, GateError> {
        self.undos.settle().await?;
        if scope.likely_new
            && let Some(applied) = self.speculate(scope, &f, done, gate).await?
        {
            return Ok(applied);
        }
        // A charge alone is taken by the commit (no script for the read);
        // with a user required online, by the gated first read.
        let (mut gate, charge) = match gate {
            Some(g) if g.online.is_none() => (None, g.charge.as_ref()),
            other => (other, None),
        };
        for attempt in 0..MAX_ATTEMPTS {
            let mut fetched = match gate.take() {
                Some(g) if !g.is_empty() => self.load_gated(scope, g).await?,
                _ => self.load(scope).await?,
            };
            let mut widenings = 0;
            let (mut value, mut registry) = loop {
                match Self::evaluate(self.policy(), &f, &fetched)? {
                    Ok(ran) => break ran,
                    Err(missing) => {
                        if widenings == MAX_WIDENINGS {
                            tracing::error!("call transition needs ever more records; refused");
                            return Err(ClusterError::Unavailable.into());
                        }
                        widenings += 1;
                        self.mget(&missing, &mut fetched).await?;
                    }
                }
            };
            let plan = Plan::of(&mut value, &mut registry, &fetched, done);
            if plan.is_empty() {
                // A read, or a refusal: nothing to commit, so the charge is
                // taken on its own.
                if let Some(charge) = charge {
                    rates::take(&self.redis, vec![charge.clone()])
                        .await
                        .map_err(|e| match e {
                            rates::Limited::Wait(wait) => GateError::Limited(wait),
                            rates::Limited::Cluster(e) => GateError::Cluster(e),
                        })?;
                }
                return Ok(Done {
                    value,
                    ended: plan.ended,
                });
            }
            let recipients = value.recipients();
            let relayed = self.relayed(&value, &recipients);
            match self
                .commit(&fetched, &plan, recipients, relayed, charge, None)
                .await?
            {
                Commit::Done(here_only) => {
                    value.here_only(here_only);
                    return Ok(Done {
                        value,
                        ended: plan.ended,
                    });
                }
                Commit::Limited(wait) => return Err(GateError::Limited(rates::wait_of(wait))),
                // Nobody was required online by this commit.
                Commit::Offline => return Err(ClusterError::Unavailable.into()),
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

    /// A likely-new transition committed without reading: the rule runs on
    /// the scope's records taken as absent, and the commit checks that they
    /// are, with the whole gate (charge, then the user required online).
    /// `None` when that does not apply (a record exists, the rule needs
    /// more, or commits nothing): then nothing was charged or written, and
    /// the transition runs as usual.
    async fn speculate<T: Effects>(
        &self,
        scope: &Scope,
        f: &impl Fn(&mut Registry) -> T,
        done: Option<&str>,
        gate: Option<&Gate>,
    ) -> Result<Option<Done<T>>, GateError> {
        let fetched: BTreeMap<RecordKey, Option<String>> = Self::scope_keys(scope)
            .into_iter()
            .map(|k| (k, None))
            .collect();
        let Ok((mut value, mut registry)) = Self::evaluate(self.policy(), f, &fetched)? else {
            return Ok(None);
        };
        let plan = Plan::of(&mut value, &mut registry, &fetched, done);
        if plan.is_empty() {
            return Ok(None);
        }
        let recipients = value.recipients();
        let relayed = self.relayed(&value, &recipients);
        let charge = gate.and_then(|g| g.charge.as_ref());
        let online = gate.and_then(|g| g.online.as_ref());
        match self
            .commit(&fetched, &plan, recipients, relayed, charge, online)
            .await?
        {
            Commit::Done(here_only) => {
                value.here_only(here_only);
                Ok(Some(Done {
                    value,
                    ended: plan.ended,
                }))
            }
            Commit::Limited(wait) => Err(GateError::Limited(rates::wait_of(wait))),
            Commit::Offline => Err(GateError::Offline),
            Commit::Conflict => {
                self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    /// Runs the rule on a fresh [`Registry`] built from `fetched`: its value
    /// and registry, or the records it turned out to need that are not
    /// loaded (the index records of a call it ended, the parties' records
    /// of a call it created; a new call's room and group are checked absent
    /// by the commit).
    fn evaluate<T>(
        policy: CallPolicy,
        f: &impl Fn(&mut Registry) -> T,
        fetched: &BTreeMap<RecordKey, Option<String>>,
    ) -> Result<Evaluated<T>, ClusterError> {
        let mut registry = Registry::from_records(policy, fetched).map_err(corrupt)?;
        let before = registry.calls_with_index_keys();
        let value = f(&mut registry);
        let after = registry.calls_with_index_keys();
        let mut missing = BTreeSet::new();
        for (id, keys) in &before {
            if !after.contains_key(id) {
                missing.extend(keys.iter().filter(|k| !fetched.contains_key(*k)).cloned());
            }
        }
        for (id, keys) in &after {
            if !before.contains_key(id) {
                missing.extend(
                    keys.iter()
                        .filter(|k| matches!(k, RecordKey::User(_)) && !fetched.contains_key(*k))
                        .cloned(),
                );
            }
        }
        Ok(if missing.is_empty() {
            Ok((value, registry))
        } else {
            Err(missing)
        })
    }

    async fn commit(
        &self,
        fetched: &BTreeMap<RecordKey, Option<String>>,
        plan: &Plan,
        recipients: BTreeSet<UserId>,
        relayed: Option<Vec<(usize, Vec<u8>)>>,
        charge: Option<&Charge>,
        online: Option<&UserId>,
    ) -> Result<Commit, ClusterError> {
        let Plan {
            writes,
            added,
            removals,
            ..
        } = plan;
        let token = format!("{:032x}", rand::random::<u128>());
        let undo_key = self.redis.key(&format!("commit:{token}"));
        let mut keys = vec![
            self.lease_key.clone(),
            self.timers_key.clone(),
            undo_key.clone(),
        ];
        let mut args = vec![
            ms(RECORD_TTL).to_string(),
            added.len().to_string(),
            removals.len().to_string(),
            ms(UNDO_WINDOW).to_string(),
            recipients.len().to_string(),
            usize::from(charge.is_some()).to_string(),
            self.redis.prefix().to_owned(),
            self.redis.node().to_owned(),
            charge.map_or(0, |c| c.period).to_string(),
            charge.map_or(0, |c| c.tau).to_string(),
            usize::from(online.is_some()).to_string(),
            self.redis.deadline_ms().to_string(),
        ];
        // Every record read, with what was read; then every new record, absent.
        for (key, was) in fetched {
            keys.push(self.key(key));
            args.push(expected(was.as_ref()));
            args.push(match writes.get(key) {
                Some(now) => action(now.as_ref()),
                None => "k".into(),
            });
        }
        for (key, now) in writes.iter().filter(|(k, _)| !fetched.contains_key(*k)) {
            keys.push(self.key(key));
            args.push(String::new());
            args.push(action(now.as_ref()));
        }
        for (score, m) in added {
            args.push(score.to_string());
            args.push(m.clone());
        }
        args.extend(removals.iter().cloned());
        keys.extend(
            recipients
                .iter()
                .map(|u| self.redis.key(&format!("conn:user:{u}"))),
        );
        keys.extend(charge.map(|c| c.key.clone()));
        keys.extend(online.map(|u| self.redis.key(&format!("conn:user:{u}"))));
        let mut argv: Vec<fred::types::Value> = args.into_iter().map(Into::into).collect();
        let relaying = match (relayed, self.relay.get()) {
            (Some(messages), Some(relay)) => {
                argv.push(relay.channel().into());
                for (recipient, message) in messages {
                    argv.push(recipient.to_string().into());
                    argv.push(fred::types::Value::Bytes(message.into()));
                }
                true
            }
            _ => false,
        };
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        match self.eval::<Vec<i64>, _>(&self.cas, keys, argv).await {
            Ok(answer) => match answer.split_first() {
                // Committed, and the commit published the events for the
                // recipients elsewhere: this node delivers to its own sockets.
                Some((1, away)) if relaying && away.len() == recipients.len() => {
                    Ok(Commit::Done(recipients))
                }
                // Committed. Should the presence flags not match (they
                // always do), every event goes through the adapter.
                Some((1, away)) if !relaying && away.len() == recipients.len() => Ok(Commit::Done(
                    recipients
                        .into_iter()
                        .zip(away)
                        .filter(|(_, away)| **away == 0)
                        .map(|(u, _)| u)
                        .collect(),
                )),
                Some((1, _)) => Ok(Commit::Done(BTreeSet::new())),
                Some((0, _)) => Ok(Commit::Conflict),
                Some((-1, _)) => Err(ClusterError::Fenced),
                Some((-3, wait)) => Ok(Commit::Limited(wait.first().copied().unwrap_or(1))),
                Some((-4, _)) => Ok(Commit::Offline),
                // Redis ran it past its deadline: nothing applied, and by then
                // this node has stopped waiting (or its clock is off by more
                // than a quarter of the timeout).
                Some((-5, _)) => Err(ClusterError::Unavailable),
                // -2: refused by this very commit's undo, which only runs once
                // this call has returned; never seen, and nothing applied anyway.
                _ => Err(ClusterError::Unavailable),
            },
            Err(e) => {
                // No answer (a timeout, a lost connection): the commit may have
                // applied, or may still. The sender hears `unavailable`, so it
                // must not stand.
                let mut undo = self.undo_plan(undo_key, fetched, writes, added, removals);
                if relaying {
                    undo.withdraw = self.withdrawals(fetched, writes);
                }
                self.undos.start(undo, sent);
                Err(e)
            }
        }
    }

    /// The adapter messages that withdraw the calls a commit created (see
    /// [`UndoPlan::withdraw`]).
    fn withdrawals(
        &self,
        fetched: &BTreeMap<RecordKey, Option<String>>,
        writes: &BTreeMap<RecordKey, Option<String>>,
    ) -> Option<(String, Vec<Vec<u8>>)> {
        let relay = self.relay.get()?;
        let messages = writes
            .iter()
            .filter(|(k, _)| {
                matches!(k, RecordKey::Call(_)) && fetched.get(*k).is_none_or(Option::is_none)
            })
            .filter_map(|(_, now)| now.as_deref())
            .flat_map(withdrawal)
            .filter_map(|(user, body)| {
                relay.encode(
                    rooms::user_room(&user),
                    crate::signaling::events::VIDEO_CALL_ENDED,
                    &body,
                )
            })
            .collect();
        Some((relay.channel().to_owned(), messages))
    }

    /// The undo of a commit (built only when its answer never came): every
    /// record it sets or deletes, with the value it writes and the one it
    /// replaces; the timers it adds and removes.
    fn undo_plan(
        &self,
        undo_key: String,
        fetched: &BTreeMap<RecordKey, Option<String>>,
        writes: &BTreeMap<RecordKey, Option<String>>,
        added: &[(u64, String)],
        removals: &[String],
    ) -> UndoPlan {
        let mut undo = UndoPlan {
            withdraw: None,
            keys: vec![undo_key, self.timers_key.clone()],
            args: vec![
                ms(UNDO_WINDOW).to_string(),
                ms(RECORD_TTL).to_string(),
                added.len().to_string(),
                removals.len().to_string(),
            ],
        };
        for (key, now) in writes {
            undo.keys.push(self.key(key));
            undo.args.push(expected(now.as_ref()));
            undo.args
                .push(expected(fetched.get(key).and_then(Option::as_ref)));
        }
        undo.args.extend(added.iter().map(|(_, m)| m.clone()));
        undo.args.extend(removals.iter().cloned());
        undo
    }

    /// `EVALSHA`, loading the script first when this node has not yet, and
    /// again when Redis lost it (`NOSCRIPT` after a restart).
    async fn eval<R: fred::types::FromValue, A: Arg>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<A>,
    ) -> Result<R, ClusterError> {
        eval(&self.redis, &self.counters, script, keys, args).await
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
