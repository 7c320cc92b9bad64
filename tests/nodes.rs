//! Cluster liveness, presence, caps and rate limits against a real Redis.
//!
//! Every test is `#[ignore]`d and named `redis_*`: a bare `cargo test` lists
//! them as ignored, never as passed. `bash scripts/test` runs them with
//! `--include-ignored` against the redis-server it starts
//! (`CALLGATE_TEST_REDIS_URL`); each test works under a key prefix of its
//! own. The restart test starts and stops a redis-server of its own
//! (`CALLGATE_TEST_REDIS_SERVER`, else `redis-server` on the PATH).
//!
//! ```text
//! redis-server --port 6390 --save '' --appendonly no &
//! CALLGATE_TEST_REDIS_URL=redis://127.0.0.1:6390 cargo test --test nodes -- --include-ignored
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callgate::cluster::nodes::{Hooks, NodeTimes, Nodes};
use callgate::cluster::presence::{AcquireError, Presence};
use callgate::cluster::rates::{ClusterRates, Limited};
use callgate::cluster::{ClusterError, Redis};
use callgate::config::ClusterConfig;
use callgate::domain::UserId;
use callgate::limits::{CapExceeded, EventClass, IpKey, RateLimiters};
use callgate::policy::{ConnectionPolicy, Rate, RateLimitPolicy};
use fred::interfaces::{HashesInterface, KeysInterface, SetsInterface};
use futures_util::future::BoxFuture;
use secrecy::SecretString;

const HEARTBEAT_MS: u64 = 100;
const NODE_TIMEOUT_MS: u64 = 500;
const REDIS_TIMEOUT_MS: u64 = 200;

fn redis_url() -> String {
    std::env::var("CALLGATE_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!("CALLGATE_TEST_REDIS_URL is not set: run `bash scripts/test`, or start a redis-server and set it")
    })
}

fn prefix(test: &str) -> String {
    format!(
        "t{}-{test}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

fn config(url: &str, prefix: &str) -> ClusterConfig {
    ClusterConfig {
        redis_url: SecretString::from(url.to_owned()),
        node_id: String::new(),
        key_prefix: prefix.to_owned(),
        redis_timeout_ms: REDIS_TIMEOUT_MS,
        heartbeat_ms: HEARTBEAT_MS,
        node_timeout_ms: NODE_TIMEOUT_MS,
        timer_poll_ms: 200,
        adapter_request_timeout_ms: 1000,
        stream_buffer: 1024,
    }
}

async fn redis(url: &str, prefix: &str, node: &str) -> Redis {
    Redis::connect(&config(url, prefix), node.to_owned())
        .await
        .expect("redis")
}

/// Records what the hooks were told, across every node of a test.
#[derive(Default)]
struct Recorder {
    disconnects: Mutex<HashMap<String, usize>>,
    offline: Mutex<Vec<(String, UserId)>>,
}

struct NodeHooks {
    node: String,
    rec: Arc<Recorder>,
}

impl Hooks for NodeHooks {
    fn disconnect_local(&self) -> BoxFuture<'static, ()> {
        *self
            .rec
            .disconnects
            .lock()
            .unwrap()
            .entry(self.node.clone())
            .or_default() += 1;
        Box::pin(async {})
    }

    fn user_offline(&self, user: UserId) -> BoxFuture<'static, ()> {
        self.rec
            .offline
            .lock()
            .unwrap()
            .push((self.node.clone(), user));
        Box::pin(async {})
    }
}

impl Recorder {
    fn offline_count(&self, user: &UserId) -> usize {
        self.offline
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, u)| u == user)
            .count()
    }

    fn disconnects(&self, node: &str) -> usize {
        self.disconnects
            .lock()
            .unwrap()
            .get(node)
            .copied()
            .unwrap_or(0)
    }
}

