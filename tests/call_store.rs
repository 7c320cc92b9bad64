//! The call-state contract: every case runs on the in-memory store and on
//! the Redis store (a real `redis-server`), with the same rules and the same
//! expectations; then cases only a cluster has: racing nodes, a timer that
//! fires after its node died, fencing, round trips per transition, cleanup,
//! a Redis restart and Redis down.
//!
//! Redis: `CALLGATE_TEST_REDIS_URL` when set (each test works under its own
//! random key prefix); otherwise each test starts its own throwaway
//! `redis-server` (`CALLGATE_TEST_REDIS_SERVER`, else the one on the PATH;
//! `--save '' --appendonly no`) on a free loopback port and kills it at the
//! end. Two tests always start their own (one stops Redis, one reads its
//! command statistics). When Redis cannot run, the Redis tests (all named
//! `redis_*`, so `--skip redis_` leaves them out) fail with the reason,
//! unless `CALLGATE_TEST_REDIS=skip`, which prints them SKIPPED.
//!
//! ```text
//! cargo test --test call_store
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    missing_docs
)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callgate::auth::TokenKeys;
use callgate::cluster::ClusterError;
use callgate::cluster::Redis;
use callgate::cluster::call_state::{CAS, ClaimedTimer, RECORD_TTL, RoundTrips, UNDO, UNDO_WINDOW};
use callgate::cluster::rates::Charge;
use callgate::config::{Config, Overrides};
use callgate::domain::call::Party;
use callgate::domain::{CallId, DisplayName, GroupId, GroupName, RoomName, UserId};
use callgate::error::ErrorCode;
use callgate::http::client_ip::TrustedProxies;
use callgate::limits::Limits;
use callgate::metrics::Metrics;
use callgate::policy::{CallPolicy, Policy};
use callgate::signaling::Hub;
use callgate::signaling::call_store::{CallStore, Done, Gate, GateError, Scope};
use callgate::signaling::events;
use callgate::signaling::registry::{Body, Origin, Outcome, Reason, Refusal, Timer, To};
use callgate::signaling::rooms;
use callgate::signaling::timers::{self, Presence};
use callgate::store::{EmbeddedStore, Store};
use fred::interfaces::{
    ClientLike, HashesInterface, KeysInterface, LuaInterface, SortedSetsInterface,
};
use fred::types::{ClusterHash, CustomCommand};
use secrecy::SecretString;
use serde_json::{Value, json};
use socketioxide::socket::Sid;

const REDIS_URL_VAR: &str = "CALLGATE_TEST_REDIS_URL";

fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::FirstKey, false)
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// A throwaway redis-server, killed when dropped (also on a panic).
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn redis_server_binary() -> Option<String> {
    if let Ok(bin) = std::env::var("CALLGATE_TEST_REDIS_SERVER")
        && !bin.trim().is_empty()
    {
        return Some(bin);
    }
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(str::to_owned)
        .or_else(|| {
            Command::new("redis-server")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .ok()
                .filter(std::process::ExitStatus::success)
                .map(|_| "redis-server".to_owned())
        })
}

impl Server {
    fn start_on(port: u16) -> Result<Self, String> {
        let bin = redis_server_binary().ok_or("redis-server is not installed")?;
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server did not start: {e}"))?;
        let server = Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("redis-server did not listen within 10 s".into())
    }
}

fn policy() -> CallPolicy {
    let mut p = Policy::builtin().expect("builtin policy").calls;
    // Grace timers due at once, so the timer cases need no waiting.
    p.ringing_grace_secs = 0;
    p.reconnect_grace_secs = 0;
    p
}

/// Where a case runs: the memory store, or Redis with any number of nodes.
struct Env {
    kind: Kind,
    policy: CallPolicy,
}

enum Kind {
    Memory(Arc<CallStore>),
    Redis {
        url: String,
        prefix: String,
        server: Option<Server>,
        nodes: Vec<(Redis, Arc<CallStore>)>,
        /// Nodes ever started (a node's id is never reused).
        started: usize,
    },
}

impl Env {
    fn memory() -> Self {
        Self {
            kind: Kind::Memory(Arc::new(CallStore::memory(policy()))),
            policy: policy(),
        }
    }

    /// `None` (SKIPPED, printed) only when `CALLGATE_TEST_REDIS=skip` allows it.
    async fn start_redis(case: &str) -> Option<Self> {
        Self::start_redis_with(case, false).await
    }

    /// `private`: a redis-server of its own even when `CALLGATE_TEST_REDIS_URL`
    /// is set (a test that stops Redis, or reads its command statistics).
    async fn start_redis_with(case: &str, private: bool) -> Option<Self> {
        let shared = std::env::var(REDIS_URL_VAR)
            .ok()
            .filter(|u| !u.trim().is_empty() && !private);
        let (url, server) = match shared {
            Some(url) => (url, None),
            None => match Server::start_on(free_port()) {
                Ok(s) => (s.url.clone(), Some(s)),
                Err(why) => {
                    if std::env::var("CALLGATE_TEST_REDIS").as_deref() == Ok("skip") {
                        eprintln!(
                            "SKIPPED redis_store::{case}: {why} (and {REDIS_URL_VAR} is not set)"
                        );
                        return None;
                    }
                    panic!(
                        "redis_store::{case} cannot run: {why}, and {REDIS_URL_VAR} is not set \
                         (CALLGATE_TEST_REDIS=skip reports it SKIPPED instead)"
                    );
                }
            },
        };
        let prefix = format!("cgtest{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let mut env = Self {
            kind: Kind::Redis {
                url,
                prefix,
                server,
                nodes: Vec::new(),
                started: 0,
            },
            policy: policy(),
        };
        env.add_node().await;
        Some(env)
    }

    fn with_policy(mut self, f: impl FnOnce(&mut CallPolicy)) -> Self {
        f(&mut self.policy);
        match &self.kind {
            Kind::Memory(s) => s.set_policy(self.policy.clone()),
            Kind::Redis { nodes, .. } => {
                for (_, s) in nodes {
                    s.set_policy(self.policy.clone());
                }
            }
        }
        self
    }

    fn is_redis(&self) -> bool {
        matches!(self.kind, Kind::Redis { .. })
    }

    async fn connect(url: &str, prefix: &str, node: &str) -> Redis {
        let mut cfg = Config::load_from(None, &Overrides::default(), &[])
            .expect("default config")
            .cluster;
        cfg.redis_url = SecretString::from(url.to_owned());
        cfg.key_prefix = prefix.to_owned();
        Redis::connect(&cfg, node.to_owned())
            .await
            .expect("redis connects")
    }

    /// A new node (its own connection and store), with its lease in place.
    async fn add_node(&mut self) -> usize {
        let Kind::Redis {
            url,
            prefix,
            nodes,
            started,
            ..
        } = &mut self.kind
        else {
            panic!("nodes are a cluster thing");
        };
        *started += 1;
        let node = format!("n{started}");
        let redis = Self::connect(url, prefix, &node).await;
        let () = redis
            .client()
            .set(
                redis.key(&format!("node:{node}")),
                "lease",
                None,
                None,
                false,
            )
            .await
            .expect("lease");
        let store = Arc::new(CallStore::redis(redis.clone(), self.policy.clone()));
        nodes.push((redis, store));
        nodes.len() - 1
    }

    fn store(&self) -> &CallStore {
        self.node(0)
    }

    fn node(&self, i: usize) -> &CallStore {
        match &self.kind {
            Kind::Memory(s) => s,
            Kind::Redis { nodes, .. } => &nodes[i].1,
        }
    }

    fn redis(&self, i: usize) -> &Redis {
        match &self.kind {
            Kind::Redis { nodes, .. } => &nodes[i].0,
            Kind::Memory(_) => panic!("no Redis in memory"),
        }
    }

