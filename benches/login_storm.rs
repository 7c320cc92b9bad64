//! What a login storm does to callgate, in numbers.
//!
//! Logging in costs one argon2id verification (~tens of ms of CPU at the OWASP
//! parameters). callgate runs every hash on the blocking pool behind a
//! semaphore sized to the cores and answers 503 `server_busy` when a slot does
//! not free up within `password.queue_timeout_ms`. This benchmark measures
//! what that design buys, against the real server built in-process (as the
//! tests build it: default configuration, port 0, embedded store):
//!
//! 1. the cost of one argon2id hash and one verification on the current thread;
//! 2. `POST /auth/login` latency over real HTTP, one login at a time;
//! 3. the same during a storm of concurrent clients logging in continuously:
//!    latency, 200s, 503 `server_busy`s and logins per second;
//! 4. Socket.IO responsiveness (the `userOnline` ack round trip on one
//!    authenticated websocket, one ack outstanding at a time) and event-loop
//!    stalls (the worst lateness of a 10 ms `tokio::time::interval` tick on the
//!    server's runtime), idle and during the storm;
//! 5. the event-loop stall caused by one argon2id hash (and by one per worker)
//!    run inline on a runtime worker, against the same hashes through
//!    `PasswordHasher::hash`; on the server's runtime and on a current-thread
//!    runtime.
//!
//! The server runs on its own multi-thread runtime (one worker per core, as
//! `callgate serve` does); the clients run in the same process on a second
//! runtime and share the same cores. It asserts nothing: it prints a markdown
//! table to paste into the docs. Run it optimised (about 15 s once built):
//!
//! ```text
//! cargo bench --bench login_storm
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use argon2::password_hash::PasswordHash;
use argon2::{Argon2, Params, PasswordVerifier as _};
use callgate::app::App;
use callgate::auth::PasswordHasher;
use callgate::auth::password::{self, hash_blocking};
use callgate::config::{Config, Overrides};
use callgate::domain::{DisplayName, Password, Username};
use callgate::policy::Policy;
use callgate::store::NewUser;
use futures_util::FutureExt as _;
use rust_socketio::asynchronous::{Client as SocketClient, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::{Value, json};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

const SECRET: &str = "login-storm-bench-secret-0123456789-abcdefghijklmnop";
const PASSWORD: &str = "correct horse battery";
/// Hashes and verifications timed on the current thread.
const COST_SAMPLES: usize = 20;
/// Logins timed one after the other on an idle server.
const SEQUENTIAL_LOGINS: usize = 50;
/// Concurrent clients in the storm, each logging in again as soon as answered.
const STORM_CLIENTS: usize = 32;
/// How long the storm lasts.
const STORM: Duration = Duration::from_secs(5);
/// `userOnline` acks timed on an idle server.
const IDLE_ACKS: usize = 200;
/// How long the tick probe watches an idle server.
const IDLE_PROBE: Duration = Duration::from_secs(2);
/// The probe's tick period.
const TICK: Duration = Duration::from_millis(10);
/// Runs of the inline / off-thread hashing comparison.
const STALL_RUNS: usize = 5;
/// Probe time before and after each hash in that comparison.
const STALL_MARGIN: Duration = Duration::from_millis(40);
/// Longest wait for an ack or a connection.
const WAIT: Duration = Duration::from_secs(5);
/// Longest wait for one HTTP answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- statistics

/// Percentiles of a set of durations.
#[derive(Debug, Clone, Copy)]
struct Summary {
    n: usize,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

/// The nearest-rank percentile `p` (0..=100) of `sorted`, which must be
/// sorted ascending; `None` when it is empty.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let last = sorted.len().checked_sub(1)?;
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1).min(last)).copied()
}

/// Sorts `samples` and summarises them; `None` when there are none.
fn summarize(mut samples: Vec<Duration>) -> Option<Summary> {
    samples.sort_unstable();
    Some(Summary {
        n: samples.len(),
        p50: percentile(&samples, 50.0)?,
        p90: percentile(&samples, 90.0)?,
        p99: percentile(&samples, 99.0)?,
        max: *samples.last()?,
    })
}

