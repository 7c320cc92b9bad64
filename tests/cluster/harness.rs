//! The cluster harness: real `callgate` processes on free loopback ports, one
//! shared seed file (real argon2id hashes), one Redis, a key prefix per test,
//! and real Socket.IO clients (rust_socketio) connected to named nodes.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rust_socketio::asynchronous::{Client as SioClient, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// The Redis every node of a test uses (a real one; scripts/test starts it).
pub const REDIS_URL_VAR: &str = "CALLGATE_TEST_REDIS_URL";
/// The redis-server binary, for tests that stop and restart a Redis of their own.
pub const REDIS_SERVER_VAR: &str = "CALLGATE_TEST_REDIS_SERVER";
/// The HS256 secret every node shares (a token minted for one node is good on all).
pub const SECRET: &str = "cluster-test-secret-cluster-test-secret-0123";
/// The password of every seeded user.
pub const PASSWORD: &str = "correct horse battery";
/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does not happen.
pub const QUIET: Duration = Duration::from_millis(600);

/// Node liveness in the tests: a lease renewed every 250 ms, dead after
/// 1.5 s (six renewals of margin: debug builds on a loaded 2-core machine
/// must not miss a lease by accident).
pub const HEARTBEAT_MS: u64 = 250;
pub const NODE_TIMEOUT_MS: u64 = 1500;
pub const TIMER_POLL_MS: u64 = 50;
/// The bound on each Redis command of every node (`cluster.redis_timeout_ms`,
/// the default, set explicitly so the tests that time an `unavailable`
/// answer bound it by what the nodes run with).
pub const REDIS_TIMEOUT_MS: u64 = 300;
/// A dead node is accounted for within node_timeout + heartbeat; the tests
/// allow that plus slack for a loaded 2-core machine.
pub const DEAD_NODE_BOUND: Duration = Duration::from_millis(NODE_TIMEOUT_MS + HEARTBEAT_MS + 3000);

/// The shared Redis, or a failure saying how to get one (never a silent pass).
pub fn redis_url() -> String {
    std::env::var(REDIS_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{REDIS_URL_VAR} is not set: the redis_* tests need a Redis 7+ \
             (bash scripts/test starts one; see README)"
        )
    })
}

fn redis_server_bin() -> String {
    std::env::var(REDIS_SERVER_VAR).unwrap_or_else(|_| "redis-server".into())
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

// ---------------------------------------------------------------- Redis ----

/// `host:port` and password of a `redis://[:password@]host:port[/db]` URL.
fn redis_target(url: &str) -> (String, Option<String>) {
    let rest = url
        .strip_prefix("redis://")
        .unwrap_or_else(|| panic!("{REDIS_URL_VAR}: only redis:// URLs are supported here"));
    let rest = rest.split('/').next().unwrap_or(rest);
    match rest.rsplit_once('@') {
        Some((auth, host)) => {
            let password = auth.rsplit_once(':').map_or(auth, |(_, p)| p);
            (host.to_string(), Some(password.to_string()))
        }
        None => (rest.to_string(), None),
    }
}

/// One RESP reply, as text (arrays are flattened, one element per line).
fn read_reply(r: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end_matches("\r\n").to_string();
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "+" | ":" => Ok(rest.to_string()),
        "-" => Err(rest.to_string()),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| format!("bad reply {line}"))?;
            if n < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf).map_err(|e| e.to_string())?;
            buf.truncate(n as usize);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| format!("bad reply {line}"))?;
            let mut out = Vec::new();
            for _ in 0..n.max(0) {
                out.push(read_reply(r)?);
            }
            Ok(out.join("\n"))
        }
        _ => Err(format!("unexpected reply {line:?}")),
    }
}

/// Runs one command on the Redis at `url` (a plain RESP client, for checks
/// and clean-up; the nodes use their own driver).
pub fn redis_cmd(url: &str, args: &[&str]) -> Result<String, String> {
    let (host, password) = redis_target(url);
    let stream = TcpStream::connect(&host).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut w = stream.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(stream);
    let send = |w: &mut TcpStream, args: &[&str]| -> Result<(), String> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        w.write_all(out.as_bytes()).map_err(|e| e.to_string())
    };
    if let Some(p) = password {
        send(&mut w, &["AUTH", &p])?;
        read_reply(&mut r)?;
    }
    send(&mut w, args)?;
    read_reply(&mut r)
}