    /// Timers due now: in memory, the ones the outcome asked for (a tokio
    /// task would fire them); in Redis, whatever a poll claims (waiting up
    /// to `wait` for them to come due).
    async fn due(
        &self,
        node: usize,
        asked: &[(Duration, Timer)],
        wait: Duration,
    ) -> Vec<ClaimedTimer> {
        match &self.kind {
            Kind::Memory(_) => asked
                .iter()
                .map(|(_, t)| ClaimedTimer {
                    member: serde_json::to_string(t).expect("timer json"),
                    timer: t.clone(),
                })
                .collect(),
            Kind::Redis { .. } => {
                let deadline = Instant::now() + wait;
                loop {
                    let claimed = self.node(node).claim_due().await.expect("claim");
                    if !claimed.is_empty() || Instant::now() >= deadline {
                        return claimed;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Records left (calls, users, rooms, groups) and timers pending.
    async fn leftovers(&self) -> (usize, usize) {
        match &self.kind {
            Kind::Memory(s) => {
                let (c, r, u, g, e) = s.local(|r| r.index_sizes()).expect("memory");
                (c + r + u + g + e, 0)
            }
            Kind::Redis { prefix, .. } => {
                let client = self.redis(0).client();
                let mut records = 0;
                for pattern in ["call:*", "user:*", "room:*", "group:*"] {
                    let keys: Vec<String> = client
                        .custom(cmd("KEYS"), vec![format!("{prefix}:{pattern}")])
                        .await
                        .expect("keys");
                    records += keys.len();
                }
                let timers: usize = client
                    .zcard(format!("{prefix}:timers"))
                    .await
                    .expect("zcard");
                (records, timers)
            }
        }
    }

    async fn round_trips(&self, node: usize) -> RoundTrips {
        self.node(node).round_trips().unwrap_or_default()
    }
}

fn party(n: u8) -> Party {
    Party {
        id: UserId::parse(&format!("6860e2e85547033af89987{n:02x}")).expect("id"),
        name: DisplayName::parse(&format!("User {n}")).expect("name"),
    }
}

fn origin() -> Origin {
    Origin {
        socket: Sid::new(),
        wants_ack: true,
    }
}

fn json_of(body: &Body) -> Value {
    serde_json::to_value(body).expect("json")
}

fn id_of(out: &Outcome) -> CallId {
    CallId::parse(json_of(&out.ack)["callId"].as_str().expect("callId")).expect("call id")
}

fn emitted(out: &Outcome) -> Vec<(&'static str, To, Value)> {
    out.emits
        .iter()
        .map(|e| (e.event, e.to.clone(), json_of(&e.payload)))
        .collect()
}

fn group() -> (GroupId, GroupName, Option<UserId>) {
    (
        GroupId::parse("507f1f77bcf86cd799439011").expect("group"),
        GroupName::parse("Team").expect("name"),
        None,
    )
}

/// Initiates a direct call a -> b; returns the outcome (its timers kept
/// aside: the memory store returns them, the Redis store stored them).
async fn ring(store: &CallStore, a: &Party, b: &Party, room: Option<RoomName>) -> Outcome {
    // As the initiate handler names it: likely a new call.
    let scope = Scope::user(&a.id)
        .and_user(&b.id)
        .and_room(room.as_ref())
        .likely_new();
    let o = origin();
    store
        .run(scope, |r| {
            r.initiate_direct(a.clone(), b.clone(), room.clone(), o)
        })
        .await
        .expect("store answers")
        .value
        .expect("rings")
}

async fn control(
    store: &CallStore,
    who: &Party,
    id: CallId,
    sid: Sid,
    what: &str,
) -> Result<Outcome, ErrorCode> {
    let scope = Scope::user(&who.id).and_call(Some(id));
    store
        .run(scope, |r| {
            let id = r.find(&who.id, Some(id), None)?;
            match what {
                "accept" => r.accept(who, id, sid),
                "reject" => r.reject(who, id, sid),
                "end" => r.end(who, id, false, sid),
                "end_for_all" => r.end(who, id, true, sid),
                _ => unreachable!(),
            }
        })
        .await
        .expect("store answers")
        .value
        .map_err(|refusal| refusal.error.code)
}

async fn offline(store: &CallStore, who: &Party) -> Vec<(Duration, Timer)> {
    // In cluster mode the timers went into Redis with the commit (empty here).
    store
        .run(Scope::user(&who.id), |r| r.user_went_offline(&who.id))
        .await
        .expect("store answers")
        .value
}

async fn connected(store: &CallStore, who: &Party) -> Vec<Value> {
    store
        .run(Scope::user(&who.id), |r| r.user_connected(&who.id))
        .await
        .expect("store answers")
        .value
        .iter()
        .map(json_of)
        .collect()
}

// ---------------------------------------------------------------------------
// The contract: each case on both stores
// ---------------------------------------------------------------------------

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Env::memory()).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(env) = super::Env::start_redis(stringify!($case)).await {
                        super::$case(env).await;
                    }
                }
            )*
        }
    };
}

contract!(
    a_call_rings_is_answered_and_hung_up_leaving_nothing,
    a_declined_call_ends_for_the_caller,
    a_callee_in_a_call_is_busy,
    a_redial_replaces_and_a_crossed_call_answers,
    a_room_in_use_is_refused_and_changes_nothing,
    only_parties_touch_a_call,
    a_group_call_rings_joins_declines_leaves_and_ends,
    a_member_removed_leaves_the_group_call,
    the_ring_timeout_ends_a_call_nobody_answered,
    a_participant_who_does_not_come_back_ends_the_call,
    a_participant_who_comes_back_keeps_the_call,
    calls_are_found_by_room_and_as_the_only_call,
);

async fn a_call_rings_is_answered_and_hung_up_leaving_nothing(env: Env) {
    let (a, b) = (party(1), party(2));
    let s = env.store();
    let mut rung = ring(s, &a, &b, None).await;
    let id = id_of(&rung);
    assert_eq!(json_of(&rung.ack)["state"], "ringing");
    let ev = emitted(&rung);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0, events::INCOMING_VIDEO_CALL);
    assert_eq!(ev[0].1, To::User(b.id.clone()));
    assert_eq!(ev[0].2["callId"], json!(id));
    assert_eq!(ev[0].2["callerName"], "User 1");
    assert!(rung.grant.take().is_some_and(|g| g.role.caller));
    if env.is_redis() {
        assert!(
            rung.timers.is_empty(),
            "stored with the commit, not returned"
        );
        assert_eq!(
            env.leftovers().await.1,
            1,
            "the ring timeout is in p:timers"
        );
    } else {
        assert!(matches!(rung.timers[..], [(_, Timer::RingTimeout(t))] if t == id));
    }

    let device = Sid::new();
    let accepted = control(s, &b, id, device, "accept").await.expect("accept");
    assert_eq!(json_of(&accepted.ack)["state"], "active");
    let ev = emitted(&accepted);
    assert!(
        ev.iter()
            .any(|(e, to, body)| *e == events::VIDEO_CALL_ACCEPTED
                && *to == To::User(a.id.clone())
                && body["acceptedBy"] == json!(b.id))
    );
    assert!(ev.iter().any(|(e, to, body)| *e == events::VIDEO_CALL_ENDED
        && *to == To::UserExcept(b.id.clone(), device)
        && body["reason"] == "answered_elsewhere"));
    assert_eq!(
        control(s, &b, id, Sid::new(), "accept").await.unwrap_err(),
        ErrorCode::InvalidState,
        "a second accept loses"
    );

    let ended = s
        .run(Scope::user(&a.id).and_call(Some(id)), |r| {
            r.end(&a, id, false, Sid::new())
        })
        .await
        .expect("store answers");
    assert_eq!(ended.ended, vec![(id, Reason::Hangup)]);
    let out = ended.value.expect("hang up");
    let to: Vec<To> = emitted(&out).into_iter().map(|(_, t, _)| t).collect();
    assert_eq!(to, vec![To::User(a.id.clone()), To::User(b.id.clone())]);
    assert_eq!(env.leftovers().await, (0, 0), "no record, no timer left");
}

async fn a_declined_call_ends_for_the_caller(env: Env) {
    let (a, b) = (party(1), party(2));
    let s = env.store();
    let id = id_of(&ring(s, &a, &b, None).await);
    assert_eq!(
        control(s, &a, id, Sid::new(), "reject").await.unwrap_err(),
        ErrorCode::Forbidden,
        "the caller cannot reject"
    );
    let out = control(s, &b, id, Sid::new(), "reject")
        .await
        .expect("decline");
    assert!(
        emitted(&out)
            .iter()
            .any(|(e, to, body)| *e == events::VIDEO_CALL_REJECTED
                && *to == To::User(a.id.clone())
                && body["reason"] == "declined")
    );
    assert_eq!(
        control(s, &b, id, Sid::new(), "accept").await.unwrap_err(),
        ErrorCode::NotFound
    );
    assert_eq!(env.leftovers().await, (0, 0));
}

async fn a_callee_in_a_call_is_busy(env: Env) {
    let (a, b, c) = (party(1), party(2), party(3));
    let env = env.with_policy(|p| p.busy = callgate::policy::BusyRule::Reject);
    let s = env.store();
    let id = id_of(&ring(s, &a, &b, None).await);
    control(s, &b, id, Sid::new(), "accept")
        .await
        .expect("accept");
    let o = origin();
    let refused = s
        .run(Scope::user(&c.id).and_user(&b.id), |r| {
            r.initiate_direct(c.clone(), b.clone(), None, o)
        })
        .await
        .expect("store answers")
        .value
        .expect_err("busy");
    assert_eq!(refused.error.code, ErrorCode::Busy);
    control(s, &a, id, Sid::new(), "end")
        .await
        .expect("hang up");
    ring(s, &c, &b, None).await;
}