async fn node(url: &str, prefix: &str, id: &str, rec: &Arc<Recorder>) -> Arc<Nodes> {
    let r = redis(url, prefix, id).await;
    let nodes = Nodes::start(r, NodeTimes::from(&config(url, prefix)))
        .await
        .expect("node starts");
    nodes.set_hooks(Arc::new(NodeHooks {
        node: id.to_owned(),
        rec: rec.clone(),
    }));
    nodes
}

fn uid(s: &str) -> UserId {
    UserId::parse(s).expect("id")
}

fn ip(s: &str) -> IpKey {
    IpKey::new(s.parse().expect("ip"), 64)
}

fn caps(per_user: usize, per_ip: usize) -> ConnectionPolicy {
    ConnectionPolicy {
        max_per_user: per_user,
        max_per_ip: per_ip,
        max_total: 1000,
    }
}

async fn wait_for(what: &str, within: Duration, mut cond: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_a_node_whose_lease_is_deleted_is_fenced_then_rejoins_clean() {
    let url = redis_url();
    let p = prefix("fence");
    let rec = Arc::new(Recorder::default());
    let a = node(&url, &p, "a", &rec).await;
    let raw = redis(&url, &p, "inspector").await;
    let presence = Presence::new(a.clone());
    let alice = uid("alice");
    let old_slot = presence
        .acquire(&alice, ip("10.0.0.1"), &caps(5, 50))
        .await
        .expect("slot");
    assert!(presence.online(&alice).await.unwrap());
    let lease: Option<String> = raw.client().get(format!("{p}:node:a")).await.unwrap();
    let old_token = lease.expect("a lease");

    // Someone (an operator, a flush) removes the lease: `a` must notice at
    // its next heartbeat, fence, disconnect its sockets and rejoin.
    let _: i64 = raw.client().del(format!("{p}:node:a")).await.unwrap();
    wait_for(
        "fenced and disconnected",
        Duration::from_millis(20 * HEARTBEAT_MS),
        async || rec.disconnects("a") == 1,
    )
    .await;
    wait_for(
        "rejoined",
        Duration::from_millis(20 * HEARTBEAT_MS),
        async || !a.is_fenced(),
    )
    .await;
    let lease: Option<String> = raw.client().get(format!("{p}:node:a")).await.unwrap();
    let new_token = lease.expect("a fresh lease");
    assert_ne!(new_token, old_token, "a rejoins with a fresh token");
    // Its previous incarnation's entries are gone, and alice was reported
    // offline (after the new lease, so the transition can commit).
    assert!(!presence.online(&alice).await.unwrap());
    wait_for(
        "alice reported offline",
        Duration::from_millis(20 * HEARTBEAT_MS),
        async || rec.offline_count(&alice) == 1,
    )
    .await;
    let users: HashMap<String, i64> = raw
        .client()
        .hgetall(format!("{p}:node:a:users"))
        .await
        .unwrap();
    assert!(users.is_empty(), "{users:?}");

    // Alice reconnects to the rejoined node; the old socket's late release
    // must not take the new socket's count.
    let new_slot = presence
        .acquire(&alice, ip("10.0.0.1"), &caps(5, 50))
        .await
        .expect("slot again");
    old_slot.release().await;
    assert!(
        presence.online(&alice).await.unwrap(),
        "the stale release changed nothing"
    );
    new_slot.release().await;
    assert!(!presence.online(&alice).await.unwrap());
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_a_dead_node_is_cleaned_up_once_by_one_live_node_within_the_bound() {
    let url = redis_url();
    let p = prefix("dead");
    let rec = Arc::new(Recorder::default());
    let a = node(&url, &p, "a", &rec).await;
    let b = node(&url, &p, "b", &rec).await;
    let c = node(&url, &p, "c", &rec).await;
    let raw = redis(&url, &p, "inspector").await;
    let (on_a, on_b) = (Presence::new(a.clone()), Presence::new(b.clone()));
    let (alice, bob, carol) = (uid("alice"), uid("bob"), uid("carol"));
    let office = ip("203.0.113.7");
    let mut held = Vec::new();
    for user in [&alice, &alice, &bob, &carol] {
        held.push(
            on_a.acquire(user, office, &caps(5, 50))
                .await
                .expect("on a"),
        );
    }
    held.push(
        on_a.acquire(&alice, ip("198.51.100.1"), &caps(5, 50))
            .await
            .expect("on a"),
    );
    let bob_on_b = on_b
        .acquire(&bob, office, &caps(5, 50))
        .await
        .expect("on b");

    // kill -9: no release, no cleanup, no more heartbeats.
    a.halt();
    for slot in held {
        std::mem::forget(slot);
    }
    let died = Instant::now();
    let took = wait_for(
        "a's entries removed",
        Duration::from_millis(4 * NODE_TIMEOUT_MS),
        async || {
            let users: i64 = raw
                .client()
                .exists(format!("{p}:node:a:users"))
                .await
                .unwrap();
            let member: bool = raw
                .client()
                .sismember(format!("{p}:nodes"), "a")
                .await
                .unwrap();
            users == 0 && !member
        },
    )
    .await;
    // Bound: node_timeout + one heartbeat, plus slack for a loaded 2-core box.
    assert!(
        took <= Duration::from_millis(NODE_TIMEOUT_MS + HEARTBEAT_MS + 400),
        "cleaned up after {took:?}"
    );
    let _ = died;
    // Alice and carol had sockets only on a: reported offline exactly once,
    // by one node. Bob still has his socket on b.
    wait_for(
        "offline reports",
        Duration::from_millis(10 * HEARTBEAT_MS),
        async || rec.offline_count(&alice) == 1 && rec.offline_count(&carol) == 1,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(3 * HEARTBEAT_MS)).await;
    assert_eq!(rec.offline_count(&alice), 1);
    assert_eq!(rec.offline_count(&carol), 1);
    assert_eq!(rec.offline_count(&bob), 0);
    let reporters: std::collections::HashSet<String> = rec
        .offline
        .lock()
        .unwrap()
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(reporters.len(), 1, "one claimer: {reporters:?}");
    assert!(!reporters.contains("a"));
    let bob_conns: HashMap<String, i64> = raw
        .client()
        .hgetall(format!("{p}:conn:user:bob"))
        .await
        .unwrap();
    assert_eq!(bob_conns, HashMap::from([("b".to_owned(), 1)]));
    let ip_conns: HashMap<String, i64> = raw
        .client()
        .hgetall(format!("{p}:conn:ip:203.0.113.7"))
        .await
        .unwrap();
    assert_eq!(ip_conns, HashMap::from([("b".to_owned(), 1)]));
    let alice_conns: i64 = raw
        .client()
        .exists(format!("{p}:conn:user:alice"))
        .await
        .unwrap();
    assert_eq!(alice_conns, 0);
    assert!(!on_b.online(&alice).await.unwrap());
    assert!(on_b.online(&bob).await.unwrap());
    assert_eq!(
        on_b.online_many(&[alice.clone(), bob.clone(), carol.clone()])
            .await
            .unwrap(),
        vec![false, true, false]
    );
    assert_eq!(
        rec.disconnects("b") + rec.disconnects("c"),
        0,
        "live nodes stay up"
    );
    bob_on_b.release().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_connection_caps_hold_across_two_nodes() {
    let url = redis_url();
    let p = prefix("caps");
    let rec = Arc::new(Recorder::default());
    let a = node(&url, &p, "a", &rec).await;
    let b = node(&url, &p, "b", &rec).await;
    let (on_a, on_b) = (Presence::new(a.clone()), Presence::new(b.clone()));
    let alice = uid("alice");
    let home = ip("2001:db8:1:2::1");
    let limits = caps(2, 3);

    let first = on_a.acquire(&alice, home, &limits).await.expect("1 on a");
    let second = on_b.acquire(&alice, home, &limits).await.expect("2 on b");
    assert_eq!(
        on_a.acquire(&alice, home, &limits).await.err(),
        Some(AcquireError::Cap(CapExceeded::PerUser))
    );
    assert_eq!(
        on_b.acquire(&alice, home, &limits).await.err(),
        Some(AcquireError::Cap(CapExceeded::PerUser))
    );
    // The same /64: one more user fits the IP cap of 3, then it is full.
    let bob = uid("bob");
    let third = on_b
        .acquire(&bob, ip("2001:db8:1:2:ffff::9"), &limits)
        .await
        .expect("3 from the /64");
    assert_eq!(
        on_a.acquire(&bob, home, &limits).await.err(),
        Some(AcquireError::Cap(CapExceeded::PerIp))
    );
    // A release on b frees a slot for a connection on a.
    second.release().await;
    let again = on_a.acquire(&alice, home, &limits).await.expect("freed");
    assert!(on_b.online(&alice).await.unwrap());
    first.release().await;
    assert!(on_b.online(&alice).await.unwrap(), "one socket left on a");
    again.release().await;
    assert!(!on_a.online(&alice).await.unwrap());
    // The user's last socket anywhere: reported offline once, at release.
    assert_eq!(rec.offline_count(&alice), 1);
    drop(third);
    wait_for(
        "a dropped slot is released",
        Duration::from_secs(2),
        async || !on_a.online(&bob).await.unwrap(),
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

fn policy(rate: Rate) -> RateLimitPolicy {
    RateLimitPolicy {
        call_initiate: rate,
        call_control: rate,
        rooms: rate,
        handshake_per_ip: rate,
        session_open_per_ip: rate,
        group_changes: rate,
        login_per_ip: rate,
        login_per_username: rate,
        register_per_ip: rate,
        disconnect_after: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_eleven_initiates_alternating_between_two_nodes_are_limited_like_one_node() {
    let url = redis_url();
    let p = prefix("gcra");
    let rate = Rate {
        per_minute: 10,
        burst: 5,
    };
    let on_a = ClusterRates::new(redis(&url, &p, "a").await, &policy(rate));
    let on_b = ClusterRates::new(redis(&url, &p, "b").await, &policy(rate));
    let one_node = RateLimiters::new(&policy(rate));
    let alice = uid("alice");
    let mut cluster = Vec::new();
    let mut single = Vec::new();
    for i in 0..11 {
        let node = if i % 2 == 0 { &on_a } else { &on_b };
        cluster.push(node.event(EventClass::CallInitiate, &alice).await);
        single.push(one_node.event(EventClass::CallInitiate, &alice));
    }
    let passed = |r: &[bool]| r.iter().filter(|ok| **ok).count();
    let cluster_ok: Vec<bool> = cluster.iter().map(Result::is_ok).collect();
    let single_ok: Vec<bool> = single.iter().map(Result::is_ok).collect();
    assert_eq!(
        cluster_ok, single_ok,
        "the same decisions, in the same order"
    );
    assert_eq!(passed(&cluster_ok), 5, "the burst");
    // The waits agree with governor's (the same GCRA), to clock noise.
    for (c, s) in cluster.iter().zip(&single) {
        if let (Err(Limited::Wait(c)), Err(s)) = (c, s) {
            let diff = c.0.abs_diff(s.0);
            assert!(diff < Duration::from_millis(250), "{c:?} vs {s:?}");
            assert!(c.as_millis() >= 1);
        }
    }
    // Other classes and other users have their own buckets.
    assert!(on_b.event(EventClass::CallControl, &alice).await.is_ok());
    assert!(
        on_b.event(EventClass::CallInitiate, &uid("bob"))
            .await
            .is_ok()
    );
    // A login refused by its IP bucket charges nothing to the username's.
    let login = Rate {
        per_minute: 1,
        burst: 2,
    };
    let mut p2 = policy(rate);
    p2.login_per_ip = login;
    p2.login_per_username = Rate {
        per_minute: 1,
        burst: 3,
    };
    on_a.replace(&p2);
    on_b.replace(&p2);
    let carol = callgate::domain::Username::parse("carol").unwrap();
    let attacker = ip("203.0.113.1");
    assert!(on_a.login(attacker, Some(&carol)).await.is_ok());
    assert!(on_b.login(attacker, Some(&carol)).await.is_ok());
    for _ in 0..5 {
        assert!(matches!(
            on_a.login(attacker, Some(&carol)).await,
            Err(Limited::Wait(_))
        ));
    }
    let other = ip("203.0.113.2");
    assert!(on_b.login(other, Some(&carol)).await.is_ok());
    assert!(on_a.login(other, Some(&carol)).await.is_ok());
}

/// A redis-server of the test's own, on a fixed free port, to stop and
/// start again.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    fn binary() -> String {
        std::env::var("CALLGATE_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
    }

    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Self {
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        r.up();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let child = std::process::Command::new(Self::binary())
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): install redis-server or set CALLGATE_TEST_REDIS_SERVER",
                    Self::binary()
                )
            });
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.down();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run with --include-ignored (CALLGATE_TEST_REDIS_SERVER names the binary)"]
async fn redis_restart_every_check_fails_fast_while_down_then_heals() {
    // Needs CALLGATE_TEST_REDIS_URL like the others only to be run by the
    // same switch; it uses a server of its own.
    let mut server = OwnRedis::start();
    let url = server.url();
    let p = prefix("restart");
    let rec = Arc::new(Recorder::default());
    let a = node(&url, &p, "a", &rec).await;
    let presence = Presence::new(a.clone());
    let rates = ClusterRates::new(
        redis(&url, &p, "a-rates").await,
        &policy(Rate {
            per_minute: 600,
            burst: 100,
        }),
    );
    let alice = uid("alice");
    let home = ip("10.0.0.1");
    let slot = presence
        .acquire(&alice, home, &caps(5, 50))
        .await
        .expect("slot");
    assert!(rates.event(EventClass::Rooms, &alice).await.is_ok());

    server.down();
    // Every check answers within the command bound (200 ms) plus slack,
    // never hangs, and says unavailable (or fenced, once the lease lapsed).
    let bound = Duration::from_millis(4 * REDIS_TIMEOUT_MS + 200);
    for _ in 0..3 {
        let t = Instant::now();
        let r = presence.acquire(&alice, home, &caps(5, 50)).await;
        assert!(matches!(r, Err(AcquireError::Cluster(_))), "{:?}", r.err());
        let r = rates.event(EventClass::Rooms, &alice).await;
        assert_eq!(r, Err(Limited::Cluster(ClusterError::Unavailable)));
        let r = presence.online(&alice).await;
        assert_eq!(r, Err(ClusterError::Unavailable));
        assert!(t.elapsed() < 3 * bound, "took {:?}", t.elapsed());
    }
    // Down for longer than node_timeout: the node fences itself and drops
    // its sockets (they reconnect elsewhere).
    wait_for(
        "fenced while Redis is down",
        Duration::from_millis(3 * NODE_TIMEOUT_MS),
        async || a.is_fenced() && rec.disconnects("a") == 1,
    )
    .await;
    let t = Instant::now();
    assert_eq!(
        presence.acquire(&alice, home, &caps(5, 50)).await.err(),
        Some(AcquireError::Cluster(ClusterError::Fenced))
    );
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "fenced answers from memory"
    );
    // The old socket goes (its release cannot reach Redis).
    drop(slot);

    // Redis comes back, empty (no persistence): the node rejoins by itself.
    server.up();
    wait_for(
        "rejoined after the restart",
        Duration::from_secs(10),
        async || !a.is_fenced(),
    )
    .await;
    wait_for("checks work again", Duration::from_secs(5), async || {
        rates.event(EventClass::Rooms, &alice).await.is_ok()
    })
    .await;
    let slot = presence
        .acquire(&alice, home, &caps(5, 50))
        .await
        .expect("slot after heal");
    assert!(presence.online(&alice).await.unwrap());
    slot.release().await;
    assert!(!presence.online(&alice).await.unwrap());
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_a_graceful_shutdown_deletes_the_lease_and_cleans_up_at_once() {
    let url = redis_url();
    let p = prefix("shutdown");
    let rec = Arc::new(Recorder::default());
    let a = node(&url, &p, "a", &rec).await;
    let b = node(&url, &p, "b", &rec).await;
    let raw = redis(&url, &p, "inspector").await;
    let alice = uid("alice");
    let slot = Presence::new(a.clone())
        .acquire(&alice, ip("10.0.0.1"), &caps(5, 50))
        .await
        .expect("slot");
    std::mem::forget(slot);
    a.shutdown().await;
    // Reported by a itself, before its lease went.
    assert_eq!(
        rec.offline.lock().unwrap().as_slice(),
        &[("a".to_owned(), alice.clone())]
    );
    let lease: i64 = raw.client().exists(format!("{p}:node:a")).await.unwrap();
    let member: bool = raw
        .client()
        .sismember(format!("{p}:nodes"), "a")
        .await
        .unwrap();
    let users: i64 = raw
        .client()
        .exists(format!("{p}:node:a:users"))
        .await
        .unwrap();
    assert_eq!((lease, member, users), (0, false, 0));
    assert!(!Presence::new(b.clone()).online(&alice).await.unwrap());
    // The id is free at once for a restarted node.
    let a2 = node(&url, &p, "a", &rec).await;
    assert!(!a2.is_fenced());
    a2.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_sockets_of_a_dead_node_count_for_nothing_even_before_its_cleanup() {
    let url = redis_url();
    let p = prefix("uncleaned");
    let rec = Arc::new(Recorder::default());
    let a = node(&url, &p, "a", &rec).await;
    // b has no hooks yet, so it does not sweep: a's entries stay in Redis.
    let b = Nodes::start(
        redis(&url, &p, "b").await,
        NodeTimes::from(&config(&url, &p)),
    )
    .await
    .expect("b");
    let raw = redis(&url, &p, "inspector").await;
    let (on_a, on_b) = (Presence::new(a.clone()), Presence::new(b.clone()));
    let alice = uid("alice");
    let home = ip("10.0.0.1");
    for _ in 0..2 {
        std::mem::forget(on_a.acquire(&alice, home, &caps(2, 2)).await.expect("on a"));
    }
    assert_eq!(
        on_b.acquire(&alice, home, &caps(2, 2)).await.err(),
        Some(AcquireError::Cap(CapExceeded::PerUser))
    );
    a.halt();
    let _: i64 = raw.client().del(format!("{p}:node:a")).await.unwrap();
    // a's two sockets are still written down, but a is dead: alice is
    // offline and may reconnect her two tabs to b at once.
    let alice_conns: HashMap<String, i64> = raw
        .client()
        .hgetall(format!("{p}:conn:user:alice"))
        .await
        .unwrap();
    assert_eq!(alice_conns, HashMap::from([("a".to_owned(), 2)]));
    assert!(!on_b.online(&alice).await.unwrap());
    let one = on_b
        .acquire(&alice, home, &caps(2, 2))
        .await
        .expect("1 on b");
    let two = on_b
        .acquire(&alice, home, &caps(2, 2))
        .await
        .expect("2 on b");
    assert_eq!(
        on_b.acquire(&alice, home, &caps(2, 2)).await.err(),
        Some(AcquireError::Cap(CapExceeded::PerUser))
    );
    one.release().await;
    two.release().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_racing_sweeps_clean_each_dead_node_exactly_once() {
    let url = redis_url();
    let p = prefix("race");
    let rec = Arc::new(Recorder::default());
    let b = node(&url, &p, "b", &rec).await;
    let c = node(&url, &p, "c", &rec).await;
    let raw = redis(&url, &p, "inspector").await;
    for round in 0..10 {
        let id = format!("d{round}");
        let d = node(&url, &p, &id, &rec).await;
        let user = uid(&format!("u{round}"));
        for n in 0..3 {
            let ip = ip(&format!("10.0.{round}.{n}"));
            std::mem::forget(
                Presence::new(d.clone())
                    .acquire(&user, ip, &caps(5, 5))
                    .await
                    .expect("slot"),
            );
        }
        d.halt();
        let _: i64 = raw.client().del(format!("{p}:node:{id}")).await.unwrap();
        let mut sweeps = tokio::task::JoinSet::new();
        for _ in 0..4 {
            for n in [&b, &c] {
                let n = n.clone();
                sweeps.spawn(async move { n.sweep().await });
            }
        }
        let mut cleaned = 0;
        while let Some(r) = sweeps.join_next().await {
            cleaned += r.unwrap().map_or(0, |v| v.len());
        }
        wait_for(
            "reported",
            Duration::from_millis(10 * HEARTBEAT_MS),
            async || rec.offline_count(&user) >= 1,
        )
        .await;
        assert!(cleaned <= 1, "round {round}: cleaned {cleaned} times");
        assert_eq!(rec.offline_count(&user), 1, "round {round}");
        let left: i64 = raw
            .client()
            .exists(format!("{p}:conn:user:{user}"))
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
    tokio::time::sleep(Duration::from_millis(3 * HEARTBEAT_MS)).await;
    let reports = rec.offline.lock().unwrap().len();
    assert_eq!(reports, 10, "one report per dead node's user");
    b.shutdown().await;
    c.shutdown().await;
}

/// The adapter reads cross-node events from the subscriber client's pub/sub
/// channel. A node busy elsewhere for a moment (a burst of calls, a GC pause
/// of its host) reads them late: the channel must hold the burst, not drop
/// the oldest. With fred's default of 32 slots this loses all but the last
/// 32 of the burst, and each loss is an event that never reached its user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: set CALLGATE_TEST_REDIS_URL and run with --include-ignored"]
async fn redis_a_burst_of_cross_node_events_read_late_is_not_dropped() {
    use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
    use tokio::sync::broadcast::error::TryRecvError;

    const BURST: usize = 1000;
    let url = redis_url();
    let p = prefix("burst");
    let sub = Redis::subscriber(&config(&url, &p)).expect("subscriber");
    sub.init().await.expect("connect the subscriber");
    let channel = format!("{p}-burst");
    sub.ssubscribe(channel.clone()).await.expect("ssubscribe");
    // Subscribed, but nobody reads yet: the reader is busy.
    let mut rx = sub.message_rx();
    let publisher = redis(&url, &p, "publisher").await;
    let pipe = publisher.client().pipeline();
    for i in 0..BURST {
        let _: () = pipe.spublish(channel.clone(), i.to_string()).await.unwrap();
    }
    let receivers: Vec<i64> = pipe.all().await.expect("spublish");
    assert!(receivers.iter().all(|&n| n == 1), "one subscriber each");

    // Every message reached the client (Redis sent them all), then the
    // reader catches up: all of them are there, in order.
    let mut got = Vec::with_capacity(BURST);
    let start = Instant::now();
    while got.len() < BURST {
        match rx.try_recv() {
            Ok(msg) => got.push(msg.value.convert::<String>().unwrap()),
            Err(TryRecvError::Empty) => {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "only {} of {BURST} arrived",
                    got.len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("after {} messages: {e}", got.len()),
        }
    }
    let want: Vec<String> = (0..BURST).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
    let _ = sub.quit().await;
}
