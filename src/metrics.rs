//! Prometheus metrics, served at `GET /metrics` in the text format.
//!
//! One registry per server (no process globals, so servers in one process,
//! as in the tests, never mix their counts). Counters are pushed where things
//! happen; gauges of state (sockets, live calls) are read at scrape time.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `event` and `outcome` (`ok` or an error code).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// Event name.
    pub event: &'static str,
    /// `ok` or the error code.
    pub outcome: &'static str,
}

/// One `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: &'static str,
}

/// One `code` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The error code.
    pub code: &'static str,
}

/// Live calls by `kind` and `state`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `direct` or `group`.
    pub kind: &'static str,
    /// `ringing` or `active`.
    pub state: &'static str,
}

/// Every metric callgate exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sockets: Gauge,
    calls: Family<CallLabels, Gauge>,
    call_outcomes: Family<ReasonLabel, Counter>,
    events: Family<EventLabels, Counter>,
    rejections: Family<CodeLabel, Counter>,
    handshake_failures: Family<ReasonLabel, Counter>,
    login_seconds: Histogram,
    limiter_keys: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("callgate");
        let sockets = Gauge::default();
        let calls = Family::<CallLabels, Gauge>::default();
        let call_outcomes = Family::<ReasonLabel, Counter>::default();
        let events = Family::<EventLabels, Counter>::default();
        let rejections = Family::<CodeLabel, Counter>::default();
        let handshake_failures = Family::<ReasonLabel, Counter>::default();
        // 1 ms to ~4 s: argon2id alone is ~15 ms, a queued login waits longer.
        let login_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 13),
        );
        let limiter_keys = Gauge::default();
        registry.register("sockets", "Connected Socket.IO sockets", sockets.clone());
        registry.register("calls", "Live calls by kind and state", calls.clone());
        registry.register(
            "call_outcomes",
            "Calls ended, by reason",
            call_outcomes.clone(),
        );
        registry.register(
            "events",
            "Client events handled, by name and outcome",
            events.clone(),
        );
        registry.register(
            "rejections",
            "Refusals sent to clients, by error code",
            rejections.clone(),
        );
        registry.register(
            "handshake_failures",
            "Refused Socket.IO handshakes, by reason",
            handshake_failures.clone(),
        );
        registry.register(
            "login_seconds",
            "POST /auth/login latency",
            login_seconds.clone(),
        );
        registry.register(
            "rate_limiter_keys",
            "Keys held by the rate limiters",
            limiter_keys.clone(),
        );
        Self {
            registry,
            sockets,
            calls,
            call_outcomes,
            events,
            rejections,
            handshake_failures,
            login_seconds,
            limiter_keys,
        }
    }

    /// A client event was answered with `outcome` (`ok` or an error code).
    pub fn event(&self, event: &'static str, outcome: &'static str) {
        self.events
            .get_or_create(&EventLabels { event, outcome })
            .inc();
        if outcome != "ok" {
            self.rejections
                .get_or_create(&CodeLabel { code: outcome })
                .inc();
        }
    }

    /// A call ended for `reason`.
    pub fn call_ended(&self, reason: &'static str) {
        self.call_outcomes
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// A handshake was refused for `reason`.
    pub fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// A login took `elapsed`.
    pub fn login(&self, elapsed: Duration) {
        self.login_seconds.observe(elapsed.as_secs_f64());
    }

    /// Encodes every metric, after setting the state gauges to the values
    /// given. `calls` is `None` on a cluster node: the live calls are in
    /// Redis, shared by every node, so this process exports no
    /// `callgate_calls` series rather than a misleading 0.
    pub fn render(
        &self,
        sockets: usize,
        calls: Option<(usize, usize, usize, usize)>,
        limiter_keys: usize,
    ) -> String {
        self.sockets.set(i64::try_from(sockets).unwrap_or(i64::MAX));
        if let Some((dr, da, gr, ga)) = calls {
            for (kind, state, n) in [
                ("direct", "ringing", dr),
                ("direct", "active", da),
                ("group", "ringing", gr),
                ("group", "active", ga),
            ] {
                self.calls
                    .get_or_create(&CallLabels { kind, state })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        self.limiter_keys
            .set(i64::try_from(limiter_keys).unwrap_or(i64::MAX));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics encoding failed");
        }
        out
    }
}