async fn a_redial_replaces_and_a_crossed_call_answers(env: Env) {
    let (a, b) = (party(1), party(2));
    let s = env.store();
    let first = id_of(&ring(s, &a, &b, None).await);
    let redial = ring(s, &a, &b, None).await;
    let second = id_of(&redial);
    assert_ne!(first, second);
    let replaced: Vec<_> = emitted(&redial)
        .into_iter()
        .filter(|(e, _, body)| *e == events::VIDEO_CALL_ENDED && body["reason"] == "replaced")
        .collect();
    assert_eq!(replaced.len(), 2);
    assert_eq!(
        control(s, &b, first, Sid::new(), "accept")
            .await
            .unwrap_err(),
        ErrorCode::NotFound,
        "the replaced call is gone"
    );
    // b calls a back while a's call rings: it answers it.
    let crossed = ring(s, &b, &a, None).await;
    assert_eq!(id_of(&crossed), second);
    assert_eq!(json_of(&crossed.ack)["crossed"], true);
    assert_eq!(json_of(&crossed.ack)["state"], "active");
    control(s, &b, second, Sid::new(), "end")
        .await
        .expect("hang up");
    assert_eq!(env.leftovers().await, (0, 0));
}

async fn a_room_in_use_is_refused_and_changes_nothing(env: Env) {
    let (a, b, c, d) = (party(1), party(2), party(3), party(4));
    let s = env.store();
    let room = RoomName::parse("standup").expect("room");
    let id = id_of(&ring(s, &a, &b, Some(room.clone())).await);
    let o = origin();
    let scope = Scope::user(&c.id).and_user(&d.id).and_room(Some(&room));
    let refused = s
        .run(scope, |r| {
            r.initiate_direct(c.clone(), d.clone(), Some(room.clone()), o)
        })
        .await
        .expect("store answers")
        .value
        .expect_err("room in use");
    assert_eq!(refused.error.code, ErrorCode::RoomInUse);
    assert!(connected(s, &c).await.is_empty(), "c has no call");
    control(s, &a, id, Sid::new(), "end").await.expect("cancel");
    ring(s, &c, &d, Some(room)).await;
}

async fn only_parties_touch_a_call(env: Env) {
    let (a, b, m) = (party(1), party(2), party(9));
    let s = env.store();
    let id = id_of(&ring(s, &a, &b, None).await);
    for what in ["accept", "reject", "end"] {
        assert_eq!(
            control(s, &m, id, Sid::new(), what).await.unwrap_err(),
            ErrorCode::NotFound,
            "{what} by a bystander"
        );
    }
    assert_eq!(
        control(s, &a, id, Sid::new(), "accept").await.unwrap_err(),
        ErrorCode::Forbidden
    );
    let refresh = s
        .run(Scope::user(&m.id).and_call(Some(id)), |r| {
            r.refresh(&m.id, id).map(|_| ())
        })
        .await
        .expect("store answers")
        .value;
    assert!(refresh.is_err());
    assert_eq!(connected(s, &b).await.len(), 1, "the callee still rings");
}

async fn a_group_call_rings_joins_declines_leaves_and_ends(env: Env) {
    let (a, b, c, d) = (party(1), party(2), party(3), party(4));
    let s = env.store();
    let g = group();
    let invitees = vec![b.clone(), c.clone(), d.clone()];
    let scope = Scope::user(&a.id)
        .and_group(&g.0)
        .and_parties(invitees.iter().map(|p| p.id.clone()));
    let o = origin();
    let rung = s
        .run(scope.clone(), |r| {
            r.initiate_group(a.clone(), g.clone(), invitees.clone(), None, o)
        })
        .await
        .expect("store answers")
        .value
        .expect("rings");
    let id = id_of(&rung);
    let incoming: Vec<To> = emitted(&rung)
        .into_iter()
        .filter(|(e, _, _)| *e == events::INCOMING_VIDEO_CALL)
        .map(|(_, t, _)| t)
        .collect();
    assert_eq!(incoming.len(), 3);
    // A second initiate by a member returns the live call.
    let again = s
        .run(Scope::user(&b.id).and_group(&g.0), |r| {
            r.initiate_group(b.clone(), g.clone(), vec![a.clone()], None, o)
        })
        .await
        .expect("store answers")
        .value
        .expect("already active");
    assert_eq!(id_of(&again), id);
    assert_eq!(json_of(&again.ack)["alreadyActive"], true);

    let joined = control(s, &b, id, Sid::new(), "accept")
        .await
        .expect("join");
    assert!(
        emitted(&joined)
            .iter()
            .any(|(e, to, _)| *e == events::VIDEO_CALL_ACCEPTED && *to == To::User(a.id.clone()))
    );
    control(s, &c, id, Sid::new(), "reject")
        .await
        .expect("decline");
    let left = control(s, &b, id, Sid::new(), "end").await.expect("leave");
    assert!(
        emitted(&left)
            .iter()
            .any(|(e, _, _)| *e == events::GROUP_CALL_PARTICIPANT_LEFT)
    );
    control(s, &c, id, Sid::new(), "accept")
        .await
        .expect("c joins after declining");
    let ended = control(s, &a, id, Sid::new(), "end_for_all")
        .await
        .expect("end for all");
    let to: Vec<To> = emitted(&ended)
        .into_iter()
        .filter(|(e, _, _)| *e == events::VIDEO_CALL_ENDED)
        .map(|(_, t, _)| t)
        .collect();
    assert!(to.contains(&To::User(c.id.clone())));
    assert!(to.contains(&To::User(d.id.clone())), "d still rang");
    assert_eq!(env.leftovers().await, (0, 0));
}

async fn a_member_removed_leaves_the_group_call(env: Env) {
    let (a, b, c) = (party(1), party(2), party(3));
    let s = env.store();
    let g = group();
    let invitees = vec![b.clone(), c.clone()];
    let scope = Scope::user(&a.id)
        .and_group(&g.0)
        .and_parties(invitees.iter().map(|p| p.id.clone()));
    let o = origin();
    let id = id_of(
        &s.run(scope, |r| {
            r.initiate_group(a.clone(), g.clone(), invitees.clone(), None, o)
        })
        .await
        .expect("store answers")
        .value
        .expect("rings"),
    );
    control(s, &b, id, Sid::new(), "accept")
        .await
        .expect("join");
    let out = s
        .run(Scope::user(&b.id).and_group(&g.0), |r| {
            r.member_removed(&g.0, &b.id)
        })
        .await
        .expect("store answers")
        .value;
    let ev = emitted(&out);
    assert!(ev.iter().any(
        |(e, to, _)| *e == events::GROUP_CALL_PARTICIPANT_LEFT && *to == To::User(a.id.clone())
    ));
    assert!(
        ev.iter()
            .any(|(e, to, _)| *e == events::VIDEO_CALL_ENDED && *to == To::User(b.id.clone()))
    );
    assert!(
        connected(s, &b).await.len() == 1,
        "still an invitee of the live call"
    );
}

async fn the_ring_timeout_ends_a_call_nobody_answered(env: Env) {
    let (a, b) = (party(1), party(2));
    let env = env.with_policy(|p| p.ring_timeout_secs = 1);
    let s = env.store();
    let rung = ring(s, &a, &b, None).await;
    let id = id_of(&rung);
    let due = env.due(0, &rung.timers, Duration::from_secs(5)).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].timer, Timer::RingTimeout(id));
    let fired = s.fire_claimed(&due[0], false).await.expect("fires");
    assert_eq!(fired.ended, vec![(id, Reason::Timeout)]);
    let ev = emitted(&fired.value);
    assert!(ev.iter().any(|(e, to, body)| *e == events::VIDEO_CALL_ENDED
        && *to == To::User(a.id.clone())
        && body["reason"] == "timeout"));
    assert!(
        ev.iter()
            .any(|(e, to, _)| *e == events::VIDEO_CALL_MISSED && *to == To::User(b.id.clone()))
    );
    assert_eq!(env.leftovers().await, (0, 0), "the fired timer is gone too");
    // Firing again (a claim that lapsed) changes nothing.
    let again = s.fire_claimed(&due[0], false).await.expect("no-op");
    assert!(again.value.emits.is_empty() && again.ended.is_empty());
}

async fn a_participant_who_does_not_come_back_ends_the_call(env: Env) {
    let (a, b) = (party(1), party(2));
    let s = env.store();
    let id = id_of(&ring(s, &a, &b, None).await);
    control(s, &b, id, Sid::new(), "accept")
        .await
        .expect("accept");
    let asked = offline(s, &b).await;
    let due: Vec<ClaimedTimer> = env
        .due(0, &asked, Duration::from_secs(5))
        .await
        .into_iter()
        .filter(|t| matches!(t.timer, Timer::ReconnectGrace { .. }))
        .collect();
    assert_eq!(due.len(), 1, "a reconnect grace for b");
    let fired = s.fire_claimed(&due[0], false).await.expect("fires");
    assert_eq!(fired.ended, vec![(id, Reason::Disconnected)]);
    assert!(
        emitted(&fired.value)
            .iter()
            .any(|(e, to, body)| *e == events::VIDEO_CALL_ENDED
                && *to == To::User(a.id.clone())
                && body["reason"] == "disconnected")
    );
    let (records, _) = env.leftovers().await;
    assert_eq!(records, 0);
}

