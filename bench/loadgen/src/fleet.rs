//! The generator's sockets: opened at a chosen rate with a cap on handshakes
//! in flight, one user per socket, then held open (answering pings) for the
//! rest of the run.
//!
//! Past `sockets_per_source` sockets the client side binds 127.0.0.2,
//! 127.0.0.3, ... before connecting, so the run is not limited by the
//! ephemeral ports of a single source address (about 28 000).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{self, Client, Endpoint};
use crate::stats::{Latencies, Percentiles};

/// A handshake that has not finished after this long counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a batch of connections went.
#[derive(Debug, Clone)]
pub struct Growth {
    /// Sockets open at the end.
    pub open: usize,
    /// Sockets opened by this batch.
    pub opened: usize,
    /// Failures by kind (`tcp`, `websocket`, `refused`, `protocol`, `timeout`):
    /// how many, and the first one's message.
    pub failed: BTreeMap<String, (u64, String)>,
    /// Wall time of the batch.
    pub elapsed: Duration,
    /// TCP connect → CONNECT acknowledged.
    pub handshake: Percentiles,
}

/// The open sockets, by user index.
#[derive(Debug)]
pub struct Fleet {
    /// Socket `i` connects to `endpoints[i % len]` (two nodes: callers on the
    /// first, callees on the second).
    endpoints: Vec<Arc<Endpoint>>,
    sockets_per_source: usize,
    clients: Vec<Option<Client>>,
    dropped: Arc<AtomicU64>,
}

/// The source address for socket `index`: the kernel's default for the first
/// `per_source`, then 127.0.0.2, 127.0.0.3, ...
fn source_address(index: usize, per_source: usize) -> Option<Ipv4Addr> {
    let block = index / per_source.max(1);
    if block == 0 {
        return None;
    }
    let block = u32::try_from(block).ok()?;
    // 127.0.0.2 and up; blocks past 127.255.255.254 are not needed in practice.
    Some(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(127, 0, 0, 1)) + block,
    ))
}

/// Counts one failure of `kind`, keeping the first message.
fn count_failure(failed: &mut BTreeMap<String, (u64, String)>, kind: &str, message: String) {
    failed.entry(kind.to_owned()).or_insert((0, message)).0 += 1;
}

impl Fleet {
    /// No sockets yet; sockets take the endpoints in turn.
    pub fn new(endpoints: Vec<Endpoint>, sockets_per_source: usize) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Arc::new).collect(),
            sockets_per_source,
            clients: Vec::new(),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The socket of user `index`, if it is open.
    pub fn client(&self, index: usize) -> Option<&Client> {
        self.clients.get(index).and_then(Option::as_ref)
    }

    /// Sockets the server closed so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Opens sockets for users `len..target` with `tokens[i]`, starting
    /// `rate` per second (0: as fast as `in_flight` concurrent handshakes allow).
    pub async fn grow(
        &mut self,
        tokens: &[String],
        target: usize,
        rate: f64,
        in_flight: usize,
    ) -> Growth {
        let first = self.clients.len();
        let target = target.min(tokens.len()).max(first);
        self.clients.resize(target, None);
        let permits = Arc::new(Semaphore::new(in_flight.max(1)));
        let start = Instant::now();
        let mut attempts = JoinSet::new();
        for (index, token) in tokens.iter().enumerate().take(target).skip(first) {
            if rate > 0.0 {
                let due = start + Duration::from_secs_f64((index - first) as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let endpoint = self.endpoints[index % self.endpoints.len()].clone();
            let token = token.clone();
            let source = source_address(index, self.sockets_per_source);
            let dropped = self.dropped.clone();
            attempts.spawn(async move {
                let began = Instant::now();
                let result = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    client::connect(&endpoint, source, &token),
                )
                .await;
                drop(permit);
                let outcome = match result {
                    Ok(Ok(ws)) => Ok(Client::spawn(ws, dropped)),
                    Ok(Err(e)) => Err((e.kind(), e.to_string())),
                    Err(_) => Err((
                        "timeout",
                        format!("no CONNECT within {HANDSHAKE_TIMEOUT:?}"),
                    )),
                };
                (index, began.elapsed(), outcome)
            });
        }
        let mut handshake = Latencies::new();
        let mut failed = BTreeMap::new();
        let mut opened = 0;
        while let Some(joined) = attempts.join_next().await {
            let Ok((index, took, outcome)) = joined else {
                count_failure(&mut failed, "panicked", String::new());
                continue;
            };
            match outcome {
                Ok(client) => {
                    handshake.record(took);
                    self.clients[index] = Some(client);
                    opened += 1;
                }
                Err((kind, message)) => count_failure(&mut failed, kind, message),
            }
        }
        Growth {
            open: self.clients.iter().filter(|c| c.is_some()).count(),
            opened,
            failed,
            elapsed: start.elapsed(),
            handshake: handshake.percentiles(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_move_to_the_next_loopback_address_per_block() {
        assert_eq!(source_address(0, 25_000), None);
        assert_eq!(source_address(24_999, 25_000), None);
        assert_eq!(
            source_address(25_000, 25_000),
            Some(Ipv4Addr::new(127, 0, 0, 2))
        );
        assert_eq!(
            source_address(75_000, 25_000),
            Some(Ipv4Addr::new(127, 0, 0, 4))
        );
    }
}
