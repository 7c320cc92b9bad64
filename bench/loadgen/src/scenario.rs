//! `run`: one server, every scenario in order, on one set of sockets.
//!
//! 1. connection stages (e.g. 5 000 then 10 000 sockets): connect rate,
//!    handshake latency, server CPU per handshake, RSS after each stage, and
//!    the memory slope between the last two;
//! 2. idle server CPU with every socket open (the baseline subtracted from
//!    per-call CPU);
//! 3. warm-up calls, then call set-up at each fixed rate;
//! 4. a login storm: a phase at the storm rate, then the same with the login
//!    loops running;
//! 5. throughput steps until set-up p99 passes the threshold (the knee).
//!
//! Then the verdict: a round with listen-queue overflows or a busy generator
//! in a measured phase is marked for discarding.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::call::Person;
use crate::cli::RunArgs;
use crate::client::Endpoint;
use crate::fleet::{Fleet, Growth};
use crate::phase::{self, CallNumbers, Pair, PairPool, PhaseTally};
use crate::probe::{self, CpuMeter, CpuWindow, ServerProbe};
use crate::redis_stats;
use crate::report::{
    ConnectReport, GeneratorReport, Knee, PhaseKind, PhaseReport, RunReport, Settings,
};
use crate::seed::{self, SeedUser};
use crate::storm::{self, StormReport};
use crate::token;

/// Logins in flight when tokens come from `POST /auth/login`.
const LOGIN_CONCURRENCY: usize = 4;
/// Pause between throughput steps, for the server to catch up.
const STEP_PAUSE: Duration = Duration::from_secs(1);
/// A step with more than this share of calls not completing is past the knee.
const MAX_SHORTFALL: f64 = 0.01;

fn secs(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}

/// Call traffic on the pairs, measured against the server and the generator.
struct CallBench {
    pool: Arc<PairPool>,
    numbers: CallNumbers,
    probe: Option<ServerProbe>,
    /// Server CPU per second of wall time with only idle sockets.
    idle_cpu_rate: Option<f64>,
    drain: Duration,
    /// The cluster's Redis, and its commands per second with only idle
    /// sockets (heartbeats, timer polls).
    redis: Option<SocketAddr>,
    idle_redis_rate: Option<f64>,
}

impl CallBench {
    async fn phase(&self, kind: PhaseKind, rate: f64, duration: Duration) -> PhaseReport {
        let meter = CpuMeter::start(self.probe);
        let redis_before = self.redis.and_then(redis_stats::commands);
        let tally = phase::drive(&self.pool, &self.numbers, rate, duration, self.drain).await;
        let cpu = meter.stop();
        let redis_after = self.redis.and_then(redis_stats::commands);
        let mut report = self.report(kind, rate, duration, &tally, &cpu);
        report.redis_commands_per_call = redis_before
            .zip(redis_after)
            .zip(self.idle_redis_rate)
            .and_then(|((before, after), idle)| {
                let above_idle =
                    after.saturating_sub(before) as f64 - idle * cpu.wall.as_secs_f64();
                (tally.completed > 0).then(|| above_idle.max(0.0) / tally.completed as f64)
            });
        report
    }

    fn report(
        &self,
        kind: PhaseKind,
        rate: f64,
        duration: Duration,
        tally: &PhaseTally,
        cpu: &CpuWindow,
    ) -> PhaseReport {
        let per_call = cpu
            .server
            .zip(self.idle_cpu_rate)
            .and_then(|(server, idle)| {
                let above_idle = server.as_secs_f64() - idle * cpu.wall.as_secs_f64();
                (tally.completed > 0).then(|| 1e6 * above_idle.max(0.0) / tally.completed as f64)
            });
        PhaseReport {
            kind,
            rate,
            secs: cpu.wall.as_secs_f64(),
            dispatched: tally.dispatched,
            completed: tally.completed,
            failed: tally.failed,
            lost: tally.lost,
            no_pair: tally.no_pair,
            achieved_per_sec: tally.completed as f64 / duration.as_secs_f64().max(f64::EPSILON),
            send_lag: tally.send_lag,
            incoming: tally.incoming,
            accepted: tally.accepted,
            server_cpu_pct: cpu.server_pct(),
            server_cpu_us_per_call: per_call,
            generator_cpu_pct: cpu.own_pct_of_capacity(),
            others_cpu_pct: cpu.others_pct(),
            redis_commands_per_call: None,
        }
    }
}

/// Tokens for `users`: minted with the secret, else fetched by logging in.
async fn tokens(args: &RunArgs, users: &[SeedUser]) -> Result<Vec<String>, String> {
    match &args.jwt_secret {
        Some(secret) => token::mint(secret.as_bytes(), users),
        None => token::login_all(args.addr, users, &args.password, LOGIN_CONCURRENCY).await,
    }
}