async fn a_participant_who_comes_back_keeps_the_call(env: Env) {
    let (a, b) = (party(1), party(2));
    let s = env.store();
    let id = id_of(&ring(s, &a, &b, None).await);
    control(s, &b, id, Sid::new(), "accept")
        .await
        .expect("accept");
    let asked = offline(s, &b).await;
    // b reconnects (anywhere) before the grace fires: activeVideoCalls.
    let calls = connected(s, &b).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["callId"], json!(id));
    assert_eq!(calls[0]["state"], "active");
    let due: Vec<ClaimedTimer> = env
        .due(0, &asked, Duration::from_secs(5))
        .await
        .into_iter()
        .filter(|t| matches!(t.timer, Timer::ReconnectGrace { .. }))
        .collect();
    assert_eq!(due.len(), 1);
    // Offline again by the time it fires, but a newer epoch: it stands down.
    let fired = s.fire_claimed(&due[0], false).await.expect("fires");
    assert!(fired.ended.is_empty() && fired.value.emits.is_empty());
    // Online: it stands down as well.
    let fired = s.fire_claimed(&due[0], true).await.expect("fires");
    assert!(fired.ended.is_empty());
    control(s, &a, id, Sid::new(), "end")
        .await
        .expect("still live");
}

async fn calls_are_found_by_room_and_as_the_only_call(env: Env) {
    let (a, b, c) = (party(1), party(2), party(3));
    let s = env.store();
    let room = RoomName::parse("Daily").expect("room");
    let id = id_of(&ring(s, &a, &b, Some(room.clone())).await);
    let lower = RoomName::parse("daily").expect("room");
    let found = s
        .run(Scope::user(&b.id).and_room(Some(&lower)), |r| {
            r.find(&b.id, None, Some(&lower))
        })
        .await
        .expect("store answers")
        .value;
    assert_eq!(found.expect("by room"), id);
    let only = s
        .run(Scope::user(&b.id), |r| r.find(&b.id, None, None))
        .await
        .expect("store answers")
        .value;
    assert_eq!(only.expect("the only call"), id);
    let foreign = s
        .run(Scope::user(&c.id).and_room(Some(&lower)), |r| {
            r.find(&c.id, None, Some(&lower))
        })
        .await
        .expect("store answers")
        .value;
    assert_eq!(foreign.unwrap_err().error.code, ErrorCode::NotFound);
}

// ---------------------------------------------------------------------------
// Cluster only
// ---------------------------------------------------------------------------

async fn cluster(case: &str) -> Option<Env> {
    Env::start_redis(case).await
}

#[tokio::test]
async fn redis_two_nodes_racing_to_accept_have_exactly_one_winner_every_time() {
    let Some(mut env) = cluster("accept_race").await else {
        return;
    };
    env.add_node().await;
    let (a, b) = (party(1), party(2));
    let rounds = 100;
    for round in 0..rounds {
        let id = id_of(&ring(env.node(round % 2), &a, &b, None).await);
        let (d1, d2) = (Sid::new(), Sid::new());
        let (r1, r2) = tokio::join!(
            control(env.node(0), &b, id, d1, "accept"),
            control(env.node(1), &b, id, d2, "accept"),
        );
        let winners = [&r1, &r2].iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {r1:?} / {r2:?}");
        let (winner, loser) = if r1.is_ok() { (&r1, &r2) } else { (&r2, &r1) };
        assert_eq!(*loser.as_ref().unwrap_err(), ErrorCode::InvalidState);
        let won_on = if r1.is_ok() { d1 } else { d2 };
        assert!(
            emitted(winner.as_ref().unwrap())
                .iter()
                .any(|(e, to, body)| *e == events::VIDEO_CALL_ENDED
                    && *to == To::UserExcept(b.id.clone(), won_on)
                    && body["reason"] == "answered_elsewhere")
        );
        control(env.node(1 - round % 2), &a, id, Sid::new(), "end")
            .await
            .expect("hang up");
    }
    assert_eq!(env.leftovers().await, (0, 0));
    let (n1, n2) = (env.round_trips(0).await, env.round_trips(1).await);
    eprintln!(
        "accept race, {rounds} rounds: node 1 {n1:?}, node 2 {n2:?}; conflicts retried: {}",
        n1.conflicts + n2.conflicts
    );
}

#[tokio::test]
async fn redis_the_ring_timeout_fires_on_node_2_after_node_1_died() {
    let Some(env) = cluster("timer_after_death").await else {
        return;
    };
    let mut env = env.with_policy(|p| p.ring_timeout_secs = 1);
    let (a, b) = (party(1), party(2));
    let id = id_of(&ring(env.node(0), &a, &b, None).await);
    // Node 1 dies: its connection is gone and its lease lapses.
    {
        let Kind::Redis { nodes, .. } = &mut env.kind else {
            unreachable!()
        };
        let (redis, store) = nodes.remove(0);
        let _: i64 = redis
            .client()
            .del(redis.key("node:n1"))
            .await
            .expect("lease gone");
        drop(store);
        let _ = redis.client().quit().await;
    }
    let n2 = env.add_node().await;
    assert_eq!(env.redis(n2).node(), "n2");
    let due = env.due(n2, &[], Duration::from_secs(5)).await;
    assert_eq!(due.len(), 1, "node 2 claims node 1's timer");
    assert_eq!(due[0].timer, Timer::RingTimeout(id));
    assert!(
        env.node(n2).claim_due().await.expect("claim").is_empty(),
        "claimed once"
    );
    let fired = env
        .node(n2)
        .fire_claimed(&due[0], false)
        .await
        .expect("fires");
    assert_eq!(fired.ended, vec![(id, Reason::Timeout)]);
    assert!(
        emitted(&fired.value)
            .iter()
            .any(|(e, to, _)| *e == events::VIDEO_CALL_MISSED && *to == To::User(b.id.clone()))
    );
    assert_eq!(env.leftovers().await, (0, 0));
}

#[tokio::test]
async fn redis_a_claim_whose_node_died_before_firing_comes_due_again() {
    let Some(env) = cluster("claim_lapses").await else {
        return;
    };
    let mut env = env.with_policy(|p| p.ring_timeout_secs = 1);
    env.add_node().await;
    let (a, b) = (party(1), party(2));
    let id = id_of(&ring(env.node(0), &a, &b, None).await);
    let claimed = env.due(0, &[], Duration::from_secs(5)).await;
    assert_eq!(claimed.len(), 1);
    // Node 1 "dies" holding the claim: node 2 gets it once the claim lapses.
    assert!(env.node(1).claim_due().await.expect("claim").is_empty());
    let again = env.due(1, &[], Duration::from_secs(8)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].timer, Timer::RingTimeout(id));
    env.node(1)
        .fire_claimed(&again[0], false)
        .await
        .expect("fires");
    assert_eq!(env.leftovers().await, (0, 0));
}

#[tokio::test]
async fn redis_a_node_without_its_lease_is_fenced_and_changes_nothing() {
    let Some(env) = cluster("fenced").await else {
        return;
    };
    let (a, b) = (party(1), party(2));
    let id = id_of(&ring(env.store(), &a, &b, None).await);
    let redis = env.redis(0);
    let _: i64 = redis.client().del(redis.key("node:n1")).await.expect("del");
    let refused = env
        .store()
        .run(Scope::user(&b.id).and_call(Some(id)), |r| {
            r.accept(&b, id, Sid::new())
        })
        .await
        .expect_err("fenced");
    assert_eq!(refused, ClusterError::Fenced);
    assert!(
        env.store().claim_due().await.expect("claim").is_empty(),
        "a fenced node claims no timer"
    );
    let _: () = redis
        .client()
        .set(redis.key("node:n1"), "lease", None, None, false)
        .await
        .expect("lease back");
    let calls = connected(env.store(), &b).await;
    assert_eq!(calls[0]["state"], "ringing", "the accept was not applied");
}