// -------------------------------------------------------------------- report

/// One line of the results table.
struct Row {
    what: String,
    summary: Option<Summary>,
    notes: String,
}

impl Row {
    fn new(what: impl Into<String>, samples: Vec<Duration>, notes: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            summary: summarize(samples),
            notes: notes.into(),
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn print_table(rows: &[Row]) {
    println!("| measurement | n | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | notes |");
    println!("|---|--:|--:|--:|--:|--:|---|");
    for row in rows {
        let cells = match row.summary {
            Some(s) => [s.n.to_string(), ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max)],
            None => ["0", "-", "-", "-", "-"].map(String::from),
        };
        println!("| {} | {} | {} |", row.what, cells.join(" | "), row.notes);
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

fn print_header(cores: usize, config: &Config, elapsed: Duration) {
    let p = &config.password;
    let slots = if p.max_concurrent == 0 {
        cores
    } else {
        p.max_concurrent
    };
    println!("## Login storm (benches/login_storm.rs)\n");
    println!(
        "- machine: {cores} cores (`available_parallelism`){}",
        cpu_model().map(|m| format!(", {m}")).unwrap_or_default()
    );
    println!(
        "- argon2id m = {} KiB, t = {}, p = {}; {slots} hashing slots; queue timeout {} ms",
        p.memory_kib, p.iterations, p.parallelism, p.queue_timeout_ms
    );
    println!(
        "- server on a {cores}-worker multi-thread runtime; clients in the same process on their own runtime, sharing the cores"
    );
    println!(
        "- storm: {STORM_CLIENTS} clients logging in back to back for {} s; tick probe period {} ms",
        STORM.as_secs(),
        TICK.as_millis()
    );
    println!("- whole run: {:.1} s\n", elapsed.as_secs_f64());
}

// ------------------------------------------------------------ argon2id costs

fn time_each<T>(n: usize, mut job: impl FnMut() -> T) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(job());
            started.elapsed()
        })
        .collect()
}

/// One hash and one verification at `params`, timed on the current thread.
fn argon2_costs(params: &Params) -> Vec<Row> {
    let hashes = time_each(COST_SAMPLES, || {
        hash_blocking(params, PASSWORD).expect("argon2id hashes")
    });
    let stored = hash_blocking(params, PASSWORD).expect("argon2id hashes");
    let parsed = PasswordHash::new(&stored).expect("a PHC string");
    let verifies = time_each(COST_SAMPLES, || {
        Argon2::default()
            .verify_password(PASSWORD.as_bytes(), &parsed)
            .is_ok()
    });
    vec![
        Row::new("argon2id hash, current thread", hashes, ""),
        Row::new("argon2id verify, current thread", verifies, ""),
    ]
}

// -------------------------------------------------------------------- server

/// The default configuration on port 0 with a fixed JWT secret, as the tests use.
fn bench_config() -> Config {
    let env = [("CALLGATE_JWT_SECRET".to_string(), SECRET.to_string())];
    let mut config =
        Config::load_from(None, &Overrides::default(), &env).expect("the defaults load");
    config.server.listen = "127.0.0.1:0".parse().expect("an address");
    config
}

fn username(i: usize) -> String {
    format!("storm{i:02}")
}

/// A running server and the means to stop it.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
}

