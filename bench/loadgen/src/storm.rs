//! A login storm: concurrent clients each calling `POST /auth/login` in a loop
//! on a keep-alive connection, for a fixed time, while call traffic runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::http::{HttpConnection, LoginAnswer};
use crate::stats::{Latencies, Percentiles};

/// Pause after a connection error before reconnecting.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// What a storm did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormReport {
    /// Concurrent login loops.
    pub clients: usize,
    /// Wall time, in seconds.
    pub secs: f64,
    /// 200 answers.
    pub ok: u64,
    /// 503 answers (callgate's `server_busy`).
    pub busy: u64,
    /// Other statuses.
    pub other: u64,
    /// Connection or protocol errors.
    pub errors: u64,
    /// Successful logins per second.
    pub ok_per_sec: f64,
    /// Latency of every answered request.
    pub latency: Percentiles,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    busy: u64,
    other: u64,
    errors: u64,
    latency: Latencies,
}

async fn login_loop(
    addr: SocketAddr,
    username: String,
    password: Arc<str>,
    until: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut connection = None;
    while Instant::now() < until {
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => match HttpConnection::open(addr).await {
                Ok(conn) => connection.insert(conn),
                Err(_) => {
                    tally.errors += 1;
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        let began = Instant::now();
        match conn.login(&username, &password).await {
            Ok(answer) => {
                tally.latency.record(began.elapsed());
                match answer {
                    LoginAnswer::Token(_) => tally.ok += 1,
                    LoginAnswer::Refused(StatusCode::SERVICE_UNAVAILABLE) => tally.busy += 1,
                    LoginAnswer::Refused(_) => tally.other += 1,
                }
            }
            Err(_) => {
                tally.errors += 1;
                connection = None;
            }
        }
    }
    tally
}

/// Runs one login loop per username in `usernames` for `duration`.
pub async fn run(
    addr: SocketAddr,
    usernames: Vec<String>,
    password: &str,
    duration: Duration,
) -> StormReport {
    let start = Instant::now();
    let until = start + duration;
    let password: Arc<str> = password.into();
    let clients = usernames.len();
    let mut loops = JoinSet::new();
    for username in usernames {
        loops.spawn(login_loop(addr, username, password.clone(), until));
    }
    let mut total = Tally::default();
    while let Some(Ok(tally)) = loops.join_next().await {
        total.ok += tally.ok;
        total.busy += tally.busy;
        total.other += tally.other;
        total.errors += tally.errors;
        total.latency.add(&tally.latency);
    }
    let secs = start.elapsed().as_secs_f64();
    StormReport {
        clients,
        secs,
        ok: total.ok,
        busy: total.busy,
        other: total.other,
        errors: total.errors,
        ok_per_sec: total.ok as f64 / secs.max(f64::EPSILON),
        latency: total.latency.percentiles(),
    }
}
