//! What one `run` measured: the JSON line (`RunReport`) and its human table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::Percentiles;
use crate::storm::StormReport;

/// A phase in which the generator used more than this share of its cores was
/// limited by the generator, not the server.
pub const BUSY_CPU_PCT: f64 = 90.0;
/// ... or in which one initiate in ten went out later than this, in ms (a
/// generator that cannot keep up is late all the time; one that is merely
/// preempted now and then is late at p99 only, and latencies run from the
/// actual send anyway).
pub const BUSY_SEND_LAG_P90_MS: f64 = 5.0;

/// One run against one server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// The target's label: `callgate`, `node`, `relay`, `relay-cluster`, ...
    pub target: String,
    /// Round number given by the caller.
    pub round: u32,
    /// What was asked.
    pub settings: Settings,
    /// One entry per connection stage.
    pub connect: Vec<ConnectReport>,
    /// Server RSS growth per connection between the last two stages, in KiB.
    pub kib_per_connection: Option<f64>,
    /// Server CPU while only the idle sockets were open, % of one core.
    pub server_idle_cpu_pct: Option<f64>,
    /// Call traffic phases, in order.
    pub phases: Vec<PhaseReport>,
    /// The login storm, when one ran.
    pub storm: Option<StormReport>,
    /// Set-up p99 during the storm ÷ just before it.
    pub storm_p99_ratio: Option<f64>,
    /// The knee of the throughput steps.
    pub knee: Option<Knee>,
    /// System-wide listen-queue overflows during the run.
    pub listen_overflows: Option<u64>,
    /// Sockets the server closed during the run.
    pub dropped_sockets: u64,
    /// How hard the generator worked.
    pub generator: GeneratorReport,
    /// Why this round should not count (empty: it counts).
    pub discard: Vec<String>,
}

/// The run's parameters, as reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Connection stage totals.
    pub connections: Vec<usize>,
    /// Caller/callee pairs.
    pub pairs: usize,
    /// Fixed call rates.
    pub rates: Vec<f64>,
    /// Seconds per measured phase.
    pub phase_secs: f64,
    /// Login loops in the storm.
    pub storm_clients: usize,
    /// Call rate around the storm.
    pub storm_rate: f64,
    /// Knee steps.
    pub steps: Vec<f64>,
    /// Knee threshold, ms.
    pub knee_p99_ms: f64,
}

/// One connection stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectReport {
    /// Sockets asked for in total.
    pub target: usize,
    /// Sockets open after the stage.
    pub open: usize,
    /// Sockets opened in the stage.
    pub opened: usize,
    /// Failed attempts by kind: how many, and the first one's message.
    pub failed: BTreeMap<String, (u64, String)>,
    /// Stage wall time, seconds.
    pub secs: f64,
    /// Sockets opened per second.
    pub per_sec: f64,
    /// TCP connect → CONNECT acknowledged.
    pub handshake: Percentiles,
    /// Server CPU per opened socket, µs.
    pub server_cpu_us_per_handshake: Option<f64>,
    /// Generator CPU over the stage, % of its cores.
    pub generator_cpu_pct: f64,
    /// Server RSS after the stage settled, KiB.
    pub rss_kib: Option<u64>,
    /// Redis commands per opened socket (cluster mode, given --redis-addr).
    #[serde(default)]
    pub redis_commands_per_connect: Option<f64>,
}

/// What a call phase was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    /// Warm-up, not summarised.
    Warmup,
    /// A fixed rate.
    Fixed,
    /// Just before the login storm.
    StormBefore,
    /// During the login storm.
    StormDuring,
    /// A throughput step of the knee search.
    Step,
}

impl PhaseKind {
    fn label(self) -> &'static str {
        match self {
            Self::Warmup => "warmup",
            Self::Fixed => "fixed",
            Self::StormBefore => "pre-storm",
            Self::StormDuring => "storm",
            Self::Step => "step",
        }
    }
}

/// One phase of call traffic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseReport {
    /// What it was for.
    pub kind: PhaseKind,
    /// Scheduled calls per second.
    pub rate: f64,
    /// Wall time including the drain, seconds.
    pub secs: f64,
    /// Calls started.
    pub dispatched: u64,
    /// Calls set up and ended.
    pub completed: u64,
    /// Calls refused by the server.
    pub failed: u64,
    /// Calls unfinished after the drain.
    pub lost: u64,
    /// Starts skipped: no free pair.
    pub no_pair: u64,
    /// Completed calls per second of scheduled time.
    pub achieved_per_sec: f64,
    /// Scheduled → written, ms.
    pub send_lag: Percentiles,
    /// initiate → incomingVideoCall, ms.
    pub incoming: Percentiles,
    /// initiate → videoCallAccepted (call set-up), ms.
    pub accepted: Percentiles,
    /// Server CPU, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Server CPU per completed call above the idle baseline, µs.
    pub server_cpu_us_per_call: Option<f64>,
    /// Generator CPU, % of its cores.
    pub generator_cpu_pct: f64,
    /// CPU of every other process on the machine, % of one core.
    pub others_cpu_pct: Option<f64>,
    /// Redis commands per completed call (initiate, accept and end) above the
    /// idle background (cluster mode, given --redis-addr).
    #[serde(default)]
    pub redis_commands_per_call: Option<f64>,
}

impl PhaseReport {
    /// Whether the generator, not the server, may have limited this phase.
    pub fn generator_busy(&self) -> bool {
        self.generator_cpu_pct > BUSY_CPU_PCT || self.send_lag.p90 > BUSY_SEND_LAG_P90_MS
    }

