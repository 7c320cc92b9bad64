//! `--redis`: socketioxide's Redis adapter on the fred driver, configured
//! exactly as a callgate node configures it (callgate's `src/cluster/mod.rs`
//! `builder` and `subscriber`, and `src/app.rs`), with callgate's default
//! `[cluster]` settings. The relay then costs what the adapter costs: any
//! difference to `callgate-cluster` is callgate's own cluster logic.
//!
//! Not copied from callgate, on purpose: the resubscription after a Redis
//! reconnect (`resubscribe_on_reconnect`). A benchmark's Redis never restarts
//! under it, so a baseline does not need it; a relay node whose Redis restarts
//! stays deaf to the other node until it is restarted itself.

use std::time::Duration;

use fred::prelude::{Builder, Config, ReconnectPolicy};
use fred::types::RespVersion;
use socketioxide_redis::drivers::fred::FredDriver;
use socketioxide_redis::{RedisAdapterConfig, RedisAdapterCtr};

/// The adapter of a relay node: callgate's `ClusterAdapter`.
pub type ClusterAdapter = socketioxide_redis::FredAdapter<socketioxide::adapter::Emitter>;

/// callgate's default `cluster.redis_timeout_ms`: the bound on each command.
const REDIS_TIMEOUT: Duration = Duration::from_millis(300);
/// callgate's default `cluster.adapter_request_timeout_ms`.
const ADAPTER_REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
/// callgate's default `cluster.stream_buffer`.
const STREAM_BUFFER: usize = 8192;
/// The adapter's channel prefix: `{key_prefix}:sio`, with the key prefix
/// bench/compare.sh gives the callgate nodes (`bench`), so channel names (and
/// so every published message) have the same length.
const PREFIX: &str = "bench:sio";

/// The subscriber client the adapter publishes and receives through, built as
/// callgate's `Redis::subscriber`.
fn subscriber(url: &str) -> Result<fred::clients::SubscriberClient, String> {
    let mut config = Config::from_url(url).map_err(|_| "--redis: not a Redis URL".to_string())?;
    // The adapter's driver needs RESP3 (Redis 7+); fred does not read it from the URL.
    config.version = RespVersion::RESP3;
    // Start-up reports an unreachable Redis at once instead of retrying for ever.
    config.fail_fast = true;
    let mut builder = Builder::from_config(config);
    builder
        .with_performance_config(|p| {
            p.default_command_timeout = REDIS_TIMEOUT;
            // As callgate: a late reader must not lose messages to fred's
            // 32-slot default channel.
            p.broadcast_channel_capacity = 1024;
        })
        .with_connection_config(|c| {
            c.connection_timeout = REDIS_TIMEOUT.max(Duration::from_millis(500));
            c.internal_command_timeout = REDIS_TIMEOUT.max(Duration::from_millis(500));
            c.max_command_attempts = 1;
            c.max_command_buffer_len = 10_000;
            // Small commands that wait for their answers: no Nagle delay.
            c.tcp.nodelay = Some(true);
        })
        // Reconnect for ever: 50 ms doubling to 1 s.
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 1000, 2));
    builder
        .build_subscriber_client()
        .map_err(|_| "--redis: not a usable Redis URL".to_string())
}

/// Connects to Redis (fails fast if it does not answer) and returns the
/// adapter's constructor, to give `SocketIoBuilder::with_adapter`.
///
/// # Errors
/// A bad URL or an unreachable Redis; the message never quotes the URL.
pub async fn adapter(url: &str) -> Result<RedisAdapterCtr<FredDriver>, String> {
    let config = RedisAdapterConfig::new()
        .with_prefix(PREFIX)
        .with_request_timeout(ADAPTER_REQUEST_TIMEOUT)
        .with_stream_buffer(STREAM_BUFFER);
    RedisAdapterCtr::new_with_fred_config(subscriber(url)?, config)
        .await
        .map_err(|e| format!("Redis did not answer: {}", e.kind().to_str()))
}