/// `INFO commandstats` as (command, calls), for the benchmark and checks.
pub fn command_calls(url: &str) -> Vec<(String, u64)> {
    let info = redis_cmd(url, &["INFO", "commandstats"]).unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let l = l.strip_prefix("cmdstat_")?;
            let (name, rest) = l.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// A redis-server of a test's own (for the tests that stop and restart it):
/// loopback, a fixed port across restarts, no persistence.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut s = Self {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let child = Command::new(redis_server_bin())
            .args(["--bind", "127.0.0.1", "--port", &port])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): set {REDIS_SERVER_VAR} (bash scripts/test does)",
                    redis_server_bin()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if redis_cmd(&self.url(), &["PING"]).as_deref() == Ok("PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    /// kill -9: the data is gone (no persistence), as after a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------- directory ----

/// A seeded user: id, username, display name.
#[derive(Debug, Clone)]
pub struct User {
    pub id: &'static str,
    pub username: &'static str,
    pub name: &'static str,
}

pub const ALICE: User = User {
    id: "u-alice",
    username: "alice",
    name: "Alice Adams",
};
pub const BOB: User = User {
    id: "u-bob",
    username: "bob",
    name: "Bob Brown",
};
pub const CAROL: User = User {
    id: "u-carol",
    username: "carol",
    name: "Carol Clark",
};
/// In the directory, in no group.
pub const MALLORY: User = User {
    id: "u-mallory",
    username: "mallory",
    name: "Mallory Moe",
};
/// Alice, Bob and Carol; Alice owns it.
pub const TEAM: &str = "g-team";

/// One real argon2id hash of [`PASSWORD`] (callgate's own parameters), made
/// once per test binary by `callgate hash-password`.
fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .arg("hash-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("callgate hash-password runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("output");
        assert!(out.status.success(), "hash-password failed");
        let hash = String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        hash
    })
    .clone()
}

fn seed_json() -> Value {
    let hash = password_hash();
    let users: Vec<Value> = [ALICE, BOB, CAROL, MALLORY]
        .iter()
        .map(|u| json!({ "id": u.id, "username": u.username, "displayName": u.name, "passwordHash": hash }))
        .collect();
    json!({
        "users": users,
        "groups": [{ "id": TEAM, "name": "Team", "owner": ALICE.id,
                     "members": [ALICE.id, BOB.id, CAROL.id] }],
    })
}

/// The policy every node of a test loads: limits lifted unless a test sets
/// them, the call timers as the test needs.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    pub ring_timeout_secs: u64,
    pub ringing_grace_secs: u64,
    pub reconnect_grace_secs: u64,
    /// `(per_minute, burst)` for call_initiate; lifted when `None`.
    pub call_initiate: Option<(u64, u64)>,
    pub max_per_user: u32,
}

impl Default for PolicyFile {
    fn default() -> Self {
        Self {
            ring_timeout_secs: 30,
            ringing_grace_secs: 5,
            reconnect_grace_secs: 10,
            call_initiate: None,
            max_per_user: 100,
        }
    }
}

impl PolicyFile {
    fn render(&self) -> String {
        let lots = "{ per_minute = 1000000, burst = 100000 }";
        let initiate = self.call_initiate.map_or(lots.to_string(), |(p, b)| {
            format!("{{ per_minute = {p}, burst = {b} }}")
        });
        format!(
            "[calls]\nring_timeout_secs = {}\nringing_grace_secs = {}\nreconnect_grace_secs = {}\n\n\
             [rate_limits]\ncall_initiate = {initiate}\ncall_control = {lots}\nrooms = {lots}\n\
             handshake_per_ip = {lots}\nsession_open_per_ip = {lots}\ngroup_changes = {lots}\n\
             login_per_ip = {lots}\nlogin_per_username = {lots}\nregister_per_ip = {lots}\n\n\
             [connections]\nmax_per_user = {}\nmax_per_ip = 10000\nmax_total = 10000\n",
            self.ring_timeout_secs,
            self.ringing_grace_secs,
            self.reconnect_grace_secs,
            self.max_per_user
        )
    }
}

// -------------------------------------------------------------- nodes ----

