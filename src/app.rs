//! The one place where everything is wired: [`App::build`] loads the store,
//! keys and policy, builds the Socket.IO layer and the router, and binds the
//! listener (port 0 works, for tests); [`App::run_until`] serves until a
//! shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use socketioxide::{SocketIo, TransportType};
use tokio::net::TcpListener;

use crate::auth::{PasswordHasher, TokenKeys, password};
use crate::cluster::{ClusterAdapter, Redis};
use crate::config::{Config, Environment, Problems, StoreKind, Transport};
use crate::http::client_ip::TrustedProxies;
use crate::http::demo::{DemoAccount, DemoPage};
use crate::http::{self, ApiState, NodeInfo};
use crate::jitsi::Jitsi;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::serve::{self, TlsReloader};
use crate::signaling::call_store::CallStore;
use crate::signaling::io::Io;
use crate::signaling::{self, Hub};
use crate::store::seed::{Seed, SeedError};
use crate::store::{EmbeddedStore, MongoStore, Store, StoreError};

/// How often idle rate-limiter keys are forgotten.
const LIMITER_CLEANUP_PERIOD: Duration = Duration::from_secs(60);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Configuration or policy problems (each names the key and the fix).
    #[error("{0}")]
    Config(#[from] Problems),
    /// The seed file is malformed.
    #[error("seed file: {0}")]
    Seed(#[from] SeedError),
    /// The store could not be reached.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Cluster mode could not reach Redis (the message never quotes the URL).
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ConnectError),
    /// Cluster mode could not register this node (Redis, or a duplicate node id).
    #[error("cluster: {0}")]
    Node(#[from] crate::cluster::nodes::StartError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A built, bound server.
pub struct App {
    listener: TcpListener,
    router: Router,
    io: Io,
    node: NodeInfo,
    store: Store,
    keys: Arc<TokenKeys>,
    hub: Arc<Hub>,
    seeded_usernames: Vec<String>,
    demo: bool,
    shutdown_grace: Duration,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    http2_keep_alive: (Duration, Duration),
    max_connections: usize,
    tls: Option<TlsReloader>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

/// Builds the store named by the config. Also returns the seeded usernames,
/// and the accounts a `"demo": true` seed offers the demo page.
///
/// # Errors
/// A malformed seed or an unreachable MongoDB.
pub async fn build_store(
    config: &Config,
) -> Result<(Store, Vec<String>, Vec<DemoAccount>), BuildError> {
    match config.store.kind {
        StoreKind::Embedded => {
            let path = config.store.seed.clone();
            if path.as_os_str().is_empty() {
                return Ok((
                    Store::Embedded(guard_embedded(config, EmbeddedStore::new())),
                    Vec::new(),
                    Vec::new(),
                ));
            }
            let params = password::params(&config.password).map_err(|_| {
                Problems(vec![crate::config::Problem::new(
                    "password",
                    "invalid argon2 parameters",
                    "use the defaults",
                )])
            })?;
            let seed = Seed::load(&path)?;
            let usernames = seed.users.iter().map(|u| u.username.to_string()).collect();
            let demo_accounts = DemoAccount::from_seed(&seed);
            // Hashing seed passwords costs ~15 ms each: keep it off the runtime threads.
            let store = tokio::task::spawn_blocking(move || {
                EmbeddedStore::from_seed(seed, |p| password::hash_blocking(&params, p))
            })
            .await
            .map_err(|_| StoreError::Unavailable("seed loading panicked".into()))?
            .map_err(|_| StoreError::Unavailable("seed password hashing failed".into()))?;
            Ok((
                Store::Embedded(guard_embedded(config, store)),
                usernames,
                demo_accounts,
            ))
        }
        StoreKind::Mongodb => Ok((
            Store::Mongo(MongoStore::connect(&config.store.mongodb).await?),
            Vec::new(),
            Vec::new(),
        )),
    }
}

/// Several cluster nodes each hold their own copy of the embedded directory:
/// writes are refused rather than left to diverge (see `StoreError::ReadOnly`).
fn guard_embedded(config: &Config, store: EmbeddedStore) -> EmbeddedStore {
    if config.cluster.enabled() {
        store.read_only()
    } else {
        store
    }
}

/// The `/demo/` routes when `server.demo` turns the page on (by default in
/// development only), else None: the paths then answer 404 like any unknown
/// route. One-click accounts are offered in development only (the embedded
/// store is refused in production anyway; this says it twice).
fn demo_routes(config: &Config, accounts: Vec<DemoAccount>) -> Option<Router> {
    if !config.server.demo.enabled(config.environment) {
        return None;
    }
    let accounts = if config.environment == Environment::Development {
        accounts
    } else {
        Vec::new()
    };
    Some(http::demo::router(DemoPage::new(
        config.jitsi.domain(),
        &config.socketio.path,
        accounts,
    )))
}

fn transports(config: &[Transport]) -> Vec<TransportType> {
    config
        .iter()
        .map(|t| match t {
            Transport::Polling => TransportType::Polling,
            Transport::Websocket => TransportType::Websocket,
        })
        .collect()
}

impl App {
    /// Validates `config` and `policy`, builds every part and binds the listener.
    ///
    /// # Errors
    /// Every configuration problem at once, a bad seed, an unreachable store,
    /// or a port that cannot be bound.
    pub async fn build(config: Config, policy: Policy) -> Result<Self, BuildError> {
        let mut problems = Problems(config.validate().err().map(|p| p.0).unwrap_or_default());
        let keys = TokenKeys::from_config(&config.auth, config.environment);
        if let Err(p) = &keys {
            problems.extend_new(p.0.iter().cloned());
        }
        if let Err(p) = policy.validate() {
            problems.extend_new(p.0);
        }
        // The key is read only once the section itself is valid.
        let jitsi = if problems.0.iter().any(|p| p.key.starts_with("jitsi.")) {
            None
        } else {
            match Jitsi::from_config(&config.jitsi) {
                Ok(j) => j.map(Arc::new),
                Err(p) => {
                    problems.extend_new(p.0);
                    None
                }
            }
        };
        if !problems.0.is_empty() {
            return Err(problems.into());
        }
        let keys = Arc::new(keys?);
        if keys.generated_secret() {
            tracing::warn!(
                "no JWT secret configured: using a random one; tokens will not survive a restart (set CALLGATE_JWT_SECRET)"
            );
        }
        let hasher = PasswordHasher::new(&config.password).map_err(|_| {
            Problems(vec![crate::config::Problem::new(
                "password",
                "invalid argon2 parameters",
                "use the defaults",
            )])
        })?;
        let (store, seeded_usernames, demo_accounts) = build_store(&config).await?;

        let trusted_proxies = TrustedProxies::parse(&config.server.trusted_proxies)
            .unwrap_or_default()
            .with_header(config.server.forwarded_header);
        let limits = Arc::new(
            Limits::new(&policy.rate_limits, policy.connections)
                .with_ipv6_prefix_len(config.server.ipv6_prefix_len),
        );
        limits.set_groups(policy.groups);
        let metrics = Arc::new(Metrics::new());
        limits.spawn_cleanup(LIMITER_CLEANUP_PERIOD);
        let node_id: Arc<str> = config.cluster.node_id().into();
        let redis = if config.cluster.enabled() {
            Some(Redis::connect(&config.cluster, node_id.to_string()).await?)
        } else {
            None
        };
        let mut hub = Hub::new(
            store.clone(),
            keys.clone(),
            limits.clone(),
            trusted_proxies.clone(),
            metrics.clone(),
            policy.calls.clone(),
            jitsi,
        );
        if let Some(redis) = &redis {
            // One call state for the cluster, in Redis (see cluster::call_state).
            hub = hub.with_call_store(CallStore::redis(redis.clone(), policy.calls.clone()));
            // The lease first: presence and caps are written under it.
            let admission = crate::cluster::admission::Admission::start(
                redis.clone(),
                &config.cluster,
                &policy.rate_limits,
                &limits,
            )
            .await?;
            hub.set_cluster(admission);
        }
        let hub = Arc::new(hub);
        let sio = &config.socketio;
        let mut builder = SocketIo::builder()
            .with_state(hub.clone())
            .req_path(sio.path.clone())
            .ping_interval(Duration::from_secs(sio.ping_interval_secs))
            .ping_timeout(Duration::from_secs(sio.ping_timeout_secs))
            .connect_timeout(Duration::from_secs(sio.connect_timeout_secs))
            .max_payload(sio.max_payload_bytes)
            .ws_max_message_size(sio.ws_max_message_bytes)
            .ws_max_frame_size(sio.ws_max_frame_bytes)
            .ws_read_buffer_size(sio.ws_read_buffer_bytes)
            .max_buffer_size(sio.max_buffer_size);
        builder = match transports(&sio.transports).as_slice() {
            [TransportType::Websocket] => builder.transports([TransportType::Websocket]),
            [TransportType::Polling] => builder.transports([TransportType::Polling]),
            _ => builder.transports([TransportType::Polling, TransportType::Websocket]),
        };
        let (sio_layer, io) = if let Some(redis) = &redis {
            let adapter_prefix = format!("{}:sio", redis.prefix());
            let adapter = socketioxide_redis::RedisAdapterConfig::new()
                .with_prefix(adapter_prefix.clone())
                .with_request_timeout(Duration::from_millis(
                    config.cluster.adapter_request_timeout_ms,
                ))
                .with_stream_buffer(config.cluster.stream_buffer);
            let subscriber = Redis::subscriber(&config.cluster)?;
            let ctr = socketioxide_redis::RedisAdapterCtr::new_with_fred_config(
                subscriber.clone(),
                adapter,
            )
            .await
            .map_err(|e| {
                crate::cluster::ConnectError::Unreachable(
                    "Redis (adapter)".into(),
                    e.kind().to_str().into(),
                )
            })?;
            let (layer, io) = builder.with_adapter::<ClusterAdapter>(ctr).build_layer();
            // Commits publish the adapter's broadcasts of their events for
            // other nodes themselves (see cluster::relay).
            hub.calls().relay_through(crate::cluster::relay::Relay::new(
                io.config().server_id,
                &adapter_prefix,
            ));
            signaling::attach_cluster(&io).await.map_err(|_| {
                crate::cluster::ConnectError::Unreachable(
                    "Redis (adapter)".into(),
                    "subscriptions refused".into(),
                )
            })?;
            if let Some(cluster) = hub.cluster() {
                cluster.set_hooks(signaling::liveness::NodeHooks::new(io.clone(), &hub));
            }
            // From now on every reconnect resubscribes the adapter's channels.
            if let Some(cluster) = hub.cluster() {
                crate::cluster::resubscribe_on_reconnect(subscriber, cluster.subscribed.clone());
            }
            tracing::info!(node = %node_id, "cluster mode: Redis adapter attached");
            if sio.transports.contains(&Transport::Polling) {
                tracing::warn!(
                    "cluster mode with long-polling on: the load balancer must keep each client on one node (sticky sessions), or set socketio.transports = [\"websocket\"]"
                );
            }
            (tower::util::Either::Left(layer), Io::Cluster(io))
        } else {
            let (layer, io) = builder.build_layer();
            signaling::attach(&io);
            (tower::util::Either::Right(layer), Io::Local(io))
        };
        io.spawn_recheck(
            store.clone(),
            Duration::from_secs(config.auth.session_recheck_secs),
        );
        if redis.is_some() {
            // Cluster timers: this node claims and fires its share of p:timers,
            // with cluster presence (one Redis round trip per timer user).
            let online = hub
                .cluster()
                .map(|c| signaling::liveness::presence(c.presence.clone()));
            drop(io.spawn_cluster_timers(
                &hub,
                Duration::from_millis(config.cluster.timer_poll_ms),
                online,
            ));
        }
        let node = NodeInfo { id: node_id, redis };

        let api = ApiState {
            store: store.clone(),
            keys: keys.clone(),
            hasher,
            io: io.clone(),
            registration_open: config.auth.registration_open,
            limits: limits.clone(),
            trusted_proxies: trusted_proxies.clone(),
            metrics,
            hub: hub.clone(),
            node: node.clone(),
        };
        let gate = http::transport::TransportGate::new(
            &sio.path,
            http::origin::AllowedOrigins::new(&config.server.allowed_origins),
            trusted_proxies,
            limits,
            config.server.max_socketio_header_bytes,
        );
        let mut router = http::api_router(api, config.server.body_limit_bytes);
        let demo_routes = demo_routes(&config, demo_accounts);
        let demo = demo_routes.is_some();
        if let Some(routes) = demo_routes {
            router = router.merge(routes);
        }
        let router = router
            .layer(sio_layer)
            .layer(axum::middleware::from_fn_with_state(
                gate,
                http::transport::gate,
            ))
            .layer(http::cors(&config.server.allowed_origins))
            .layer(http::trace_layer());

        let tls = TlsReloader::from_config(&config.server.tls).await?;
        let addr = config.server.listen;
        let listener = bind(addr).map_err(|source| BuildError::Bind { addr, source })?;
        Ok(Self {
            listener,
            router,
            io,
            node,
            store,
            keys,
            hub,
            seeded_usernames,
            demo,
            shutdown_grace: Duration::from_secs(config.server.shutdown_grace_secs),
            header_read_timeout: Duration::from_secs(config.server.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(config.server.idle_timeout_secs),
            http2_keep_alive: (
                Duration::from_secs(config.server.http2_keep_alive_interval_secs),
                Duration::from_secs(config.server.http2_keep_alive_timeout_secs),
            ),
            max_connections: config.server.max_connections,
            tls,
        })
    }

    /// The bound address (the real port when the config asked for port 0).
    ///
    /// # Errors
    /// When the OS cannot report it.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The directory, for tests and tools that arrange data.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The token keys, for tests that mint tokens.
    pub fn keys(&self) -> &Arc<TokenKeys> {
        &self.keys
    }

    /// The signaling hub (call registry), for tests that inspect it.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The Socket.IO server.
    pub fn io(&self) -> &Io {
        &self.io
    }

    /// This node's id, and Redis in cluster mode.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Usernames loaded from the seed file.
    pub fn seeded_usernames(&self) -> &[String] {
        &self.seeded_usernames
    }

    /// Whether `/demo/` is served (`server.demo`).
    pub fn serves_demo(&self) -> bool {
        self.demo
    }

    /// The TLS certificate handle when `[server.tls]` is set: its
    /// [`TlsReloader::reload`] is what SIGHUP does, for tests and tools.
    pub fn tls_reloader(&self) -> Option<&TlsReloader> {
        self.tls.as_ref()
    }

    /// Serves (HTTPS/WSS when `[server.tls]` is set) until `shutdown`
    /// resolves; then stops accepting, closes every socket (the shutdown hook
    /// `on_shutdown` below) and waits at most `server.shutdown_grace_secs` for
    /// in-flight requests. With TLS, SIGHUP reloads the certificate.
    ///
    /// # Errors
    /// When the server fails (accept errors are logged and retried).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let settings = serve::Settings {
            header_read_timeout: self.header_read_timeout,
            shutdown_grace: self.shutdown_grace,
            idle_timeout: self.idle_timeout,
            http2_keep_alive_interval: self.http2_keep_alive.0,
            http2_keep_alive_timeout: self.http2_keep_alive.1,
            max_connections: self.max_connections,
            tls: self.tls,
        };
        serve::serve(
            self.listener,
            self.router,
            settings,
            shutdown,
            on_shutdown(self.io, self.hub.cluster().cloned()),
        )
        .await
    }
}

/// What Socket.IO clients get when the server stops: `serverShutdown`, then
/// the close. It runs once the listener is closed, within
/// `server.shutdown_grace_secs`.
async fn on_shutdown(io: Io, cluster: Option<crate::cluster::admission::Admission>) {
    io.shutdown().await;
    // Cluster mode: what this node held is released now, its users reported
    // offline while its lease still holds, then the lease goes (the sockets'
    // own disconnect handlers may still be running: both are idempotent).
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
}

/// Listen backlog: a burst of connects (a reconnect storm after a restart)
/// must not overflow the kernel's queue, whose default here is 128.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with SO_REUSEADDR and a deep backlog.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Re-reads the policy (what SIGHUP does): a valid file replaces the limits
/// and call rules in force at once; an invalid one is refused with every
/// problem logged, and the old policy stays.
///
/// # Errors
/// The problems of an invalid policy.
pub fn reload_policy(hub: &Hub, path: Option<PathBuf>) -> Result<(), Problems> {
    match load_policy(path) {
        Ok(policy) => {
            hub.apply_policy(&policy);
            tracing::info!("policy reloaded");
            Ok(())
        }
        Err(problems) => {
            for p in &problems.0 {
                tracing::error!(source = p.source.as_deref().unwrap_or("built-in policy"), key = %p.key, problem = %p.problem, "policy reload refused; keeping the old policy");
            }
            Err(problems)
        }
    }
}

/// Where the policy is read from when `--policy` is not given (relative to
/// the working directory; the built-in copy is used when it is not there).
pub const DEFAULT_POLICY_PATH: &str = "policies/default.toml";

/// The policy named by `--policy`, or the built-in one when no file was named
/// and `policies/default.toml` is not where the server runs.
///
/// # Errors
/// Every problem in the file.
pub fn load_policy(path: Option<PathBuf>) -> Result<Policy, Problems> {
    match path {
        Some(p) => Policy::load(&p),
        None => {
            let default = PathBuf::from(DEFAULT_POLICY_PATH);
            if default.is_file() {
                Policy::load(&default)
            } else {
                Policy::builtin()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::config::{DemoSwitch, Overrides};
    use crate::store::seed::Seed;

    fn config(environment: Environment, demo: DemoSwitch) -> Config {
        let mut config = Config::load_from(None, &Overrides::default(), &[]).expect("defaults");
        config.environment = environment;
        config.server.demo = demo;
        config
    }

    fn accounts() -> Vec<DemoAccount> {
        let seed = Seed::parse(
            r#"{"demo":true,"users":[{"id":"u1","username":"alice","displayName":"Alice",
                "password":"alice-demo-pass"}]}"#,
        )
        .expect("seed");
        DemoAccount::from_seed(&seed)
    }

    async fn status(router: &Router, path: &str) -> StatusCode {
        let request = Request::get(path).body(Body::empty()).expect("request");
        router
            .clone()
            .oneshot(request)
            .await
            .expect("answer")
            .status()
    }

    #[test]
    fn production_serves_no_demo_page_unless_it_is_turned_on() {
        assert!(
            demo_routes(
                &config(Environment::Production, DemoSwitch::Auto),
                accounts()
            )
            .is_none()
        );
        assert!(
            demo_routes(
                &config(Environment::Production, DemoSwitch::Set(false)),
                accounts()
            )
            .is_none()
        );
        assert!(
            demo_routes(
                &config(Environment::Development, DemoSwitch::Set(false)),
                accounts()
            )
            .is_none()
        );
        assert!(
            demo_routes(
                &config(Environment::Development, DemoSwitch::Auto),
                accounts()
            )
            .is_some()
        );
    }

    #[tokio::test]
    async fn demo_accounts_are_never_offered_in_production_even_with_the_page_on() {
        let prod = demo_routes(
            &config(Environment::Production, DemoSwitch::Set(true)),
            accounts(),
        )
        .expect("turned on explicitly");
        assert_eq!(status(&prod, "/demo/").await, StatusCode::OK);
        assert_eq!(
            status(&prod, "/demo/accounts.json").await,
            StatusCode::NOT_FOUND
        );

        let dev = demo_routes(
            &config(Environment::Development, DemoSwitch::Auto),
            accounts(),
        )
        .expect("on in development");
        assert_eq!(status(&dev, "/demo/accounts.json").await, StatusCode::OK);
    }
}