    /// Calls that did not complete (failed, lost or never started).
    pub fn shortfall(&self) -> u64 {
        self.failed + self.lost + self.no_pair
    }
}

/// Where the throughput steps stopped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Knee {
    /// The highest step whose set-up p99 stayed under the threshold with
    /// (almost) every call completed; `None` if the first step failed.
    pub rate: Option<f64>,
    /// Why the search stopped: `p99`, `shortfall`, `generator` or `last_step`.
    pub stopped_by: String,
}

/// The generator's own load over the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeneratorReport {
    /// Cores it could use.
    pub cores: usize,
    /// Highest CPU of any measured phase, % of its cores.
    pub max_cpu_pct: f64,
    /// Highest send-lag p90 of any measured phase, ms.
    pub max_send_lag_p90_ms: f64,
    /// Highest send-lag p99 of any measured phase, ms.
    pub max_send_lag_p99_ms: f64,
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// Columns of the phase table: heading and width.
const PHASE_COLUMNS: [(&str, usize); 21] = [
    ("phase", 9),
    ("rate", 6),
    ("done/s", 7),
    ("ok", 6),
    ("fail", 5),
    ("lost", 5),
    ("nopair", 6),
    ("in p99", 7),
    ("|", 1),
    ("p50", 7),
    ("p90", 7),
    ("p99", 7),
    ("p99.9", 7),
    ("max", 7),
    ("|", 1),
    ("lag p90", 7),
    ("lag p99", 7),
    ("gen%", 5),
    ("oth%", 5),
    ("cpu%", 5),
    ("us/call", 7),
];

/// The human table of one run.
pub fn table(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "== {} round {} ==", report.target, report.round);
    let _ = writeln!(
        out,
        "{:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>10} {:>8} {:>9}  failed",
        "sockets",
        "opened",
        "secs",
        "conn/s",
        "hs p50",
        "hs p99",
        "cpu us/hs",
        "gen cpu%",
        "rss MiB"
    );
    for c in &report.connect {
        let _ = writeln!(
            out,
            "{:>8} {:>8} {:>8.2} {:>9.0} {:>8.2} {:>8.2} {:>10} {:>8.0} {:>9}  {:?}",
            c.open,
            c.opened,
            c.secs,
            c.per_sec,
            c.handshake.p50,
            c.handshake.p99,
            opt(c.server_cpu_us_per_handshake, 0),
            c.generator_cpu_pct,
            opt(c.rss_kib.map(|k| k as f64 / 1024.0), 1),
            c.failed
        );
    }
    let _ = writeln!(
        out,
        "memory: {} KiB per connection; idle server CPU {}%",
        opt(report.kib_per_connection, 2),
        opt(report.server_idle_cpu_pct, 1)
    );
    let row = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(PHASE_COLUMNS)
            .enumerate()
            .map(|(i, (cell, (_, w)))| {
                if i == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        padded.join(" ")
    };
    let _ = writeln!(
        out,
        "{}  busy",
        row(PHASE_COLUMNS.iter().map(|(h, _)| (*h).to_owned()).collect())
    );
    for p in &report.phases {
        let ms = |v: f64| format!("{v:.2}");
        let cells = vec![
            p.kind.label().to_owned(),
            format!("{:.0}", p.rate),
            format!("{:.0}", p.achieved_per_sec),
            p.completed.to_string(),
            p.failed.to_string(),
            p.lost.to_string(),
            p.no_pair.to_string(),
            ms(p.incoming.p99),
            "|".to_owned(),
            ms(p.accepted.p50),
            ms(p.accepted.p90),
            ms(p.accepted.p99),
            ms(p.accepted.p999),
            ms(p.accepted.max),
            "|".to_owned(),
            ms(p.send_lag.p90),
            ms(p.send_lag.p99),
            format!("{:.0}", p.generator_cpu_pct),
            opt(p.others_cpu_pct, 0),
            opt(p.server_cpu_pct, 0),
            opt(p.server_cpu_us_per_call, 0),
        ];
        let busy = if p.generator_busy() { "  yes" } else { "" };
        let _ = writeln!(out, "{}{busy}", row(cells));
    }
    if let Some(s) = &report.storm {
        let _ = writeln!(
            out,
            "login storm: {} clients, {:.1} logins/s ok ({} ok, {} busy, {} other, {} errors), login p50 {:.1} ms p99 {:.1} ms; set-up p99 ratio during/before {}",
            s.clients,
            s.ok_per_sec,
            s.ok,
            s.busy,
            s.other,
            s.errors,
            s.latency.p50,
            s.latency.p99,
            opt(report.storm_p99_ratio, 2)
        );
    }
    if let Some(k) = &report.knee {
        let _ = writeln!(
            out,
            "knee: {} calls/s (set-up p99 <= {} ms; stopped by {})",
            opt(k.rate, 0),
            report.settings.knee_p99_ms,
            k.stopped_by
        );
    }
    let _ = writeln!(
        out,
        "listen overflows: {}; sockets dropped by the server: {}; generator: {} cores, max {:.0}% CPU, max send-lag p90 {:.2} ms, p99 {:.2} ms",
        report
            .listen_overflows
            .map_or_else(|| "?".to_owned(), |n| n.to_string()),
        report.dropped_sockets,
        report.generator.cores,
        report.generator.max_cpu_pct,
        report.generator.max_send_lag_p90_ms,
        report.generator.max_send_lag_p99_ms
    );
    if !report.discard.is_empty() {
        let _ = writeln!(out, "DISCARD this round: {}", report.discard.join("; "));
    }
    out
}