fn connect_report(
    target: usize,
    growth: &Growth,
    cpu: &CpuWindow,
    rss_kib: Option<u64>,
) -> ConnectReport {
    let secs = growth.elapsed.as_secs_f64();
    ConnectReport {
        target,
        open: growth.open,
        opened: growth.opened,
        failed: growth.failed.clone(),
        secs,
        per_sec: growth.opened as f64 / secs.max(f64::EPSILON),
        handshake: growth.handshake,
        server_cpu_us_per_handshake: cpu
            .server
            .filter(|_| growth.opened > 0)
            .map(|s| 1e6 * s.as_secs_f64() / growth.opened as f64),
        generator_cpu_pct: cpu.own_pct_of_capacity(),
        rss_kib,
        redis_commands_per_connect: None,
    }
}

/// KiB of server RSS per connection between the last two stages.
fn memory_slope(stages: &[ConnectReport]) -> Option<f64> {
    let [.., low, high] = stages else { return None };
    let (low_kib, high_kib) = (low.rss_kib?, high.rss_kib?);
    let sockets = high.open.checked_sub(low.open).filter(|&n| n > 0)?;
    Some((high_kib as f64 - low_kib as f64) / sockets as f64)
}

/// Pairs (0, 1), (2, 3), ... of the first `2 × count` users, both sockets open.
fn pairs(fleet: &Fleet, users: &[SeedUser], count: usize) -> PairPool {
    let person = |u: &SeedUser| {
        Arc::new(Person {
            id: u.id.clone(),
            name: u.display_name.clone(),
        })
    };
    let pairs = (0..count)
        .filter_map(|k| {
            let (caller, callee) = (2 * k, 2 * k + 1);
            Some(Pair {
                caller: fleet.client(caller)?.clone(),
                callee: fleet.client(callee)?.clone(),
                caller_person: person(users.get(caller)?),
                callee_person: person(users.get(callee)?),
            })
        })
        .collect();
    PairPool::new(pairs)
}

/// Steps up the rate until set-up p99 passes `knee_p99_ms`, too many calls
/// fall short, or the generator is the limit.
async fn find_knee(bench: &CallBench, args: &RunArgs, phases: &mut Vec<PhaseReport>) -> Knee {
    let mut passed = None;
    for (i, &rate) in args.steps.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(STEP_PAUSE).await;
        }
        let step = bench
            .phase(PhaseKind::Step, rate, secs(args.step_secs))
            .await;
        let stopped_by = if step.generator_busy() {
            Some("generator")
        } else if step.shortfall() as f64 > MAX_SHORTFALL * (step.dispatched + step.no_pair) as f64
        {
            Some("shortfall")
        } else if step.accepted.p99 > args.knee_p99_ms {
            Some("p99")
        } else {
            None
        };
        phases.push(step);
        if let Some(reason) = stopped_by {
            return Knee {
                rate: passed,
                stopped_by: reason.to_owned(),
            };
        }
        passed = Some(rate);
    }
    Knee {
        rate: passed,
        stopped_by: "last_step".to_owned(),
    }
}

/// Why a round should be discarded.
fn discard_reasons(report: &RunReport) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(n) = report.listen_overflows.filter(|&n| n > 0) {
        reasons.push(format!("{n} listen-queue overflows"));
    }
    let measured = |p: &&PhaseReport| {
        matches!(
            p.kind,
            PhaseKind::Fixed | PhaseKind::StormBefore | PhaseKind::StormDuring
        )
    };
    for p in report
        .phases
        .iter()
        .filter(measured)
        .filter(|p| p.generator_busy())
    {
        reasons.push(format!(
            "generator busy in the {:?} phase at {} calls/s ({:.0}% CPU, send-lag p90 {:.1} ms)",
            p.kind, p.rate, p.generator_cpu_pct, p.send_lag.p90
        ));
    }
    reasons
}

/// Opens the sockets stage by stage, sampling RSS after each stage settles.
async fn connect_stages(
    fleet: &mut Fleet,
    tokens: &[String],
    args: &RunArgs,
    probe: Option<ServerProbe>,
) -> Vec<ConnectReport> {
    let mut stages = Vec::new();
    for &target in &args.connections {
        let meter = CpuMeter::start(probe);
        let redis_before = args.redis_addr.and_then(redis_stats::commands);
        let growth = fleet
            .grow(tokens, target, args.connect_rate, args.connect_in_flight)
            .await;
        let cpu = meter.stop();
        let redis_after = args.redis_addr.and_then(redis_stats::commands);
        tokio::time::sleep(secs(args.settle_secs)).await;
        let rss = probe.and_then(|p| p.rss_kib());
        let mut report = connect_report(target, &growth, &cpu, rss);
        // Includes the stage's share of heartbeats and timer polls (a few per
        // second), small beside thousands of connects.
        report.redis_commands_per_connect = redis_before
            .zip(redis_after)
            .filter(|_| growth.opened > 0)
            .map(|(b, a)| a.saturating_sub(b) as f64 / growth.opened as f64);
        stages.push(report);
    }
    stages
}

