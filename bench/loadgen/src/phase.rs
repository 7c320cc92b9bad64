//! Open-loop call traffic: call set-ups started on a clock at a fixed rate,
//! never waiting for earlier ones, over a pool of caller/callee pairs.
//!
//! A pair carries one call at a time (callgate refuses glare and busy), so the
//! scheduler takes a free pair for each start; when none is free the start is
//! counted as `no_pair` (the server is far behind) rather than delayed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::call::{Call, Outcome, Person};
use crate::client::{Client, Command};
use crate::stats::{Latencies, Percentiles};

/// A caller socket and a callee socket.
#[derive(Debug)]
pub struct Pair {
    /// The calling user's socket.
    pub caller: Client,
    /// The called user's socket.
    pub callee: Client,
    /// Who calls.
    pub caller_person: Arc<Person>,
    /// Who is called.
    pub callee_person: Arc<Person>,
}

/// The pairs, and which of them are free.
#[derive(Debug)]
pub struct PairPool {
    pairs: Vec<Pair>,
    free: Mutex<VecDeque<usize>>,
}

impl PairPool {
    /// A pool where every pair is free.
    pub fn new(pairs: Vec<Pair>) -> Self {
        let free = (0..pairs.len()).collect();
        Self {
            pairs,
            free: Mutex::new(free),
        }
    }

    /// How many pairs there are.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    fn take(&self) -> Option<usize> {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    /// Puts `pair` back at the end of the free queue.
    pub fn release(&self, pair: usize) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(pair);
    }

    /// The caller and the callee of `pair`.
    pub fn people(&self, pair: usize) -> (Arc<Person>, Arc<Person>) {
        let p = &self.pairs[pair];
        (p.caller_person.clone(), p.callee_person.clone())
    }
}

#[derive(Debug, Default)]
struct PhaseLatencies {
    send_lag: Latencies,
    incoming: Latencies,
    accepted: Latencies,
}

/// Counters and latencies of one stretch of call traffic.
#[derive(Debug, Default)]
pub struct Phase {
    dispatched: AtomicU64,
    no_pair: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    latencies: Mutex<PhaseLatencies>,
}

/// What a [`Phase`] counted.
#[derive(Debug, Clone, Copy)]
pub struct PhaseTally {
    /// Calls started.
    pub dispatched: u64,
    /// Starts skipped because every pair was busy.
    pub no_pair: u64,
    /// Calls that went through.
    pub completed: u64,
    /// Calls the server refused.
    pub failed: u64,
    /// Calls neither completed nor failed by the end of the drain.
    pub lost: u64,
    /// How late the generator wrote initiates against the schedule.
    pub send_lag: Percentiles,
    /// initiate → `incomingVideoCall` at the callee.
    pub incoming: Percentiles,
    /// initiate → `videoCallAccepted` at the caller: the call set-up latency.
    pub accepted: Percentiles,
}

impl Phase {
    fn with_latencies(&self, f: impl FnOnce(&mut PhaseLatencies)) {
        f(&mut self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner));
    }

    /// Records how late an initiate was written.
    pub fn record_send_lag(&self, lag: Duration) {
        self.with_latencies(|l| l.send_lag.record(lag));
    }

    /// Records an initiate → incoming latency.
    pub fn record_incoming(&self, latency: Duration) {
        self.with_latencies(|l| l.incoming.record(latency));
    }

    /// Records an initiate → accepted latency.
    pub fn record_accepted(&self, latency: Duration) {
        self.with_latencies(|l| l.accepted.record(latency));
    }

    /// Counts a finished call.
    pub fn record_outcome(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Completed => &self.completed,
            Outcome::Failed => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn finished(&self) -> u64 {
        self.completed.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    /// Everything counted so far.
    pub fn tally(&self) -> PhaseTally {
        let dispatched = self.dispatched.load(Ordering::Relaxed);
        let completed = self.completed.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let latencies = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        PhaseTally {
            dispatched,
            no_pair: self.no_pair.load(Ordering::Relaxed),
            completed,
            failed,
            lost: dispatched.saturating_sub(completed + failed),
            send_lag: latencies.send_lag.percentiles(),
            incoming: latencies.incoming.percentiles(),
            accepted: latencies.accepted.percentiles(),
        }
    }
}

/// Where call numbers (and so room names) come from, unique over a run.
#[derive(Debug, Default)]
pub struct CallNumbers(AtomicU64);

impl CallNumbers {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// Starts `rate` calls per second for `duration` on `pool`, then waits up to
/// `drain` for the started calls to finish. Returns the phase's tally.
pub async fn drive(
    pool: &Arc<PairPool>,
    numbers: &CallNumbers,
    rate: f64,
    duration: Duration,
    drain: Duration,
) -> PhaseTally {
    let phase = Arc::new(Phase::default());
    let start = Instant::now();
    let total = (rate * duration.as_secs_f64()).round() as u64;
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let Some(pair) = pool.take() else {
            phase.no_pair.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        phase.dispatched.fetch_add(1, Ordering::Relaxed);
        let Pair { caller, callee, .. } = &pool.pairs[pair];
        if !caller.is_alive() || !callee.is_alive() {
            // A socket the server dropped: the pair leaves the rotation.
            phase.record_outcome(Outcome::Failed);
            continue;
        }
        let call = Arc::new(Call::new(
            numbers.next(),
            pair,
            pool.clone(),
            phase.clone(),
            due,
        ));
        // The callee learns of the call first, so its task knows it before the
        // server's incomingVideoCall can arrive.
        callee.send(Command::Answer(call.clone()));
        caller.send(Command::Dial(call));
    }
    let drain_until = Instant::now() + drain;
    while phase.finished() < phase.dispatched.load(Ordering::Relaxed)
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    phase.tally()
}