#[tokio::test]
async fn redis_round_trips_per_transition_are_few_and_match_commandstats() {
    let Some(env) = Env::start_redis_with("round_trips", true).await else {
        return;
    };
    let (a, b) = (party(1), party(2));
    let s = env.store();
    // Warm: the scripts are loaded once per node.
    let id = id_of(&ring(s, &a, &b, None).await);
    control(s, &a, id, Sid::new(), "end").await.expect("cancel");

    let client = env.redis(0).client();
    let _: String = client
        .custom(cmd("CONFIG"), vec!["RESETSTAT"])
        .await
        .expect("resetstat");
    let t0 = env.round_trips(0).await;
    let id = id_of(&ring(s, &a, &b, None).await);
    let t1 = env.round_trips(0).await;
    control(s, &b, id, Sid::new(), "accept")
        .await
        .expect("accept");
    let t2 = env.round_trips(0).await;
    control(s, &a, id, Sid::new(), "end")
        .await
        .expect("hang up");
    let t3 = env.round_trips(0).await;
    let initiate = t1.total() - t0.total();
    let accept = t2.total() - t1.total();
    let hangup = t3.total() - t2.total();
    eprintln!(
        "Redis round trips: initiate {initiate}, accept {accept} (setup {}), hang-up {hangup}",
        initiate + accept
    );
    // A new call commits without reading.
    assert_eq!(initiate, 1, "initiate");
    assert!(accept <= 2, "accept: {accept}");
    assert!(hangup <= 3, "hang-up: {hangup}");

    // What Redis itself counted (this test's own server: nobody else's commands).
    {
        let info: String = client
            .custom(cmd("INFO"), vec!["commandstats"])
            .await
            .expect("info");
        let calls = |cmd: &str| -> u64 {
            info.lines()
                .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
                .and_then(|l| l.split("calls=").nth(1))
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let counted = calls("mget") + calls("evalsha");
        eprintln!(
            "INFO commandstats: mget {} evalsha {}",
            calls("mget"),
            calls("evalsha")
        );
        assert_eq!(counted, initiate + accept + hangup);
    }
}

/// An initiate's gate: a charge of bucket `bucket` (one a minute, no burst:
/// the first charge passes, the next one waits ~60 s) and `online` required
/// online.
fn initiate_gate(redis: &Redis, bucket: &str, online: &Party) -> Gate {
    Gate {
        charge: Some(Charge {
            key: redis.key(&format!("rl:test:{bucket}")),
            period: 60_000_000,
            tau: 0,
        }),
        online: Some(online.id.clone()),
    }
}

/// `from` rings `to` behind `gate`, named as likely new or not.
async fn gated_initiate(
    s: &CallStore,
    from: Party,
    to: Party,
    gate: Gate,
    likely_new: bool,
) -> Result<Done<Result<Outcome, Refusal>>, GateError> {
    let mut scope = Scope::user(&from.id).and_user(&to.id);
    scope.likely_new = likely_new;
    let o = origin();
    s.run_gated(scope, gate, |r| {
        r.initiate_direct(from.clone(), to.clone(), None, o)
    })
    .await
}

#[tokio::test]
async fn redis_a_gate_charges_counts_presence_and_reads_in_the_first_round_trip() {
    let Some(env) = cluster("gate").await else {
        return;
    };
    let (a, b, c) = (party(1), party(2), party(3));
    let s = env.store();
    let redis = env.redis(0);
    let client = redis.client();
    let initiate = |to: &Party, gate: Gate| gated_initiate(s, a.clone(), to.clone(), gate, false);
    let gate = |bucket: &str, online: &Party| initiate_gate(redis, bucket, online);

    // b has no socket anywhere: offline, once the charge was taken. Nothing written.
    let t0 = env.round_trips(0).await;
    let e = initiate(&b, gate("one", &b)).await.expect_err("offline");
    assert_eq!(e, GateError::Offline);
    let t = env.round_trips(0).await;
    // (The first run of each script also loads it: not counted here.)
    assert_eq!(
        (t.loads - t0.loads, t.commits - t0.commits),
        (1, 0),
        "one read"
    );
    assert_eq!(env.leftovers().await, (0, 0), "nothing written");

    // b is online now (a socket on this node, whose lease holds), but the
    // bucket was charged: refused, with the wait, and nothing read or written.
    let () = client
        .hset(redis.key(&format!("conn:user:{}", b.id)), (redis.node(), 1))
        .await
        .expect("presence");
    match initiate(&b, gate("one", &b)).await {
        Err(GateError::Limited(wait)) => assert!(
            wait.0 > Duration::from_secs(50),
            "waits for the next token: {wait:?}"
        ),
        other => panic!("charged bucket must refuse: {other:?}"),
    }
    assert_eq!(env.leftovers().await, (0, 0), "nothing written");

    // A fresh bucket: the gate and the commit, two round trips, and it rings.
    let t1 = env.round_trips(0).await;
    let rung = initiate(&b, gate("two", &b)).await.expect("admitted");
    let rung = rung.value.expect("rings");
    assert_eq!(rung.emits[0].event, events::INCOMING_VIDEO_CALL);
    let t2 = env.round_trips(0).await;
    let (reads, commits) = (t2.loads - t1.loads, t2.commits - t1.commits);
    assert_eq!((reads, commits), (1, 1), "the gate was the only read");

    // A socket on a node whose lease is gone does not make c online.
    let () = client
        .hset(redis.key(&format!("conn:user:{}", c.id)), ("dead-node", 1))
        .await
        .expect("presence");
    let e = initiate(&c, gate("three", &c)).await.expect_err("offline");
    assert_eq!(e, GateError::Offline);

    // An empty gate is a plain run (a redials b: the new call replaces the old).
    let again = initiate(&b, Gate::default()).await.expect("runs");
    assert!(again.value.is_ok(), "redial: {:?}", again.value.err());
}

#[tokio::test]
async fn redis_a_new_call_commits_without_reading_and_reads_when_a_record_exists() {
    let Some(env) = cluster("likely_new").await else {
        return;
    };
    let (a, b, c) = (party(1), party(2), party(3));
    let s = env.store();
    let redis = env.redis(0);
    let client = redis.client();
    let initiate = |from: &Party, to: &Party, gate: Gate| {
        gated_initiate(s, from.clone(), to.clone(), gate, true)
    };
    let gate = |bucket: &str, online: &Party| initiate_gate(redis, bucket, online);
    let online = |p: &Party| {
        let key = redis.key(&format!("conn:user:{}", p.id));
        async move {
            let () = client.hset(key, (redis.node(), 1)).await.expect("presence");
        }
    };
    let counted = |t0: RoundTrips, t: RoundTrips| {
        (
            t.loads - t0.loads,
            t.commits - t0.commits,
            t.conflicts - t0.conflicts,
        )
    };
    // Warm: every script loaded (loads are not round trips counted here).
    online(&c).await;
    let warm = initiate(&c, &a, Gate::default()).await.expect("runs");
    let id = id_of(&warm.value.expect("rings"));
    control(s, &c, id, Sid::new(), "end").await.expect("cancel");
    assert_eq!(env.leftovers().await, (0, 0));

    // b has no socket anywhere: offline, told by the commit itself, once the
    // charge was taken (as the gate does). No read, nothing written.
    let t0 = env.round_trips(0).await;
    let e = initiate(&a, &b, gate("one", &b))
        .await
        .expect_err("offline");
    assert_eq!(e, GateError::Offline);
    assert_eq!(
        counted(t0, env.round_trips(0).await),
        (0, 1, 0),
        "one commit"
    );
    assert_eq!(env.leftovers().await, (0, 0), "nothing written");

    // The charge stood: refused with the wait, nothing written.
    online(&b).await;
    match initiate(&a, &b, gate("one", &b)).await {
        Err(GateError::Limited(wait)) => assert!(wait.0 > Duration::from_secs(50), "{wait:?}"),
        other => panic!("charged bucket must refuse: {other:?}"),
    }
    assert_eq!(env.leftovers().await, (0, 0), "nothing written");

    // Nothing live: one round trip, the commit, and it rings.
    let t1 = env.round_trips(0).await;
    let rung = initiate(&a, &b, gate("two", &b)).await.expect("admitted");
    let first = id_of(&rung.value.expect("rings"));
    assert_eq!(counted(t1, env.round_trips(0).await), (0, 1, 0), "no read");

    // a redials b: their records exist, so the commit against absent ones
    // is refused, charging nothing, and the transition reads (the gate:
    // charge and presence) and commits as any other. The bucket allows one:
    // had the refused commit charged, the gate would refuse.
    let t2 = env.round_trips(0).await;
    let again = initiate(&a, &b, gate("three", &b)).await.expect("admitted");
    let second = id_of(&again.value.expect("redial"));
    assert_ne!(first, second, "the new call replaces the old");
    assert_eq!(
        counted(t2, env.round_trips(0).await),
        (3, 2, 1),
        "a refused commit, then the gated read, the old call it names, that \
         call's room (to end it), and the commit"
    );
    let calls = connected(s, &b).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["callId"], second.to_string());

    // The same with the bucket spent: the refused commit charged nothing,
    // so the gate's charge is what refuses, and nothing changes.
    let e = initiate(&a, &b, gate("three", &b))
        .await
        .expect_err("limited");
    assert!(matches!(e, GateError::Limited(_)), "{e:?}");
    let calls = connected(s, &b).await;
    assert_eq!(calls[0]["callId"], second.to_string(), "unchanged");
}

#[tokio::test]
async fn redis_records_carry_a_safety_ttl() {
    let Some(env) = cluster("ttl").await else {
        return;
    };
    let (a, b) = (party(1), party(2));
    let id = id_of(&ring(env.store(), &a, &b, None).await);
    let redis = env.redis(0);
    for key in [format!("call:{id}"), format!("user:{}", a.id)] {
        let ttl: i64 = redis.client().pttl(redis.key(&key)).await.expect("pttl");
        let max = i64::try_from(RECORD_TTL.as_millis()).expect("ms");
        assert!(ttl > max - 60_000 && ttl <= max, "{key}: {ttl}");
    }
}