/// One callgate process of the cluster.
pub struct Node {
    /// Its `cluster.node_id`.
    pub id: String,
    pub port: u16,
    /// The Redis this node talks to, when not the cluster's (a proxy that a
    /// test can cut, say).
    redis_url: Option<String>,
    child: Option<Child>,
    logs: Arc<Mutex<VecDeque<String>>>,
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The last lines this node logged (all runs of it).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").iter().cloned().collect()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = http()
            .get(self.url(path))
            .timeout(WAIT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", self.id));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The node id this port's `GET /healthz` names.
    pub async fn reported_id(&self) -> String {
        let (status, body) = self.get("/healthz").await;
        assert_eq!(status, 200, "/healthz on {}: {body}", self.id);
        body["node"]
            .as_str()
            .unwrap_or_else(|| panic!("GET /healthz names no node (\"node\" field): {body}"))
            .to_string()
    }
}

fn http() -> &'static reqwest::Client {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    HTTP.get_or_init(reqwest::Client::new)
}

/// Two or three nodes on one Redis with one seed and one policy.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub redis_url: String,
    /// This test's `cluster.key_prefix`.
    pub prefix: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes (`node-a`, `node-b`, ...) on the shared Redis.
    pub async fn start(n: usize, policy: PolicyFile) -> Self {
        Self::start_on(redis_url(), n, policy).await
    }

    /// `n` nodes on the Redis at `redis_url`.
    pub async fn start_on(redis_url: String, n: usize, policy: PolicyFile) -> Self {
        Self::start_with(redis_url, n, policy, &[]).await
    }

    /// `n` nodes on the Redis at `redis_url`, except those in `via`: node
    /// `i` reaches Redis at the URL given with it.
    pub async fn start_with(
        redis_url: String,
        n: usize,
        policy: PolicyFile,
        via: &[(usize, String)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("seed.json"), seed_json().to_string()).expect("seed");
        std::fs::write(dir.path().join("policy.toml"), policy.render()).expect("policy");
        let prefix = format!("cgtest-{}", uuid::Uuid::new_v4().simple());
        let mut cluster = Self {
            nodes: Vec::new(),
            redis_url,
            prefix,
            dir,
        };
        for i in 0..n {
            let id = format!("node-{}", (b'a' + i as u8) as char);
            cluster.nodes.push(Node {
                id,
                port: free_port(),
                redis_url: via.iter().find(|(j, _)| *j == i).map(|(_, u)| u.clone()),
                child: None,
                logs: Arc::new(Mutex::new(VecDeque::new())),
            });
            cluster.spawn(i).await;
        }
        cluster
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts node `i` (again) on its port, waits until it listens, and
    /// checks that its `/healthz` names it.
    async fn spawn(&mut self, i: usize) {
        let (seed, policy) = (self.path("seed.json"), self.path("policy.toml"));
        let node = &mut self.nodes[i];
        let listen = format!("127.0.0.1:{}", node.port);
        let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args(["serve", "--listen", &listen, "--seed"])
            .arg(&seed)
            .arg("--policy")
            .arg(&policy)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CALLGATE_JWT_SECRET", SECRET)
            .env(
                "CALLGATE_REDIS_URL",
                node.redis_url.as_deref().unwrap_or(&self.redis_url),
            )
            .env("CALLGATE__CLUSTER__NODE_ID", &node.id)
            .env("CALLGATE__CLUSTER__KEY_PREFIX", &self.prefix)
            .env("CALLGATE__CLUSTER__HEARTBEAT_MS", HEARTBEAT_MS.to_string())
            .env(
                "CALLGATE__CLUSTER__NODE_TIMEOUT_MS",
                NODE_TIMEOUT_MS.to_string(),
            )
            .env(
                "CALLGATE__CLUSTER__TIMER_POLL_MS",
                TIMER_POLL_MS.to_string(),
            )
            .env(
                "CALLGATE__CLUSTER__REDIS_TIMEOUT_MS",
                REDIS_TIMEOUT_MS.to_string(),
            )
            .env("CALLGATE__SERVER__SHUTDOWN_GRACE_SECS", "2")
            .env("CALLGATE__LOG__FORMAT", "text")
            .env("CALLGATE__LOG__COLOR", "never")
            .env("RUST_LOG", "info,socketioxide=warn,engineioxide=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("callgate runs");
        let stderr = child.stderr.take().expect("stderr");
        let logs = node.logs.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let tag = node.id.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("callgate listening") {
                    let _ = ready_tx.send(());
                }
                let mut logs = logs.lock().expect("logs");
                if logs.len() >= 400 {
                    logs.pop_front();
                }
                logs.push_back(format!("[{tag}] {line}"));
            }
        });
        node.child = Some(child);
        let started =
            tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(20)))
                .await
                .expect("join");
        if started.is_err() {
            panic!(
                "{} did not start listening:\n{}",
                node.id,
                node.logs().join("\n")
            );
        }
        let reported = node.reported_id().await;
        assert_eq!(
            reported, node.id,
            "port {} is not the node it was started as",
            node.port
        );
    }

    /// Asserts that every node not stopped by the test still runs.
    pub fn assert_running(&mut self) {
        for node in &mut self.nodes {
            if node.child.is_some() {
                assert!(
                    node.is_running(),
                    "{} exited:\n{}",
                    node.id,
                    node.logs().join("\n")
                );
            }
        }
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// kill -9: no shutdown, no clean-up; its sockets just vanish.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: the drain (`serverShutdown`, then close). Waits for the exit.
    pub async fn terminate(&mut self, i: usize) {
        let Some(mut child) = self.nodes[i].child.take() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exited = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(s)) = child.try_wait() {
                    return Ok(s);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            Err(())
        })
        .await
        .expect("join");
        let status =
            exited.unwrap_or_else(|()| panic!("{} did not exit after SIGTERM", self.nodes[i].id));
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM",
            self.nodes[i].id
        );
    }

    /// Starts node `i` again with the same id and port.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i).await;
    }

    /// Connects `user` to node `i` with a fresh valid token and checks that
    /// the socket is on that node.
    pub async fn connect(&self, i: usize, user: &User) -> Client {
        self.try_connect(i, user).await.unwrap_or_else(|e| {
            panic!(
                "{} cannot connect to {}: {e}",
                user.username, self.nodes[i].id
            )
        })
    }

    /// As [`Cluster::connect`], `Err` carrying the `connect_error` message.
    pub async fn try_connect(&self, i: usize, user: &User) -> Result<Client, String> {
        let node = &self.nodes[i];
        let client = Client::connect(node, user, &token(user.id)).await?;
        assert_eq!(
            client.node, node.id,
            "{} landed on the wrong node",
            user.username
        );
        Ok(client)
    }

    /// Connects `user` to node `i` as soon as a connection slot is free
    /// (refusals meanwhile must be `too_many_connections`), within `within`.
    pub async fn connect_when_free(&self, i: usize, user: &User, within: Duration) -> Client {
        self.connect_within(i, user, within, &["too_many_connections"])
            .await
    }

    /// Connects `user` to node `i` within `within`, retrying while the
    /// refusal is one of `allowed`.
    pub async fn connect_within(
        &self,
        i: usize,
        user: &User,
        within: Duration,
        allowed: &[&str],
    ) -> Client {
        let deadline = Instant::now() + within;
        loop {
            match self.try_connect(i, user).await {
                Ok(c) => return c,
                Err(e) => assert!(allowed.contains(&e.as_str()), "unexpected refusal: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "{} found no free connection slot on {} within {within:?}",
                user.username,
                self.nodes[i].id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node's `/readyz` answers `status`.
    pub async fn wait_ready(&self, status: u16, within: Duration) {
        let deadline = Instant::now() + within;
        for node in &self.nodes {
            if node.child.is_none() {
                continue;
            }
            loop {
                let got = http()
                    .get(node.url("/readyz"))
                    .timeout(WAIT)
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                if got.as_ref().ok() == Some(&status) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} /readyz is {got:?}, not {status}, after {within:?}",
                    node.id
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                let logs = node.logs();
                let tail = &logs[logs.len().saturating_sub(60)..];
                eprintln!(
                    "---- last log lines of {} ----\n{}",
                    node.id,
                    tail.join("\n")
                );
            }
        }
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        // Leave the shared Redis as it was found.
        let script = "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) n = n + 1 end return n";
        let _ = redis_cmd(
            &self.redis_url,
            &["EVAL", script, "0", &format!("{}:*", self.prefix)],
        );
    }
}

// ------------------------------------------------------------- tokens ----

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A valid HS256 token for `user_id`, as callgate mints them.
pub fn token(user_id: &str) -> String {
    let now = unix_now();
    let claims = json!({
        "sub": user_id, "name": "x", "iat": now, "nbf": now, "exp": now + 3600,
        "iss": "callgate", "aud": "callgate", "jti": uuid::Uuid::new_v4().to_string(),
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

// ------------------------------------------------------------ clients ----

/// A real Socket.IO client on one node that records every event it receives
/// (a server-side close arrives as the event `"close"`).
pub struct Client {
    pub client: SioClient,
    pub user: &'static str,
    /// The node this client is connected to, as that port's `/healthz` says.
    pub node: String,
    pub port: u16,
    events: mpsc::UnboundedReceiver<(String, Value)>,
    backlog: Vec<(String, Value)>,
}

fn first_value(payload: Payload) -> Value {
    match payload {
        Payload::Text(mut values) if !values.is_empty() => values.swap_remove(0),
        Payload::Text(_) => Value::Null,
        #[allow(deprecated)]
        Payload::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        Payload::Binary(_) => Value::Null,
    }
}

impl Client {
    async fn connect(node: &Node, user: &User, token: &str) -> Result<Self, String> {
        let reported = node.reported_id().await;
        let (tx, rx) = mpsc::unbounded_channel::<(String, Value)>();
        let (status_tx, mut status_rx) = mpsc::unbounded_channel::<Result<(), String>>();
        let (tx_any, tx_err, tx_close) = (tx.clone(), tx.clone(), tx.clone());
        let status_ok = status_tx.clone();
        let client = ClientBuilder::new(node.url("/"))
            .transport_type(TransportType::Websocket)
            .reconnect(false)
            .auth(json!({ "token": token }))
            .on_any(move |event, payload, _| {
                let _ = tx_any.send((event.to_string(), first_value(payload)));
                async {}.boxed()
            })
            .on(Event::Connect, move |_, _| {
                let _ = status_ok.send(Ok(()));
                async {}.boxed()
            })
            .on(Event::Close, move |_, _| {
                let _ = tx_close.send(("close".to_string(), Value::Null));
                async {}.boxed()
            })
            .on(Event::Error, move |payload, _| {
                let value = first_value(payload);
                if let Some(text) = value.as_str()
                    && let Some(rest) = text.strip_prefix("Received an ConnectError frame: ")
                {
                    let message = serde_json::from_str::<Value>(rest)
                        .ok()
                        .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
                        .unwrap_or_else(|| rest.to_string());
                    let _ = status_tx.send(Err(message));
                } else {
                    let _ = tx_err.send(("error".to_string(), value));
                }
                async {}.boxed()
            })
            .connect()
            .await
            .map_err(|e| format!("transport: {e}"))?;
        match tokio::time::timeout(WAIT, status_rx.recv()).await {
            Ok(Some(Ok(()))) => Ok(Self {
                client,
                user: user.id,
                node: reported,
                port: node.port,
                events: rx,
                backlog: Vec::new(),
            }),
            Ok(Some(Err(message))) => {
                let _ = client.disconnect().await;
                Err(message)
            }
            _ => {
                let _ = client.disconnect().await;
                Err("no answer to CONNECT".into())
            }
        }
    }

    /// Emits with an ack and waits for it.
    pub async fn emit_ack(&self, event: &str, payload: Value) -> Value {
        self.emit_ack_timed(event, payload).await.0
    }

    /// Emits with an ack; the ack and how long it took, or `None` when no
    /// ack came within `within` (the socket closed, say).
    pub async fn try_emit_ack(
        &self,
        event: &str,
        payload: Value,
        within: Duration,
    ) -> Option<(Value, Duration)> {
        let (tx, rx) = oneshot::channel::<Value>();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let started = Instant::now();
        self.client
            .emit_with_ack(event, Payload::Text(vec![payload]), within, move |p, _| {
                if let Some(tx) = tx.lock().expect("lock").take() {
                    let value = match first_value(p) {
                        Value::Array(mut args) if args.len() == 1 => args.swap_remove(0),
                        other => other,
                    };
                    let _ = tx.send(value);
                }
                async {}.boxed()
            })
            .await
            .ok()?;
        let ack = tokio::time::timeout(within, rx).await.ok()?.ok()?;
        Some((ack, started.elapsed()))
    }

    /// Emits with an ack; the ack and how long it took.
    pub async fn emit_ack_timed(&self, event: &str, payload: Value) -> (Value, Duration) {
        let (tx, rx) = oneshot::channel::<Value>();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let started = Instant::now();
        self.client
            .emit_with_ack(event, Payload::Text(vec![payload]), WAIT, move |p, _| {
                if let Some(tx) = tx.lock().expect("lock").take() {
                    let value = match first_value(p) {
                        Value::Array(mut args) if args.len() == 1 => args.swap_remove(0),
                        other => other,
                    };
                    let _ = tx.send(value);
                }
                async {}.boxed()
            })
            .await
            .expect("emit");
        let ack = tokio::time::timeout(WAIT, rx)
            .await
            .unwrap_or_else(|_| panic!("no ack to {event} from {} within {WAIT:?}", self.node))
            .expect("ack");
        (ack, started.elapsed())
    }

    /// The next event named `name` (others are kept for later calls).
    pub async fn next(&mut self, name: &str) -> Value {
        self.next_within(name, WAIT).await
    }

    pub async fn next_within(&mut self, name: &str, within: Duration) -> Value {
        if let Some(i) = self.backlog.iter().position(|(n, _)| n == name) {
            return self.backlog.remove(i).1;
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((n, v))) if n == name => return v,
                Ok(Some(other)) => self.backlog.push(other),
                Ok(None) => panic!("client closed while waiting for {name}"),
                Err(_) => panic!(
                    "{} on {}: no {name} event within {within:?}; received meanwhile: {:?}",
                    self.user, self.node, self.backlog
                ),
            }
        }
    }

    /// Every event received within [`QUIET`] (and any kept earlier).
    pub async fn drain(&mut self) -> Vec<(String, Value)> {
        let mut out = std::mem::take(&mut self.backlog);
        let deadline = tokio::time::Instant::now() + QUIET;
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            out.push(e);
        }
        out
    }

    /// Asserts that no event named `name` arrives within [`QUIET`] (others
    /// are kept).
    pub async fn assert_no(&mut self, name: &str) {
        let got = self.drain().await;
        let bad: Vec<_> = got.iter().filter(|(n, _)| n == name).cloned().collect();
        self.backlog = got;
        assert!(
            bad.is_empty(),
            "{} on {} received {bad:?}",
            self.user,
            self.node
        );
    }

    /// Asserts that nothing at all arrives within [`QUIET`].
    pub async fn assert_silent(&mut self) {
        let got = self.drain().await;
        assert!(
            got.is_empty(),
            "{} on {} received {got:?}",
            self.user,
            self.node
        );
    }

    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
    }
}

/// Asserts an ack is `{ ok: true, ... }`.
#[track_caller]
pub fn ok(ack: &Value) -> &Value {
    assert_eq!(ack["ok"], true, "expected ok, got {ack}");
    ack
}

/// Until `client`'s node fences itself (its socket closes or gets
/// `serverShutdown`), every initiate it sends to `to` answers `unavailable`
/// within `fast`; the node must fence within [`DEAD_NODE_BOUND`] of `since`.
/// `why` names what happened to its Redis, for the failure message.
pub async fn unavailable_until_fenced(
    client: &mut Client,
    to: &User,
    fast: Duration,
    since: Instant,
    why: &str,
) {
    loop {
        let closed = client
            .drain()
            .await
            .iter()
            .any(|(n, _)| n == "close" || n == "serverShutdown");
        if closed {
            return;
        }
        // No ack: the socket closed under the event (the next drain sees it).
        if let Some((ack, took)) = client
            .try_emit_ack(
                "initiateVideoCall",
                json!({ "receiverId": to.id }),
                Duration::from_secs(2),
            )
            .await
        {
            failed(&ack, "unavailable");
            assert!(took < fast, "unavailable took {took:?}");
        }
        assert!(
            since.elapsed() < DEAD_NODE_BOUND,
            "{} still holds its sockets {:?} after {why}",
            client.node,
            since.elapsed()
        );
    }
}

/// Asserts an ack failed with `code`.
#[track_caller]
pub fn failed(ack: &Value, code: &str) {
    assert_eq!(ack["ok"], false, "expected {code}, got {ack}");
    assert_eq!(ack["error"]["code"], code, "expected {code}, got {ack}");
}

/// Polls `check` every 50 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------- a cuttable, slow link ----

/// A TCP proxy in front of Redis that a test can cut (every connection
/// dropped, new ones refused) and restore, or slow down: a node cut off
/// from Redis, or on a slow path to it, while the others still reach it.
pub struct Link {
    pub port: u16,
    open: Arc<std::sync::atomic::AtomicBool>,
    /// Added to every chunk forwarded from now on, in milliseconds.
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    /// Chunks on their way to Redis holding these bytes are held this long
    /// (milliseconds) instead.
    hold: Hold,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

/// What happens to a chunk on its way to Redis that holds given bytes.
#[derive(Debug, Clone, Copy)]
enum OnMatch {
    /// Held this long (milliseconds) instead of the link's delay.
    Delay(u64),
    /// Forwarded, then the connection is lost: nothing more comes back from
    /// Redis on it (the chunk's answer included), and it closes shortly
    /// after. Once: the next connection goes through.
    Lose,
}

type Hold = Arc<Mutex<Option<(Vec<u8>, OnMatch)>>>;

/// Forwards `from` to `to`, each chunk held until `delay` (read when the
/// chunk arrives) has passed since it arrived, or the time `hold` gives for
/// a chunk holding its bytes: latency, not a throughput cap (chunks in
/// flight overlap), and the byte order is kept (a chunk behind a held one
/// waits for it). An EOF is passed on once every chunk before it is written.
/// Once `lost` is set (by [`OnMatch::Lose`]), nothing more is written.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Arc<std::sync::atomic::AtomicU64>,
    hold: Option<Hold>,
    lost: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>, bool)>();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            let mut by = Duration::from_millis(delay.load(SeqCst));
            let mut lose = false;
            if let Some(hold) = &hold {
                let mut hold = hold.lock().expect("hold");
                if let Some((bytes, on)) = hold.clone()
                    && buf[..n].windows(bytes.len()).any(|w| w == bytes.as_slice())
                {
                    match on {
                        OnMatch::Delay(ms) => by = Duration::from_millis(ms),
                        OnMatch::Lose => {
                            lose = true;
                            *hold = None;
                        }
                    }
                }
            }
            if tx
                .send((tokio::time::Instant::now() + by, buf[..n].to_vec(), lose))
                .is_err()
            {
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some((due, chunk, lose)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if lose {
                // Whatever Redis answers from now on is lost with the link.
                lost.store(true, SeqCst);
                to.write_all(&chunk).await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Err(std::io::Error::other("link lost"));
            }
            if lost.load(SeqCst) {
                return Err(std::io::Error::other("link lost"));
            }
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(read, write).map(|_| ())
}

impl Link {
    /// A link to the Redis at `redis_url` (`redis://host:port`).
    pub async fn to(redis_url: &str) -> Self {
        let (target, _) = redis_target(redis_url);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let hold: Hold = Arc::default();
        let (open2, delay2, conns2, hold2) =
            (open.clone(), delay_ms.clone(), conns.clone(), hold.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !open2.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let delay = delay2.clone();
                let hold = hold2.clone();
                let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let task = tokio::spawn(async move {
                    if let Ok(outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let (in_r, in_w) = inbound.into_split();
                        let (out_r, out_w) = outbound.into_split();
                        // Either direction failing ends the connection;
                        // aborting this task (a cut) drops both.
                        let _ = tokio::try_join!(
                            forward(in_r, out_w, delay.clone(), Some(hold), lost.clone()),
                            forward(out_r, in_w, delay, None, lost)
                        );
                    }
                });
                conns2.lock().expect("conns").push(task);
            }
        });
        Self {
            port,
            open,
            delay_ms,
            hold,
            conns,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Drops every connection through the link and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for task in self.conns.lock().expect("conns").drain(..) {
            task.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Holds every chunk that arrives from now on `by` before forwarding
    /// it, in both directions (a round trip takes `2 * by` longer); the
    /// connections stay up. Zero restores full speed (chunks already held
    /// keep their time).
    pub fn delay(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Link {
    /// Holds every chunk on its way to Redis that contains `bytes` (a
    /// script's SHA1: its `EVALSHA`s) `by` before forwarding it, and so
    /// whatever follows it on that connection; other chunks go as before.
    pub fn hold_matching(&self, bytes: &[u8], by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        *self.hold.lock().expect("hold") = Some((bytes.to_vec(), OnMatch::Delay(ms)));
    }

    /// The next chunk on its way to Redis that contains `bytes` is delivered,
    /// and then its connection is lost: Redis runs it, its answer never
    /// comes back, and the connection closes 200 ms later. Once.
    pub fn lose_after_matching(&self, bytes: &[u8]) {
        *self.hold.lock().expect("hold") = Some((bytes.to_vec(), OnMatch::Lose));
    }

    /// Holds no chunk for its bytes any more (chunks already held keep their time).
    pub fn hold_nothing(&self) {
        *self.hold.lock().expect("hold") = None;
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