/// Call traffic at the storm rate, then the same with the login loops (as the
/// last `storm_clients` users of the seed). Returns the two phases, the storm
/// and the p99 ratio during ÷ before.
async fn login_storm(
    bench: &CallBench,
    args: &RunArgs,
    users: &[SeedUser],
) -> ([PhaseReport; 2], StormReport, Option<f64>) {
    let duration = secs(args.phase_secs);
    let before = bench
        .phase(PhaseKind::StormBefore, args.storm_rate, duration)
        .await;
    let usernames = users
        .iter()
        .rev()
        .take(args.storm_clients)
        .map(|u| u.username.clone())
        .collect();
    let (storm, during) = tokio::join!(
        storm::run(args.addr, usernames, &args.password, duration),
        bench.phase(PhaseKind::StormDuring, args.storm_rate, duration),
    );
    let ratio = (before.accepted.p99 > 0.0).then(|| during.accepted.p99 / before.accepted.p99);
    ([before, during], storm, ratio)
}

/// The generator's load over the measured (non-warm-up) phases.
fn generator_report(phases: &[PhaseReport]) -> GeneratorReport {
    let measured = || phases.iter().filter(|p| p.kind != PhaseKind::Warmup);
    let max = |read: fn(&PhaseReport) -> f64| measured().map(read).fold(0.0, f64::max);
    GeneratorReport {
        cores: probe::cores(),
        max_cpu_pct: max(|p| p.generator_cpu_pct),
        max_send_lag_p90_ms: max(|p| p.send_lag.p90),
        max_send_lag_p99_ms: max(|p| p.send_lag.p99),
    }
}

/// Runs every scenario against the server at `args.addr`.
///
/// # Errors
/// An unusable seed, too few users, or tokens that cannot be had.
pub async fn run(args: &RunArgs) -> Result<RunReport, String> {
    let seed = seed::load(&args.seed)?;
    let sockets = args.connections.iter().copied().max().unwrap_or(0);
    if sockets > seed.users.len() {
        return Err(format!(
            "{sockets} sockets need as many users; the seed has {}",
            seed.users.len()
        ));
    }
    if 2 * args.pairs > sockets {
        return Err(format!(
            "{} pairs need {} sockets; only {sockets} asked for",
            args.pairs,
            2 * args.pairs
        ));
    }
    let users = &seed.users[..sockets];
    let tokens = tokens(args, users).await?;
    let probe = args
        .server_pid
        .map(|pid| ServerProbe::new(pid).with_peer(args.peer_pid));
    let overflows_before = probe::listen_overflows();

    let mut endpoints = vec![Endpoint::new(args.addr)];
    endpoints.extend(args.peer_addr.map(Endpoint::new));
    let mut fleet = Fleet::new(endpoints, args.sockets_per_source);
    let connect = connect_stages(&mut fleet, &tokens, args, probe).await;

    let idle = CpuMeter::start(probe);
    let redis_before = args.redis_addr.and_then(redis_stats::commands);
    tokio::time::sleep(secs(args.settle_secs)).await;
    let idle = idle.stop();
    let redis_after = args.redis_addr.and_then(redis_stats::commands);
    let idle_redis_rate = redis_before
        .zip(redis_after)
        .map(|(b, a)| a.saturating_sub(b) as f64 / idle.wall.as_secs_f64().max(f64::EPSILON));
    let bench = CallBench {
        pool: Arc::new(pairs(&fleet, users, args.pairs)),
        numbers: CallNumbers::default(),
        probe,
        idle_cpu_rate: idle
            .server
            .map(|s| s.as_secs_f64() / idle.wall.as_secs_f64()),
        drain: secs(args.drain_secs),
        redis: args.redis_addr,
        idle_redis_rate,
    };

    let mut phases = Vec::new();
    if args.warmup_secs > 0.0 {
        let warmup = secs(args.warmup_secs);
        phases.push(
            bench
                .phase(PhaseKind::Warmup, args.warmup_rate, warmup)
                .await,
        );
    }
    for &rate in &args.rates {
        phases.push(
            bench
                .phase(PhaseKind::Fixed, rate, secs(args.phase_secs))
                .await,
        );
    }
    let (storm, storm_p99_ratio) = if args.storm_clients > 0 {
        let (storm_phases, storm, ratio) = login_storm(&bench, args, &seed.users).await;
        phases.extend(storm_phases);
        (Some(storm), ratio)
    } else {
        (None, None)
    };
    let knee = if args.steps.is_empty() {
        None
    } else {
        Some(find_knee(&bench, args, &mut phases).await)
    };

    let listen_overflows = overflows_before
        .zip(probe::listen_overflows())
        .map(|(before, after)| after.saturating_sub(before));
    let mut report = RunReport {
        target: args.target.label().to_owned(),
        round: args.round,
        settings: Settings {
            connections: args.connections.clone(),
            pairs: bench.pool.len(),
            rates: args.rates.clone(),
            phase_secs: args.phase_secs,
            storm_clients: args.storm_clients,
            storm_rate: args.storm_rate,
            steps: args.steps.clone(),
            knee_p99_ms: args.knee_p99_ms,
        },
        kib_per_connection: memory_slope(&connect),
        connect,
        server_idle_cpu_pct: idle.server_pct(),
        generator: generator_report(&phases),
        phases,
        storm,
        storm_p99_ratio,
        knee,
        listen_overflows,
        dropped_sockets: fleet.dropped(),
        discard: Vec::new(),
    };
    report.discard = discard_reasons(&report);
    Ok(report)
}