#[tokio::test]
async fn redis_a_record_that_outlived_its_call_is_cleaned_up() {
    let Some(env) = cluster("stale").await else {
        return;
    };
    let (a, b) = (party(1), party(2));
    let id = id_of(&ring(env.store(), &a, &b, None).await);
    let redis = env.redis(0);
    // As if the call's record expired first.
    let _: i64 = redis
        .client()
        .del(redis.key(&format!("call:{id}")))
        .await
        .expect("del");
    assert!(connected(env.store(), &a).await.is_empty());
    // a's next transition writes a's record without the dead call.
    ring(env.store(), &a, &b, None).await;
    let rec: String = redis
        .client()
        .get(redis.key(&format!("user:{}", a.id)))
        .await
        .expect("get");
    assert!(!rec.contains(&id.to_string()), "{rec}");
}

#[tokio::test]
async fn redis_a_corrupt_record_refuses_the_transition_without_a_panic() {
    let Some(env) = cluster("corrupt").await else {
        return;
    };
    let (a, b) = (party(1), party(2));
    let redis = env.redis(0);
    let _: () = redis
        .client()
        .set(
            redis.key(&format!("user:{}", a.id)),
            "{not json",
            None,
            None,
            false,
        )
        .await
        .expect("set");
    let o = origin();
    let refused = env
        .store()
        .run(Scope::user(&a.id).and_user(&b.id), |r| {
            r.initiate_direct(a.clone(), b.clone(), None, o)
        })
        .await
        .expect_err("refused");
    assert_eq!(refused, ClusterError::Unavailable);
}

#[tokio::test]
async fn redis_scripts_are_reloaded_after_redis_forgot_them() {
    let Some(env) = cluster("noscript").await else {
        return;
    };
    let (a, b) = (party(1), party(2));
    let id = id_of(&ring(env.store(), &a, &b, None).await);
    let _: () = env
        .redis(0)
        .client()
        .script_flush(false)
        .await
        .expect("flush");
    control(env.store(), &b, id, Sid::new(), "accept")
        .await
        .expect("accepted after a reload");
    assert!(env.round_trips(0).await.script_loads >= 2);
}

#[tokio::test]
async fn redis_down_answers_unavailable_fast_and_heals() {
    let Some(mut env) = Env::start_redis_with("down", true).await else {
        return;
    };
    let (a, b) = (party(1), party(2));
    let id = id_of(&ring(env.store(), &a, &b, None).await);
    let port = {
        let Kind::Redis { server, url, .. } = &mut env.kind else {
            unreachable!()
        };
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        drop(server.take());
        port
    };
    let started = Instant::now();
    let down = env
        .store()
        .run(Scope::user(&b.id).and_call(Some(id)), |r| {
            r.accept(&b, id, Sid::new())
        })
        .await
        .expect_err("unavailable");
    assert_eq!(down, ClusterError::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no hang: {:?}",
        started.elapsed()
    );
    // Redis comes back, empty (no persistence): the node heals by itself once
    // its lease is back; the lost call is simply not found.
    let server = Server::start_on(port).expect("restart");
    if let Kind::Redis { server: s, .. } = &mut env.kind {
        *s = Some(server);
    }
    let redis = env.redis(0).clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lease: Result<(), _> = redis
            .client()
            .set(redis.key("node:n1"), "lease", None, None, false)
            .await;
        if lease.is_ok() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        control(env.store(), &b, id, Sid::new(), "accept")
            .await
            .unwrap_err(),
        ErrorCode::NotFound
    );
    ring(env.store(), &a, &b, None).await;
}

/// A hub on the Redis store, as `App::build` makes on a cluster node, with a
/// Socket.IO server nobody is connected to.
fn cluster_hub(redis: &Redis, calls: CallPolicy) -> Arc<Hub> {
    let env = vec![(
        "CALLGATE_JWT_SECRET".to_string(),
        "test-secret-test-secret-test-secret-0123456789".to_string(),
    )];
    let config = Config::load_from(None, &Overrides::default(), &env).expect("config");
    let keys = Arc::new(TokenKeys::from_config(&config.auth, config.environment).expect("keys"));
    let policy = Policy::builtin().expect("policy");
    let limits = Arc::new(Limits::new(&policy.rate_limits, policy.connections));
    let hub = Hub::new(
        Store::Embedded(EmbeddedStore::new()),
        keys,
        limits,
        TrustedProxies::default(),
        Arc::new(Metrics::new()),
        calls.clone(),
        None,
    )
    .with_call_store(CallStore::redis(redis.clone(), calls));
    Arc::new(hub)
}

#[tokio::test]
async fn redis_the_poller_fires_due_timers_and_waits_for_an_unknown_presence() {
    let Some(env) = cluster("poller").await else {
        return;
    };
    let env = env.with_policy(|p| p.ring_timeout_secs = 1);
    let hub = cluster_hub(env.redis(0), env.policy.clone());
    let (_svc, io) = socketioxide::SocketIo::new_svc();
    let (a, b) = (party(1), party(2));
    let o = origin();
    let ringing = hub
        .with_calls(Scope::user(&a.id).and_user(&b.id), |r| {
            r.initiate_direct(a.clone(), b.clone(), None, o)
        })
        .await
        .expect("store answers")
        .expect("rings");
    let id = id_of(&ringing);
    assert!(ringing.timers.is_empty(), "in Redis, not a tokio task");
    assert_eq!(hub.pending_ring_timers(), 0);

    // b accepts, then loses every socket: a reconnect grace (due at once).
    control(hub.calls(), &b, id, Sid::new(), "accept")
        .await
        .expect("accept");
    hub.with_calls(Scope::user(&b.id), |r| r.user_went_offline(&b.id))
        .await
        .expect("store answers");

    // Presence unknown (Redis hiccup): nothing fires, the claim holds it.
    let unknown: Presence = Arc::new(|_| Box::pin(async { Err(ClusterError::Unavailable) }));
    timers::poll(&io, &hub, &unknown).await;
    assert_eq!(
        env.leftovers().await.1,
        2,
        "ring timeout and grace both pending"
    );
    assert_eq!(
        connected(hub.calls(), &a).await.len(),
        1,
        "the call is live"
    );

    // A poll after the ring timeout, b offline: both fire, the call ends.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let offline: Presence = Arc::new(|_| Box::pin(async { Ok(false) }));
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.leftovers().await != (0, 0) && Instant::now() < deadline {
        timers::poll(&io, &hub, &offline).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.leftovers().await, (0, 0), "ended, every timer gone");
    assert!(connected(hub.calls(), &a).await.is_empty());
}

// ---------------------------------------------------------------------------
// A commit whose answer came too late
// ---------------------------------------------------------------------------

/// A connection of the test's own (the node's is held up behind its commit).
async fn observer(env: &Env) -> Redis {
    let Kind::Redis { url, prefix, .. } = &env.kind else {
        panic!("a Redis thing");
    };
    Env::connect(url, prefix, "observer").await
}

/// Every call-state record (key and value) and every timer (member and
/// score) under the test's prefix; undo records and tombstones left out.
async fn state(on: &Redis) -> (BTreeMap<String, String>, BTreeMap<String, f64>) {
    let prefix = on.prefix();
    let client = on.client();
    let mut records = BTreeMap::new();
    for pattern in ["call:*", "user:*", "room:*", "group:*"] {
        let keys: Vec<String> = client
            .custom(cmd("KEYS"), vec![format!("{prefix}:{pattern}")])
            .await
            .expect("keys");
        for key in keys {
            let value: Option<String> = client.get(&key).await.expect("get");
            records.extend(value.map(|v| (key, v)));
        }
    }
    let timers_key = format!("{prefix}:timers");
    let members: Vec<String> = client
        .zrange(&timers_key, 0, -1, None, false, None, false)
        .await
        .expect("zrange");
    let mut timers = BTreeMap::new();
    for m in members {
        let score: Option<f64> = client.zscore(&timers_key, &m).await.expect("zscore");
        timers.extend(score.map(|s| (m, s)));
    }
    (records, timers)
}

/// The answers undos left behind (`u` undone, `n` never applied, `s`
/// superseded), one per commit that got no answer in time.
async fn tombstones(on: &Redis) -> Vec<String> {
    let prefix = on.prefix();
    let client = on.client();
    let keys: Vec<String> = client
        .custom(cmd("KEYS"), vec![format!("{prefix}:commit:*")])
        .await
        .expect("keys");
    let mut out = Vec::new();
    for key in keys {
        let value: Option<String> = client.get(&key).await.expect("get");
        out.extend(value.filter(|v| !v.starts_with('c')));
    }
    out.sort();
    out
}

/// Redis holds every script (they write) for `hold`, from a connection of
/// the test's own; reads go on. A node's load is answered, its commit is
/// not, within `cluster.redis_timeout_ms`, and Redis runs it afterwards.
async fn hold_scripts(on: &Redis, hold: Duration) {
    let ms = hold.as_millis().to_string();
    let _: String = on
        .client()
        .custom(cmd("CLIENT"), vec!["PAUSE", ms.as_str(), "WRITE"])
        .await
        .expect("client pause");
}

