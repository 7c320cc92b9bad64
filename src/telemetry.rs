//! Logging set-up: the one subscriber the binary installs, with a cap that no
//! filter can lift.
//!
//! Some dependencies log what callgate must never log: socketioxide's and
//! engineioxide's `tracing` feature prints CONNECT packets (the JWT in the
//! auth payload) at debug, tungstenite prints websocket frames (the same
//! packets) at trace, h2 and hyper print header blocks at trace, and the
//! MongoDB driver prints commands and replies (password hashes) at debug.
//! Two defences, so that neither a `log.filter` nor `RUST_LOG` value can put a
//! token in a log line:
//! - socketioxide is built without its `tracing` feature (Cargo.toml), so its
//!   packet logging does not exist in the binary;
//! - [`capped`] puts a per-layer [`Targets`] filter after the user's filter:
//!   an event must pass both, so `RUST_LOG=trace` still shows those targets
//!   only up to [`CAPS`].

use tracing::Level;
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Targets that can log secrets, and the most verbose level they may log at,
/// whatever the filter asks.
pub const CAPS: [(&str, Level); 9] = [
    ("socketioxide", Level::WARN),
    ("engineioxide", Level::WARN),
    ("tungstenite", Level::INFO),
    ("tokio_tungstenite", Level::INFO),
    ("hyper", Level::INFO),
    ("hyper_util", Level::INFO),
    ("h2", Level::INFO),
    ("mongodb", Level::INFO),
    ("tower_http", Level::DEBUG),
];

/// The user's filter, capped by [`CAPS`]: an event is logged only when both
/// allow it.
pub fn capped<S>(user: EnvFilter) -> impl Filter<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let caps = CAPS.iter().fold(
        Targets::new().with_default(Level::TRACE),
        |t, (target, level)| t.with_target(*target, *level),
    );
    user.and(caps)
}

/// The filter from `RUST_LOG` when set and valid, else `directives`, else `info`.
pub fn user_filter(directives: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(directives))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the process-wide subscriber: `format`, `filter` capped by
/// [`CAPS`], written to `writer`.
///
/// # Errors
/// When a global subscriber is already installed.
pub fn try_init<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Result<(), tracing_subscriber::util::TryInitError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().with_filter(capped(filter)))
            .try_init(),
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_filter(capped(filter)))
            .try_init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_against_a_trace_filter() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().map_or(Ok(0), |mut v| {
                    v.extend_from_slice(b);
                    Ok(b.len())
                })
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let out = sink.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || out.clone())
                .with_filter(capped(EnvFilter::new("trace,socketioxide=trace"))),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "socketioxide::ns", "secret-connect-packet");
            tracing::trace!(target: "tungstenite::protocol", "secret-frame");
            tracing::warn!(target: "socketioxide::ns", "kept-warning");
            tracing::trace!(target: "callgate::x", "kept-trace");
        });
        let text = String::from_utf8(sink.0.lock().map(|v| v.clone()).unwrap_or_default())
            .unwrap_or_default();
        assert!(!text.contains("secret-"), "{text}");
        assert!(
            text.contains("kept-warning") && text.contains("kept-trace"),
            "{text}"
        );
    }
}