impl Server {
    /// Builds the real server, seeds `users` users whose password is
    /// [`PASSWORD`] (all sharing one `hash`) and serves in the background.
    async fn start(config: Config, hash: &str, users: usize) -> Self {
        let mut policy = Policy::builtin().expect("the built-in policy loads");
        // The storm measures argon2 and the event loop, not the rate limits
        // (which would refuse most of it by design).
        let lots = callgate::policy::Rate {
            per_minute: 1_000_000,
            burst: 100_000,
        };
        policy.rate_limits.login_per_ip = lots;
        policy.rate_limits.login_per_username = lots;
        policy.rate_limits.rooms = lots;
        policy.rate_limits.handshake_per_ip = lots;
        policy.rate_limits.session_open_per_ip = lots;
        let app = App::build(config, policy).await.expect("the server builds");
        let addr = app.local_addr().expect("a bound address");
        for i in 0..users {
            let name = username(i);
            app.store()
                .create_user(NewUser {
                    username: Username::parse(&name).expect("a valid username"),
                    display_name: DisplayName::parse(&name).expect("a valid display name"),
                    password_hash: hash.to_string(),
                })
                .await
                .expect("the user is created");
        }
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self { addr, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

// --------------------------------------------------------------------- login

/// How a login was answered.
enum Outcome {
    /// 200, with the session.
    Ok(Value),
    /// 503 `server_busy`.
    Busy,
    /// Anything else, or no answer.
    Other,
}

struct Login {
    outcome: Outcome,
    latency: Duration,
}

async fn outcome_of(response: reqwest::Response) -> Outcome {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match status {
        200 => Outcome::Ok(body),
        503 if body["error"]["code"] == "server_busy" => Outcome::Busy,
        _ => Outcome::Other,
    }
}

/// One `POST /auth/login`, timed from sending to the whole body read.
async fn login(http: &reqwest::Client, url: &str, username: &str) -> Login {
    let started = Instant::now();
    let sent = http
        .post(url)
        .json(&json!({ "username": username, "password": PASSWORD }))
        .send()
        .await;
    let outcome = match sent {
        Ok(response) => outcome_of(response).await,
        Err(_) => Outcome::Other,
    };
    Login {
        outcome,
        latency: started.elapsed(),
    }
}

/// Latencies of the 200s, and the counts of 200s, 503 `server_busy`s and others.
#[derive(Default)]
struct LoginTally {
    ok: Vec<Duration>,
    busy: Vec<Duration>,
    other: usize,
}

impl LoginTally {
    fn add(&mut self, login: Login) {
        match login.outcome {
            Outcome::Ok(_) => self.ok.push(login.latency),
            Outcome::Busy => self.busy.push(login.latency),
            Outcome::Other => self.other += 1,
        }
    }

    fn merge(&mut self, other: Self) {
        self.ok.extend(other.ok);
        self.busy.extend(other.busy);
        self.other += other.other;
    }

    fn counts(&self) -> String {
        format!(
            "{} × 200, {} × 503 server_busy, {} other",
            self.ok.len(),
            self.busy.len(),
            self.other
        )
    }
}

async fn sequential_logins(http: &reqwest::Client, url: &str) -> Row {
    let mut tally = LoginTally::default();
    for _ in 0..SEQUENTIAL_LOGINS {
        tally.add(login(http, url, &username(0)).await);
    }
    let notes = tally.counts();
    Row::new("POST /auth/login, one at a time", tally.ok, notes)
}

/// Logs in as `who` again and again until `deadline`.
async fn storm_client(
    http: reqwest::Client,
    url: String,
    who: String,
    deadline: Instant,
) -> LoginTally {
    let mut tally = LoginTally::default();
    while Instant::now() < deadline {
        tally.add(login(&http, &url, &who).await);
    }
    tally
}

/// A token and user id for `who`.
async fn session_for(http: &reqwest::Client, url: &str, who: &str) -> (String, String) {
    match login(http, url, who).await.outcome {
        Outcome::Ok(body) => (
            body["token"].as_str().expect("a token").to_string(),
            body["user"]["id"].as_str().expect("a user id").to_string(),
        ),
        _ => panic!("{who} cannot log in"),
    }
}

// ----------------------------------------------------------------- Socket.IO

/// Connects over websocket with `{"token": token}` and waits for CONNECT.
async fn connect_socket(base: &str, token: &str) -> SocketClient {
    let (connected, on_connect) = oneshot::channel::<()>();
    let mut connected = Some(connected);
    let socket = ClientBuilder::new(base)
        .transport_type(TransportType::Websocket)
        .reconnect(false)
        .auth(json!({ "token": token }))
        .on(Event::Connect, move |_, _| {
            if let Some(tx) = connected.take() {
                let _ = tx.send(());
            }
            async {}.boxed()
        })
        .connect()
        .await
        .expect("the websocket opens");
    tokio::time::timeout(WAIT, on_connect)
        .await
        .expect("CONNECT answered in time")
        .expect("CONNECT answered");
    socket
}

/// True when the ack's first argument is `{ok: true, ...}`. rust_socketio
/// hands ack arguments over as one JSON array inside the text payload.
fn ack_is_ok(payload: &Payload) -> bool {
    let Payload::Text(values) = payload else {
        return false;
    };
    let first = match values.first() {
        Some(Value::Array(args)) => args.first(),
        other => other,
    };
    first.is_some_and(|v| v["ok"] == true)
}

/// Emits `userOnline(user_id)` with an ack and times the round trip; `None`
/// when the emit fails, the ack does not come, or it is not `{ok: true}`.
async fn ack_round_trip(socket: &SocketClient, user_id: &str) -> Option<Duration> {
    let (tx, rx) = oneshot::channel::<(Instant, bool)>();
    let mut tx = Some(tx);
    let started = Instant::now();
    socket
        .emit_with_ack("userOnline", json!(user_id), WAIT, move |payload, _| {
            if let Some(tx) = tx.take() {
                let _ = tx.send((Instant::now(), ack_is_ok(&payload)));
            }
            async {}.boxed()
        })
        .await
        .ok()?;
    let (acked, ok) = tokio::time::timeout(WAIT, rx).await.ok()?.ok()?;
    ok.then(|| acked.duration_since(started))
}

/// When a sequence of acks stops.
#[derive(Clone, Copy)]
enum Until {
    Count(usize),
    Deadline(Instant),
}

impl Until {
    fn more(self, done: usize) -> bool {
        match self {
            Self::Count(n) => done < n,
            Self::Deadline(at) => Instant::now() < at,
        }
    }
}

/// Ack round trips, one at a time (rust_socketio draws ack ids at random
/// from 0..999, so two outstanding acks could collide), and the failures.
async fn ack_round_trips(
    socket: &SocketClient,
    user_id: &str,
    until: Until,
) -> (Vec<Duration>, usize) {
    let (mut rtts, mut failed) = (Vec::new(), 0);
    while until.more(rtts.len() + failed) {
        match ack_round_trip(socket, user_id).await {
            Some(rtt) => rtts.push(rtt),
            None => failed += 1,
        }
    }
    (rtts, failed)
}

// ---------------------------------------------------------------- tick probe

/// A task ticking a 10 ms interval on some runtime, recording how late each
/// tick was seen: a stalled worker shows up as a late tick.
struct TickProbe {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<Duration>>,
}

impl TickProbe {
    fn start(runtime: &Handle) -> Self {
        let (stop, stopped) = oneshot::channel();
        Self {
            stop,
            task: runtime.spawn(tick_lateness(stopped)),
        }
    }

    /// Stops the probe and returns each tick's lateness.
    async fn finish(self) -> Vec<Duration> {
        let _ = self.stop.send(());
        self.task.await.expect("the probe does not panic")
    }
}

async fn tick_lateness(mut stopped: oneshot::Receiver<()>) -> Vec<Duration> {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut lateness = Vec::new();
    loop {
        tokio::select! {
            scheduled = interval.tick() => {
                lateness.push(tokio::time::Instant::now().saturating_duration_since(scheduled));
            }
            _ = &mut stopped => return lateness,
        }
    }
}

async fn probe_for(runtime: &Handle, window: Duration) -> Vec<Duration> {
    let probe = TickProbe::start(runtime);
    tokio::time::sleep(window).await;
    probe.finish().await
}

// ------------------------------------------------------------- the scenarios

/// What one phase (idle or storm) did to the socket and the event loop.
struct Responsiveness {
    acks: Vec<Duration>,
    failed_acks: usize,
    ticks: Vec<Duration>,
}

/// Acks and ticks on an otherwise idle server.
async fn idle(socket: &SocketClient, user_id: &str, server_rt: &Handle) -> Responsiveness {
    let (acks, failed_acks) = ack_round_trips(socket, user_id, Until::Count(IDLE_ACKS)).await;
    let ticks = probe_for(server_rt, IDLE_PROBE).await;
    Responsiveness {
        acks,
        failed_acks,
        ticks,
    }
}

/// [`STORM_CLIENTS`] clients logging in for [`STORM`] while acks and ticks
/// are measured; also returns the logins and how long they took to drain.
async fn storm(
    http: &reqwest::Client,
    url: &str,
    socket: &SocketClient,
    user_id: &str,
    server_rt: &Handle,
) -> (Responsiveness, LoginTally, Duration) {
    let started = Instant::now();
    let deadline = started + STORM;
    let probe = TickProbe::start(server_rt);
    let clients: Vec<_> = (0..STORM_CLIENTS)
        .map(|i| {
            let client = storm_client(http.clone(), url.to_string(), username(i), deadline);
            tokio::spawn(client)
        })
        .collect();
    let (acks, failed_acks) = ack_round_trips(socket, user_id, Until::Deadline(deadline)).await;
    let ticks = probe.finish().await;
    let mut tally = LoginTally::default();
    for client in clients {
        tally.merge(client.await.expect("a storm client does not panic"));
    }
    let during = Responsiveness {
        acks,
        failed_acks,
        ticks,
    };
    (during, tally, started.elapsed())
}

fn storm_login_rows(mut tally: LoginTally, took: Duration) -> Vec<Row> {
    let rate = tally.ok.len() as f64 / took.as_secs_f64();
    let notes = format!(
        "{}; {rate:.1} logins/s over {:.1} s",
        tally.counts(),
        took.as_secs_f64()
    );
    let busy = std::mem::take(&mut tally.busy);
    let mut rows = vec![Row::new(
        format!("POST /auth/login, storm of {STORM_CLIENTS} (200s)"),
        tally.ok,
        notes,
    )];
    if !busy.is_empty() {
        rows.push(Row::new(
            "POST /auth/login, storm (503 server_busy)",
            busy,
            "time to the 503",
        ));
    }
    rows
}

fn responsiveness_rows(idle: Responsiveness, storm: Responsiveness) -> Vec<Row> {
    let ack = |phase: &str, acks: Vec<Duration>, failed: usize| {
        let what = format!("Socket.IO `userOnline` ack, {phase}");
        Row::new(what, acks, format!("{failed} failed"))
    };
    vec![
        ack("idle", idle.acks, idle.failed_acks),
        ack("storm", storm.acks, storm.failed_acks),
        Row::new("10 ms tick lateness, idle", idle.ticks, "server runtime"),
        Row::new("10 ms tick lateness, storm", storm.ticks, "server runtime"),
    ]
}

/// Sequential logins, then Socket.IO acks and event-loop stalls idle and
/// during the storm. Runs on the client runtime; `server_rt` is the server's.
async fn against_the_server(server: &Server, server_rt: &Handle) -> Vec<Row> {
    let http = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .expect("an HTTP client");
    let url = server.url("/auth/login");
    // Logging in first also opens the pooled connection the timed logins reuse.
    let (token, user_id) = session_for(&http, &url, &username(0)).await;
    let mut rows = vec![sequential_logins(&http, &url).await];

    let socket = connect_socket(&server.url("/"), &token).await;
    let _warm_up = ack_round_trip(&socket, &user_id).await;
    let quiet = idle(&socket, &user_id, server_rt).await;
    let (during, tally, took) = storm(&http, &url, &socket, &user_id, server_rt).await;
    let _ = socket.disconnect().await;

    rows.extend(storm_login_rows(tally, took));
    rows.extend(responsiveness_rows(quiet, during));
    rows
}

/// Where the hash runs in the stall comparison.
#[derive(Clone, Copy)]
enum Placement {
    /// `hash_blocking` called inside a task on a runtime worker.
    Inline,
    /// `PasswordHasher::hash` (blocking pool, behind the semaphore).
    OffThread,
}

async fn hash_job(placement: Placement, params: Params, hasher: PasswordHasher) {
    match placement {
        Placement::Inline => {
            std::hint::black_box(hash_blocking(&params, PASSWORD).expect("argon2id hashes"));
        }
        Placement::OffThread => {
            let password = Password::parse(PASSWORD.to_string()).expect("a valid password");
            std::hint::black_box(hasher.hash(password).await.expect("hashed"));
        }
    }
}

/// The worst tick lateness while `jobs` hashes run at once, spawned as tasks
/// on the current runtime.
async fn worst_stall(
    placement: Placement,
    jobs: usize,
    params: &Params,
    hasher: &PasswordHasher,
) -> Duration {
    let probe = TickProbe::start(&Handle::current());
    tokio::time::sleep(STALL_MARGIN).await;
    let running: Vec<_> = (0..jobs)
        .map(|_| tokio::spawn(hash_job(placement, params.clone(), hasher.clone())))
        .collect();
    for job in running {
        job.await.expect("the hash does not panic");
    }
    tokio::time::sleep(STALL_MARGIN).await;
    probe.finish().await.into_iter().max().unwrap_or_default()
}

/// Inline against off-thread hashing, on `runtime`: one row per placement,
/// summarising the worst lateness of each of [`STALL_RUNS`] runs.
fn stall_rows(
    runtime: &Runtime,
    label: &str,
    jobs: usize,
    params: &Params,
    hasher: &PasswordHasher,
) -> Vec<Row> {
    let hashes = if jobs == 1 {
        "1 hash".to_string()
    } else {
        format!("{jobs} hashes at once")
    };
    [
        (Placement::Inline, "`hash_blocking` inline in a task"),
        (Placement::OffThread, "`PasswordHasher::hash`"),
    ]
    .into_iter()
    .map(|(placement, how)| {
        let worst: Vec<Duration> = (0..STALL_RUNS)
            .map(|_| runtime.block_on(worst_stall(placement, jobs, params, hasher)))
            .collect();
        Row::new(
            format!("10 ms tick lateness, {hashes} via {how}"),
            worst,
            format!("{label}; worst tick of each run"),
        )
    })
    .collect()
}

fn multi_thread_runtime(name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .expect("a runtime")
}

fn main() {
    let began = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let config = bench_config();
    let params = password::params(&config.password).expect("the default argon2 parameters");
    let hasher = PasswordHasher::new(&config.password).expect("a password hasher");

    let mut rows = argon2_costs(&params);

    let server_rt = multi_thread_runtime("server");
    let client_rt = multi_thread_runtime("client");
    let hash = hash_blocking(&params, PASSWORD).expect("argon2id hashes");
    let server = server_rt.block_on(Server::start(config.clone(), &hash, STORM_CLIENTS));
    rows.extend(client_rt.block_on(against_the_server(&server, server_rt.handle())));

    let server_label = format!("server runtime, {cores} workers");
    rows.extend(stall_rows(&server_rt, &server_label, 1, &params, &hasher));
    if cores > 1 {
        rows.extend(stall_rows(
            &server_rt,
            &server_label,
            cores,
            &params,
            &hasher,
        ));
    }
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rows.extend(stall_rows(
        &single,
        "current-thread runtime",
        1,
        &params,
        &hasher,
    ));

    let _ = server.stop.send(());
    client_rt.shutdown_timeout(Duration::from_secs(1));
    server_rt.shutdown_timeout(Duration::from_secs(1));

    print_header(cores, &config, began.elapsed());
    print_table(&rows);
}