async fn wait_for_tombstones(on: &Redis, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = tombstones(on).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "undo answers {got:?}, not {want:?}, 15 s after the commits"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_a_commit_run_too_late_is_refused_records_and_timers_as_before() {
    // Its own redis-server: CLIENT PAUSE holds every client's scripts.
    let Some(env) = Env::start_redis_with("late_commit", true).await else {
        return;
    };
    const HOLD: Duration = Duration::from_millis(1500);
    let (a, b, c, d) = (party(1), party(2), party(3), party(4));
    let s = env.store();
    let obs = observer(&env).await;
    // The scripts are loaded (a NOSCRIPT would not be held), and a call rings.
    let id = id_of(&ring(s, &a, &b, None).await);
    let before = state(&obs).await;
    assert_eq!(before.1.len(), 1, "the ring timer: {before:?}");

    // a hangs up: the commit would delete the call and its records and
    // remove its ring timer, and is run by Redis only after a heard
    // `unavailable`, past its deadline.
    hold_scripts(&obs, HOLD).await;
    let asked = Instant::now();
    let late = s
        .run(Scope::user(&a.id).and_call(Some(id)), |r| {
            r.end(&a, id, false, Sid::new())
        })
        .await
        .expect_err("no answer in time");
    assert_eq!(late, ClusterError::Unavailable);
    assert!(
        asked.elapsed() < HOLD,
        "answered {:?} after: not before Redis ran the commit",
        asked.elapsed()
    );
    // Refused by its deadline: the undo finds it never applied, and the
    // call, its records and its ring timer (with its due time) are as they
    // were.
    wait_for_tombstones(&obs, &["n"]).await;
    assert_eq!(state(&obs).await, before, "the hang-up never applied");

    // c calls d: the commit creates a call, its records and a ring timer.
    hold_scripts(&obs, HOLD).await;
    let o = origin();
    let late = s
        .run(Scope::user(&c.id).and_user(&d.id), |r| {
            r.initiate_direct(c.clone(), d.clone(), None, o)
        })
        .await
        .expect_err("no answer in time");
    assert_eq!(late, ClusterError::Unavailable);
    wait_for_tombstones(&obs, &["n", "n"]).await;
    assert_eq!(state(&obs).await, before, "the call c -> d never applied");
    assert!(connected(s, &d).await.is_empty(), "d has no call");
    assert!(env.round_trips(0).await.undos >= 2);

    // The state put back is the live one: b answers, a hangs up, nothing is left.
    control(s, &b, id, Sid::new(), "accept")
        .await
        .expect("accept");
    control(s, &a, id, Sid::new(), "end").await.expect("end");
    assert_eq!(env.leftovers().await, (0, 0));
}

#[tokio::test]
async fn redis_an_undo_refuses_a_later_commit_and_leaves_one_built_on() {
    let Some(env) = cluster("undo_script").await else {
        return;
    };
    let r = env.redis(0);
    let client = r.client();
    let (lease, timers, rec) = (r.key("node:n1"), r.key("timers"), r.key("call:x"));
    let ttl = RECORD_TTL.as_millis().to_string();
    let window = UNDO_WINDOW.as_millis().to_string();
    // A commit of `op` on `rec` (expected `want`), adding and removing timers.
    let cas = |token: &str, want: &str, op: &str, add: &[(&str, &str)], rem: &[&str]| {
        let keys = vec![
            lease.clone(),
            timers.clone(),
            r.key(&format!("commit:{token}")),
            rec.clone(),
        ];
        let mut args = vec![
            ttl.clone(),
            add.len().to_string(),
            rem.len().to_string(),
            window.clone(),
            "0".to_owned(), // no presence asked
            "0".to_owned(), // no charge
            String::new(),
            String::new(),
            "0".to_owned(),
            "0".to_owned(),
            "0".to_owned(), // nobody required online
            "0".to_owned(), // no deadline
            want.to_owned(),
            op.to_owned(),
        ];
        for (score, m) in add {
            args.extend([(*score).to_owned(), (*m).to_owned()]);
        }
        args.extend(rem.iter().map(|m| (*m).to_owned()));
        async move {
            let answer: Vec<i64> = client.eval(CAS, keys, args).await.expect("cas");
            answer[0]
        }
    };
    // Its undo: `rec` was `before` and the commit wrote `wrote`.
    let undo = |token: &str, wrote: &str, before: &str, add: &[&str], rem: &[&str]| {
        let keys = vec![
            r.key(&format!("commit:{token}")),
            timers.clone(),
            rec.clone(),
        ];
        let mut args = vec![
            window.clone(),
            ttl.clone(),
            add.len().to_string(),
            rem.len().to_string(),
            wrote.to_owned(),
            before.to_owned(),
        ];
        args.extend(add.iter().chain(rem).map(|m| (*m).to_owned()));
        async move {
            let answer: i64 = client.eval(UNDO, keys, args).await.expect("undo");
            answer
        }
    };
    let get = || async {
        let v: Option<String> = client.get(&rec).await.expect("get");
        v
    };

    // The undo ran first (the commit was still on its way): never applied,
    // and the commit that arrives afterwards is refused, changing nothing.
    assert_eq!(undo("t1", "=v1", "", &[], &[]).await, 2);
    assert_eq!(cas("t1", "", "sv1", &[("10", "t-new")], &[]).await, -2);
    assert_eq!(get().await, None);
    let members: Vec<String> = client
        .zrange(&timers, 0, -1, None, false, None, false)
        .await
        .expect("zrange");
    assert!(members.is_empty(), "{members:?}");
    assert_eq!(undo("t1", "=v1", "", &[], &[]).await, 2, "asked again");

    // Applied, then another transition changed its record: left as it is.
    assert_eq!(cas("t2", "", "sv1", &[], &[]).await, 1);
    let () = client
        .set(&rec, "v2", None, None, false)
        .await
        .expect("set");
    assert_eq!(undo("t2", "=v1", "", &[], &[]).await, 3);
    assert_eq!(get().await.as_deref(), Some("v2"));
    assert_eq!(undo("t2", "=v1", "", &[], &[]).await, 3, "asked again");

    // Applied and undone: the record is back, and every timer has its score
    // again: one re-scored by the commit, one it added, one it removed.
    let _: i64 = client
        .zadd(
            &timers,
            None,
            None,
            false,
            false,
            vec![(5.0, "t-old"), (7.0, "t-gone")],
        )
        .await
        .expect("zadd");
    let add = [("10", "t-old"), ("20", "t-new")];
    assert_eq!(cas("t3", "=v2", "sv3", &add, &["t-gone"]).await, 1);
    assert_eq!(get().await.as_deref(), Some("v3"));
    assert_eq!(
        undo("t3", "=v3", "=v2", &["t-old", "t-new"], &["t-gone"]).await,
        1
    );
    assert_eq!(get().await.as_deref(), Some("v2"));
    let pttl: i64 = client.pttl(&rec).await.expect("pttl");
    assert!(pttl > 0, "restored with the records' TTL: {pttl}");
    for (m, want) in [("t-old", Some(5.0)), ("t-gone", Some(7.0)), ("t-new", None)] {
        let score: Option<f64> = client.zscore(&timers, m).await.expect("zscore");
        assert_eq!(score, want, "{m}");
    }
    // The tombstone refuses the same commit again and repeats the answer.
    assert_eq!(cas("t3", "=v2", "sv3", &add, &["t-gone"]).await, -2);
    assert_eq!(
        undo("t3", "=v3", "=v2", &["t-old", "t-new"], &["t-gone"]).await,
        1
    );
}

/// The commit reads, for each user an outcome's events go to, whether they
/// have a socket on another live node: those with none get their events on
/// this node only (no publish). A socket elsewhere keeps them cluster-wide;
/// one on a node whose lease is gone does not.
#[tokio::test]
async fn redis_a_commit_tells_which_recipients_have_no_socket_on_another_node() {
    let Some(mut env) = cluster("here_only").await else {
        return;
    };
    let other = env.add_node().await;
    let (a, b) = (party(1), party(2));
    let here = env.redis(0).node().to_owned();
    let there = env.redis(other).node().to_owned();
    let client = env.redis(0).client().clone();
    let presence = |u: &Party| env.redis(0).key(&format!("conn:user:{}", u.id));
    let set = |key: String, node: String| {
        let client = client.clone();
        async move {
            let () = client.hset(key, (node, 1)).await.expect("presence");
        }
    };

    // a and b only on this node: both events stay here.
    set(presence(&a), here.clone()).await;
    set(presence(&b), here.clone()).await;
    let rung = ring(env.store(), &a, &b, None).await;
    assert_eq!(rung.recipients(), [b.id.clone()].into());
    assert_eq!(rung.here_only, [b.id.clone()].into());
    let id = id_of(&rung);

    // b also has a socket on the other node (its lease holds): b's events
    // cross nodes; a, only here, keeps hers local.
    set(presence(&b), there.clone()).await;
    let accepted = control(env.store(), &b, id, Sid::new(), "accept")
        .await
        .expect("accept");
    assert_eq!(
        accepted.recipients(),
        [a.id.clone(), b.id.clone()].into(),
        "the caller, and b's other devices"
    );
    assert_eq!(accepted.here_only, [a.id.clone()].into());

    // The other node's lease is gone: its sockets no longer count.
    let _: i64 = client
        .del(env.redis(0).key(&format!("node:{there}")))
        .await
        .expect("del lease");
    let ended = control(env.store(), &a, id, Sid::new(), "end")
        .await
        .expect("end");
    assert_eq!(ended.here_only, [a.id.clone(), b.id.clone()].into());

    // The memory store never confines: one process delivers locally anyway.
    let memory = Env::memory();
    assert!(
        ring(memory.store(), &a, &b, None)
            .await
            .here_only
            .is_empty()
    );
}

/// With a relay, a commit publishes the adapter's broadcast of each event
/// for a recipient with a socket on another live node, in order, and only
/// once it applied; this node then delivers every event itself, to its own
/// sockets (`here_only` names every recipient).
#[tokio::test]
async fn redis_a_relaying_commit_publishes_the_events_for_other_nodes_itself() {
    use callgate::cluster::relay::Relay;
    use fred::interfaces::{EventInterface, PubsubInterface};
    use socketioxide_core::adapter::remote_packet::{RequestIn, RequestTypeIn};

    let Some(mut env) = cluster("relay").await else {
        return;
    };
    let there = env.add_node().await;
    let (a, b) = (party(1), party(2));
    let presence = |i: usize, who: &Party| {
        let redis = env.redis(i).clone();
        let key = redis.key(&format!("conn:user:{}", who.id));
        async move {
            let () = redis
                .client()
                .hset(key, (redis.node(), 1))
                .await
                .expect("presence");
        }
    };
    // a only on this node, b only on the other.
    presence(0, &a).await;
    presence(there, &b).await;
    let server = socketioxide_core::Uid::new();
    let relay = Relay::new(server, &env.redis(0).key("sio"));
    env.store().relay_through(relay.clone());

    let Kind::Redis { url, prefix, .. } = &env.kind else {
        unreachable!()
    };
    let mut cfg = Config::load_from(None, &Overrides::default(), &[])
        .expect("config")
        .cluster;
    cfg.redis_url = SecretString::from(url.clone());
    cfg.key_prefix = prefix.clone();
    let sub = Redis::subscriber(&cfg).expect("subscriber");
    sub.init().await.expect("connects");
    let mut heard = sub.message_rx();
    sub.ssubscribe(relay.channel()).await.expect("ssubscribe");
    let mut next = async move || -> Option<(Vec<String>, String)> {
        let m = tokio::time::timeout(Duration::from_millis(300), heard.recv())
            .await
            .ok()?
            .expect("message");
        let bytes = m.value.as_bytes().expect("bytes").to_vec();
        let request: RequestIn = rmp_serde::from_slice(&bytes).expect("an adapter request");
        assert_eq!(request.node_id, server, "sent as this node's adapter");
        let RequestTypeIn::Broadcast(packet) = request.r#type else {
            panic!("a broadcast");
        };
        let rooms = request.opts.expect("options").rooms;
        Some((
            rooms.iter().map(|r| r.to_string()).collect(),
            format!("{packet:?}"),
        ))
    };

    // a rings b: the commit publishes b's incomingVideoCall; a's own events
    // stay here.
    let rung = ring(env.store(), &a, &b, None).await;
    let id = id_of(&rung);
    assert_eq!(
        rung.here_only,
        rung.recipients(),
        "every event is delivered here"
    );
    let (rooms, packet) = next().await.expect("b's event, published by the commit");
    assert_eq!(rooms, [rooms::user_room(&b.id)]);
    assert!(
        packet.contains("incomingVideoCall") && packet.contains(&id.to_string()),
        "{packet}"
    );
    assert!(next().await.is_none(), "nothing for a, who is only here");

    // A refused transition commits nothing and publishes nothing.
    let c = party(3);
    assert_eq!(
        control(env.store(), &c, id, Sid::new(), "accept")
            .await
            .unwrap_err(),
        ErrorCode::NotFound
    );
    assert!(next().await.is_none(), "a refusal publishes nothing");

    // b answers: a's videoCallAccepted stays here; b's other devices, on the
    // other node, hear it was answered elsewhere, from the commit.
    let accepted = control(env.store(), &b, id, Sid::new(), "accept")
        .await
        .expect("accept");
    assert_eq!(accepted.here_only, accepted.recipients());
    let (rooms, packet) = next().await.expect("b's devices elsewhere");
    assert_eq!(rooms, [rooms::user_room(&b.id)]);
    assert!(packet.contains("answered_elsewhere"), "{packet}");
    assert!(next().await.is_none());
}

/// A commit Redis runs after its deadline (held up while the node stopped
/// waiting) refuses, and nothing of it applies.
#[tokio::test]
async fn redis_a_commit_past_its_deadline_refuses_and_writes_nothing() {
    let Some(env) = cluster("deadline").await else {
        return;
    };
    let r = env.redis(0);
    let rec = r.key("call:x");
    let keys = vec![
        r.key("node:n1"),
        r.key("timers"),
        r.key("commit:t"),
        rec.clone(),
    ];
    let args = |deadline: &str| {
        let mut args: Vec<String> = [
            "60000", "0", "0", "60000", "0", "0", "", "", "0", "0", "0", deadline, "", "sv1",
        ]
        .map(str::to_owned)
        .to_vec();
        args.truncate(14);
        args
    };
    let past: Vec<i64> = r
        .client()
        .eval(CAS, keys.clone(), args("1"))
        .await
        .expect("cas");
    assert_eq!(past, [-5]);
    let v: Option<String> = r.client().get(&rec).await.expect("get");
    assert_eq!(v, None, "nothing written");
    let deadline = (r.deadline_ms() + 60_000).to_string();
    let ahead: Vec<i64> = r
        .client()
        .eval(CAS, keys, args(&deadline))
        .await
        .expect("cas");
    assert_eq!(ahead, [1]);
    let v: Option<String> = r.client().get(&rec).await.expect("get");
    assert_eq!(v.as_deref(), Some("v1"));
}

/// Accept, reject and end read with a plain `MGET` and are charged by
/// their commit: two round trips, the charge taken once the records
/// compared equal. A refused charge writes nothing; an event the rule
/// refuses (nothing to commit) is charged on its own, so one over the limit
/// still answers `rate_limited`.
#[tokio::test]
async fn redis_a_call_controls_charge_is_taken_by_its_commit() {
    let Some(env) = cluster("control_charge").await else {
        return;
    };
    let (a, b) = (party(1), party(2));
    let s = env.store();
    let redis = env.redis(0);
    // One a minute, no burst: the first charge passes, the next waits ~60 s.
    let charge = |bucket: &str| Charge {
        key: redis.key(&format!("rl:test:{bucket}")),
        period: 60_000_000,
        tau: 0,
    };
    let bucket_set = |bucket: &str| {
        let key = redis.key(&format!("rl:test:{bucket}"));
        async move {
            let n: i64 = redis.client().exists(key).await.expect("exists");
            n == 1
        }
    };
    let id = id_of(&ring(s, &a, &b, None).await);
    let control = |who: &Party, what: &'static str, bucket: &str| {
        let who = who.clone();
        let gate = Gate {
            charge: Some(charge(bucket)),
            online: None,
        };
        async move {
            s.run_gated(
                Scope::user(&who.id).and_call(Some(id)),
                gate,
                |r| match what {
                    "accept" => r.accept(&who, id, Sid::new()),
                    "reject" => r.reject(&who, id, Sid::new()),
                    _ => r.end(&who, id, false, Sid::new()),
                },
            )
            .await
        }
    };

    // b accepts: one MGET, one commit that charged the bucket.
    let t0 = env.round_trips(0).await;
    let accepted = control(&b, "accept", "one").await.expect("admitted");
    assert!(accepted.value.is_ok(), "{:?}", accepted.value.err());
    let t = env.round_trips(0).await;
    assert_eq!((t.loads - t0.loads, t.commits - t0.commits), (1, 1));
    assert!(bucket_set("one").await, "charged by the commit");

    // b's next control on that bucket: refused at the commit, nothing written.
    let before = state(redis).await;
    match control(&b, "end", "one").await {
        Err(GateError::Limited(wait)) => {
            assert!(wait.0 > Duration::from_secs(50), "{wait:?}");
        }
        other => panic!("a charged bucket must refuse: {other:?}"),
    }
    assert_eq!(state(redis).await, before, "nothing written");

    // b rejects the active call: the rule refuses, nothing to commit, and
    // the charge is taken on its own; the next refusal is rate limited.
    let refused = control(&b, "reject", "two").await.expect("admitted");
    assert!(refused.value.is_err(), "an active call is not rejected");
    assert!(bucket_set("two").await, "charged on its own");
    assert!(matches!(
        control(&b, "reject", "two").await,
        Err(GateError::Limited(_))
    ));

    // A fresh bucket: the hang-up goes through, once.
    let ended = control(&a, "end", "three").await.expect("admitted");
    assert!(ended.value.is_ok(), "{:?}", ended.value.err());
    assert_eq!(env.leftovers().await, (0, 0));
}
