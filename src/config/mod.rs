//! The one typed configuration, loaded once at start-up.
//!
//! Layers, later wins: the embedded, commented `defaults.toml`; the file given
//! with `--config`; environment variables `CALLGATE__SECTION__KEY` (secrets are
//! read verbatim, also from their short names `CALLGATE_JWT_SECRET`,
//! `CALLGATE_EXTERNAL_JWT_SECRET` and `CALLGATE_MONGODB_URI`); command-line
//! flags. Every problem of every layer, and of [`Config::validate`], is
//! reported at once, each naming its key and where it was set (see [`layers`]).

pub mod layers;
pub mod rules;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::value::Value;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use layers::{Layers, Resolved};
pub use rules::Rules;

/// The defaults, embedded so the binary runs with no file at all.
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");

/// Environment variable holding the HMAC secret for tokens callgate issues.
pub const ENV_JWT_SECRET: &str = "CALLGATE_JWT_SECRET";
/// Environment variable holding the MongoDB connection string.
pub const ENV_MONGODB_URI: &str = "CALLGATE_MONGODB_URI";
/// Environment variable holding the external issuer's HMAC secret.
pub const ENV_EXTERNAL_JWT_SECRET: &str = "CALLGATE_EXTERNAL_JWT_SECRET";
/// Environment variable holding the Jitsi HS256 app secret.
pub const ENV_JITSI_APP_SECRET: &str = "CALLGATE_JITSI_APP_SECRET";
/// Environment variable holding the Redis URL of cluster mode.
pub const ENV_REDIS_URL: &str = "CALLGATE_REDIS_URL";
/// Prefix of the environment variables that set any key.
pub const ENV_PREFIX: &str = "CALLGATE__";

/// Keys whose values are secrets: read verbatim as strings from any
/// environment variable, never printed in a problem, redacted by `--print`.
pub const SECRET_KEYS: &[&str] = &[
    "auth.jwt_secret",
    "auth.external.secret",
    "store.mongodb.uri",
    "jitsi.app_secret",
    "cluster.redis_url",
];

/// The short environment names of the secrets (they win over `CALLGATE__…`).
pub const SECRET_ENV: &[(&str, &str)] = &[
    (ENV_JWT_SECRET, "auth.jwt_secret"),
    (ENV_EXTERNAL_JWT_SECRET, "auth.external.secret"),
    (ENV_MONGODB_URI, "store.mongodb.uri"),
    (ENV_JITSI_APP_SECRET, "jitsi.app_secret"),
    (ENV_REDIS_URL, "cluster.redis_url"),
];

/// Everything callgate is configured with. See `defaults.toml` for each key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Development or production.
    pub environment: Environment,
    /// Listener and HTTP settings.
    pub server: ServerConfig,
    /// Logging.
    pub log: LogConfig,
    /// The directory of users and groups.
    pub store: StoreConfig,
    /// Tokens.
    pub auth: AuthConfig,
    /// Password hashing.
    pub password: PasswordConfig,
    /// Socket.IO transport limits.
    pub socketio: SocketIoConfig,
    /// Jitsi Meet: the domain clients open and the room tokens callgate mints.
    pub jitsi: JitsiConfig,
    /// Several nodes on Redis (cluster mode), or one process.
    pub cluster: ClusterConfig,
}

/// `[cluster]`: several nodes sharing call state, timers, presence and
/// limits through Redis. An empty `redis_url` means one process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Redis URL (a secret: it may hold a password); empty means one process.
    pub redis_url: SecretString,
    /// This node's id; empty means random at start (see [`ClusterConfig::node_id`]).
    pub node_id: String,
    /// Prefix of every key and channel.
    pub key_prefix: String,
    /// Bound on each Redis command.
    pub redis_timeout_ms: u64,
    /// Liveness lease renewal period.
    pub heartbeat_ms: u64,
    /// Age at which a node's lease is dead.
    pub node_timeout_ms: u64,
    /// Timer poll period.
    pub timer_poll_ms: u64,
    /// Bound on adapter requests to every node.
    pub adapter_request_timeout_ms: u64,
    /// Adapter messages buffered per namespace.
    pub stream_buffer: usize,
}

impl ClusterConfig {
    /// Whether cluster mode is on (a Redis URL is set).
    pub fn enabled(&self) -> bool {
        !self.redis_url.expose_secret().trim().is_empty()
    }

    /// This node's id: the configured one, else a random one (made once per call: keep the result).
    pub fn node_id(&self) -> String {
        if self.node_id.is_empty() {
            format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
        } else {
            self.node_id.clone()
        }
    }

    fn check(&self, r: &mut Rules) {
        let url = self.redis_url.expose_secret().trim();
        if !(url.is_empty() || url.starts_with("redis://") || url.starts_with("rediss://")) {
            // Never the value: it may hold a password.
            r.fail(
                "cluster.redis_url",
                "is not a redis:// or rediss:// URL",
                "write redis://host:6379 (rediss:// for TLS), or leave it empty for one process",
            );
        }
        if !self.node_id.is_empty()
            && (self.node_id.len() > 64
                || !self
                    .node_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            r.fail(
                "cluster.node_id",
                "must be 1 to 64 letters, digits, '-', '_' or '.'",
                "leave it empty for a random id, or name the node e.g. \"callgate-1\"",
            );
        }
        if self.key_prefix.is_empty()
            || self.key_prefix.len() > 64
            || !self
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        {
            r.fail(
                "cluster.key_prefix",
                "must be 1 to 64 letters, digits, '-', '_', '.' or ':'",
                "use the default \"callgate\", or one name per deployment sharing a Redis",
            );
        }
        r.range(
            "cluster.redis_timeout_ms",
            self.redis_timeout_ms,
            20,
            5000,
            "below 20 ms a healthy Redis under load times out, above 5 s a Redis outage hangs every event",
        );
        r.range(
            "cluster.heartbeat_ms",
            self.heartbeat_ms,
            100,
            10_000,
            "faster floods Redis with lease renewals, slower makes a dead node's sockets linger",
        );
        r.range(
            "cluster.node_timeout_ms",
            self.node_timeout_ms,
            500,
            60_000,
            "a shorter lease kills nodes on a Redis hiccup, a longer one keeps a dead node's slots and calls for minutes",
        );
        if self.node_timeout_ms < 3 * self.heartbeat_ms {
            r.fail(
                "cluster.node_timeout_ms",
                &format!(
                    "is {} ms, less than three heartbeats (cluster.heartbeat_ms = {}): one late renewal would declare a live node dead",
                    self.node_timeout_ms, self.heartbeat_ms
                ),
                "make it at least three times cluster.heartbeat_ms (defaults 5000 and 1000)",
            );
        }
        r.range(
            "cluster.timer_poll_ms",
            self.timer_poll_ms,
            10,
            5000,
            "a timer fires up to this late; faster than 10 ms only costs Redis commands",
        );
        r.range(
            "cluster.adapter_request_timeout_ms",
            self.adapter_request_timeout_ms,
            50,
            30_000,
            WHY_TIMEOUT,
        );
        r.range(
            "cluster.stream_buffer",
            self.stream_buffer,
            16,
            1 << 20,
            "messages from other nodes dropped past this buffer; a huge one holds memory in a stall",
        );
    }
}

/// Development is forgiving (random secret, embedded store); production is strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Local use: a missing JWT secret is generated at each start.
    Development,
    /// Internet-facing: refuses weak or missing secrets and the embedded store.
    Production,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest HTTP request body.
    pub body_limit_bytes: usize,
    /// Browser origins allowed (CORS; `scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    /// Grace period for in-flight work at shutdown.
    pub shutdown_grace_secs: u64,
    /// Proxies whose forwarding header is believed (CIDRs or addresses).
    pub trusted_proxies: Vec<String>,
    /// The one forwarding header believed from a trusted proxy.
    pub forwarded_header: ForwardedHeader,
    /// Leading bits of an IPv6 address that per-IP limits key by.
    pub ipv6_prefix_len: u8,
    /// A connection with no traffic either way for this long is closed.
    pub idle_timeout_secs: u64,
    /// HTTP/2 keep-alive PING interval.
    pub http2_keep_alive_interval_secs: u64,
    /// HTTP/2 keep-alive PING answer timeout.
    pub http2_keep_alive_timeout_secs: u64,
    /// Concurrent TCP connections.
    pub max_connections: usize,
    /// Largest request head of a Socket.IO transport request (else 431).
    pub max_socketio_header_bytes: usize,
    /// Time a client has to send a request's headers; also bounds a new
    /// connection's first request (and the TLS handshake).
    pub header_read_timeout_secs: u64,
    /// Built-in TLS (both files, or neither for plain HTTP).
    pub tls: TlsConfig,
    /// Whether `/demo/` is served.
    pub demo: DemoSwitch,
}

/// `server.demo`: `true`, `false`, or `"auto"` (on in development only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoSwitch {
    /// On in development, off in production.
    Auto,
    /// Explicitly on (`true`) or off (`false`).
    Set(bool),
}

impl DemoSwitch {
    /// Whether the demo page is served in `environment`.
    pub fn enabled(self, environment: Environment) -> bool {
        match self {
            Self::Auto => environment == Environment::Development,
            Self::Set(on) => on,
        }
    }
}

impl<'de> Deserialize<'de> for DemoSwitch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DemoSwitch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or \"auto\"")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<DemoSwitch, E> {
                Ok(DemoSwitch::Set(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DemoSwitch, E> {
                match v {
                    "auto" => Ok(DemoSwitch::Auto),
                    "true" => Ok(DemoSwitch::Set(true)),
                    "false" => Ok(DemoSwitch::Set(false)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `server.forwarded_header`: which header a trusted proxy overwrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx, HAProxy, most load balancers).
    XForwardedFor,
    /// `Forwarded` (RFC 7239).
    Forwarded,
}

/// `[server.tls]`: built-in TLS with rustls. Both empty means plain HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// A `tracing` filter (`RUST_LOG` overrides it).
    pub filter: String,
    /// Colour codes in text logs.
    pub color: LogColor,
}

/// When text logs carry ANSI colour codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogColor {
    /// Only when the log goes to a terminal (and `NO_COLOR` is not set).
    Auto,
    /// Always, even to a file or a pipe.
    Always,
    /// Never.
    Never,
}

impl LogColor {
    /// Whether to colour, given whether the log goes to a terminal.
    pub fn enabled(self, terminal: bool) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Which backend.
    pub kind: StoreKind,
    /// Seed file for the embedded store (empty: none).
    pub seed: PathBuf,
    /// MongoDB settings, used when `kind = "mongodb"`.
    pub mongodb: MongoConfig,
}

/// The directory backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In memory, seeded from a JSON file.
    Embedded,
    /// MongoDB through the official driver.
    Mongodb,
}

/// `[store.mongodb]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct MongoConfig {
    /// Connection string (a secret: it may hold credentials).
    pub uri: SecretString,
    pub database: String,
    pub users_collection: String,
    pub groups_collection: String,
    pub username_field: String,
    pub display_name_field: String,
    pub password_hash_field: String,
    pub group_name_field: String,
    pub members_field: String,
    pub owner_field: String,
    /// Create the unique username index at start-up.
    pub create_indexes: bool,
    /// Start-up ping timeout.
    pub connect_timeout_secs: u64,
    /// Bound on each directory operation while serving.
    pub query_timeout_ms: u64,
    /// Bound on the `/readyz` ping.
    pub readyz_timeout_ms: u64,
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// HMAC secret for HS256.
    pub jwt_secret: SecretString,
    /// Signing algorithm for tokens callgate issues.
    pub algorithm: IssuerAlgorithm,
    /// Ed25519 private key (PEM) for EdDSA.
    pub ed25519_private_key_file: PathBuf,
    /// Ed25519 public key (PEM) for EdDSA.
    pub ed25519_public_key_file: PathBuf,
    /// `iss` of issued tokens, required on verification.
    pub issuer: String,
    /// `aud` of issued tokens, required on verification.
    pub audience: String,
    /// Lifetime of issued tokens.
    pub token_ttl_secs: u64,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Longest token accepted.
    pub max_token_bytes: usize,
    /// Whether registration is open.
    pub registration_open: bool,
    /// How often live sockets are checked against the directory.
    pub session_recheck_secs: u64,
    /// A second, external token issuer.
    pub external: ExternalIssuerConfig,
}

/// Algorithms callgate signs its own tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum IssuerAlgorithm {
    /// HMAC-SHA256 with `auth.jwt_secret`.
    HS256,
    /// Ed25519 with the configured key files.
    EdDSA,
}

/// `[auth.external]`: tokens minted by the chat app's existing backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalIssuerConfig {
    /// Whether external tokens are accepted.
    pub enabled: bool,
    /// Their algorithm, e.g. `HS256` or `RS256`.
    pub algorithm: String,
    /// HMAC secret (HS*).
    pub secret: SecretString,
    /// PEM public key (RS*, ES*, EdDSA).
    pub public_key_file: PathBuf,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Claim carrying the user id.
    pub user_id_claim: String,
}

/// `[password]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct PasswordConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub max_memory_kib: u32,
    pub max_iterations: u32,
    pub max_parallelism: u32,
    /// Concurrent hashing jobs (0: cores − 1, at least 1).
    pub max_concurrent: usize,
    /// Scheduling priority of the hashing threads.
    pub worker_priority: WorkerPriority,
    /// Wait for a hashing slot before answering `server_busy`.
    pub queue_timeout_ms: u64,
}

/// How the password hashing threads are scheduled against everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerPriority {
    /// `SCHED_IDLE`: run only on CPU time nothing else wants; a waking
    /// signaling thread preempts a hash at once.
    Idle,
    /// Nice 19: the lowest ordinary priority.
    Low,
    /// The server's own priority.
    Normal,
}

/// `[socketio]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct SocketIoConfig {
    /// The transport path, without a trailing slash.
    pub path: String,
    pub ping_interval_secs: u64,
    pub ping_timeout_secs: u64,
    pub connect_timeout_secs: u64,
    pub max_payload_bytes: u64,
    pub ws_max_message_bytes: usize,
    pub ws_max_frame_bytes: usize,
    /// Initial websocket read buffer per socket (it grows for larger messages).
    pub ws_read_buffer_bytes: usize,
    pub max_buffer_size: usize,
    pub transports: Vec<Transport>,
}

/// An Engine.IO transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

/// `[jitsi]`: the Jitsi Meet deployment calls open, and its room tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JitsiConfig {
    /// Host clients open (`meet.example.com`); empty means none is given.
    pub domain: String,
    /// Which room tokens callgate mints.
    pub token: JitsiTokenMode,
    /// `iss` (HS256, RS256) or the JaaS AppID (`vpaas-magic-cookie-...`).
    pub app_id: String,
    /// HS256 secret shared with Prosody (a secret: never logged).
    pub app_secret: SecretString,
    /// `aud`.
    pub audience: String,
    /// `sub`: the XMPP domain, the tenant, or `*` (JaaS: the AppID).
    pub subject: String,
    /// PEM RSA private key (RS256, JaaS).
    pub private_key_file: PathBuf,
    /// `kid` of the key (RS256, JaaS).
    pub kid: String,
    /// Lifetime of a room token.
    pub token_ttl_secs: u64,
    /// Who is a moderator in the meeting.
    pub moderator: JitsiModerator,
}

impl JitsiConfig {
    /// The domain, if one is configured.
    pub fn domain(&self) -> Option<&str> {
        (!self.domain.is_empty()).then_some(self.domain.as_str())
    }
}

/// Which Jitsi room tokens are minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JitsiTokenMode {
    /// None: the room is open to anyone who knows its name.
    Off,
    /// HS256 with `app_secret` (Prosody `app_secret`).
    Hs256,
    /// RS256 with `private_key_file`; Prosody fetches the public key (ASAP).
    Rs256,
    /// 8x8 Jitsi as a Service: RS256, `iss` "chat", `sub` the AppID.
    Jaas,
}

/// Who gets `context.user.moderator: true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JitsiModerator {
    /// The caller of the call.
    Caller,
    /// The group's owner in group calls; the caller in direct calls.
    GroupOwner,
    /// Every participant.
    Everyone,
    /// Nobody.
    None,
}

/// Values given on the command line; they override every other layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--seed`.
    pub seed: Option<PathBuf>,
}

/// A configuration problem: which key, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `auth.jwt_secret`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
    /// Where the key was set: a file, an environment variable or a flag
    /// (`None`: the built-in defaults).
    pub source: Option<String>,
}

impl Problem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
            source: None,
        }
    }

    /// The same problem, naming where its key was set.
    #[must_use]
    pub fn from_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }
}

/// `[source: ]key: problem; fix` (a whole-file problem has no key).
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(source) = &self.source {
            write!(f, "{source}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}; {}", self.problem, self.fix)
    }
}

/// Every problem found, printed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Adds the problems of `more` whose key has no problem yet: two checks
    /// of the same key (say, validation and key loading) report it once.
    pub fn extend_new(&mut self, more: impl IntoIterator<Item = Problem>) {
        for p in more {
            if !self.0.iter().any(|q| q.key == p.key) {
                self.0.push(p);
            }
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Loads defaults, then `file`, then the environment, then `overrides`,
    /// and validates the result.
    ///
    /// # Errors
    /// Every problem found in any layer and by [`Config::validate`], each
    /// once, naming its key and the layer that set it.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, Problems> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, overrides, &env)
    }

    /// [`Config::load`] with the environment given as a list (for tests).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_from(
        file: Option<&Path>,
        overrides: &Overrides,
        env: &[(String, String)],
    ) -> Result<Self, Problems> {
        let resolved = Self::resolve(file, overrides, env);
        match resolved.value {
            Some(config) if resolved.problems.is_empty() => Ok(config),
            _ => Err(Problems(resolved.problems)),
        }
    }

    /// Every layer merged and checked: the configuration (with defaults in
    /// place of bad values), every problem, and the effective settings with
    /// secrets redacted (`check-config --print`).
    pub fn resolve(
        file: Option<&Path>,
        overrides: &Overrides,
        env: &[(String, String)],
    ) -> Resolved<Self> {
        let mut layers = Layers::new(DEFAULTS_TOML, SECRET_KEYS);
        if let Some(path) = file {
            layers.file(path, "--config");
        }
        for (name, value) in env {
            if let Some(path) = name.strip_prefix(ENV_PREFIX)
                && !path.is_empty()
            {
                let key = path.to_ascii_lowercase().replace("__", ".");
                layers.set_env(&key, value, name);
            }
        }
        for (var, key) in SECRET_ENV {
            if let Some((_, value)) = env.iter().find(|(k, _)| k == var) {
                layers.set_env(key, value, var);
            }
        }
        if let Some(listen) = overrides.listen {
            layers.set("server.listen", Value::from(listen.to_string()), "--listen");
        }
        if let Some(seed) = &overrides.seed {
            layers.set(
                "store.seed",
                Value::from(seed.display().to_string()),
                "--seed",
            );
        }
        let mut resolved = layers.extract::<Self>();
        if let Some(Err(more)) = resolved.value.as_ref().map(Self::validate) {
            let mut more = more.0;
            resolved.attribute(&mut more);
            let mut problems = Problems(std::mem::take(&mut resolved.problems));
            problems.extend_new(more);
            resolved.problems = problems.0;
        }
        resolved
    }

    /// Checks every rule that types alone cannot express.
    ///
    /// # Errors
    /// Returns every problem found, not only the first.
    pub fn validate(&self) -> Result<(), Problems> {
        self.rules().finish()
    }

    /// Runs every rule; [`Rules::ranges`] then lists the range of each number.
    pub fn rules(&self) -> Rules {
        let mut r = Rules::new(DEFAULTS_TOML);
        let prod = self.environment == Environment::Production;
        self.server.check(&mut r, prod);
        self.store.check(&mut r, prod);
        self.auth.check(&mut r, prod);
        self.password.check(&mut r);
        self.socketio.check(&mut r);
        self.jitsi.check(&mut r, prod);
        self.cluster.check(&mut r);
        if self.server.idle_timeout_secs <= self.socketio.ping_interval_secs {
            r.fail(
                "server.idle_timeout_secs",
                &format!(
                    "is {}, not more than socketio.ping_interval_secs ({}): live sockets would be cut between pings",
                    self.server.idle_timeout_secs, self.socketio.ping_interval_secs
                ),
                "make it longer than the ping interval (default 60)",
            );
        }
        r
    }
}

const WHY_TIMEOUT: &str = "0 would time out at once, a long wait holds resources";

impl ServerConfig {
    fn check(&self, r: &mut Rules, prod: bool) {
        r.range(
            "server.body_limit_bytes",
            self.body_limit_bytes,
            1024,
            1 << 20,
            "request bodies are small JSON, more lets one client make the server buffer megabytes",
        );
        r.range(
            "server.shutdown_grace_secs",
            self.shutdown_grace_secs,
            0,
            300,
            "0 closes at once, and past 5 minutes an orchestrator kills the process anyway",
        );
        r.range(
            "server.header_read_timeout_secs",
            self.header_read_timeout_secs,
            1,
            300,
            WHY_TIMEOUT,
        );
        r.range(
            "server.ipv6_prefix_len",
            self.ipv6_prefix_len,
            0,
            128,
            "leading bits that key an IPv6 client, 64 is one subscriber's network",
        );
        r.range(
            "server.idle_timeout_secs",
            self.idle_timeout_secs,
            1,
            3600,
            WHY_TIMEOUT,
        );
        r.range(
            "server.http2_keep_alive_interval_secs",
            self.http2_keep_alive_interval_secs,
            1,
            3600,
            "0 would never ping, a dead HTTP/2 peer would hold its connection",
        );
        r.range(
            "server.http2_keep_alive_timeout_secs",
            self.http2_keep_alive_timeout_secs,
            1,
            600,
            WHY_TIMEOUT,
        );
        r.range(
            "server.max_connections",
            self.max_connections,
            1,
            10_000_000,
            "0 would refuse every connection, and each one holds a file descriptor",
        );
        r.range(
            "server.max_socketio_header_bytes",
            self.max_socketio_header_bytes,
            1024,
            65_536,
            "browsers send 1 to 2 KiB, and every session keeps what it needs of the head",
        );
        if crate::http::client_ip::TrustedProxies::parse(&self.trusted_proxies).is_err() {
            r.fail(
                "server.trusted_proxies",
                "holds an entry that is not a CIDR or an IP address",
                "write entries like \"10.0.0.0/8\" or \"192.0.2.10\"",
            );
        }
        for origin in &self.allowed_origins {
            if origin == "*" {
                if prod {
                    r.fail(
                        "server.allowed_origins",
                        "contains \"*\" in production",
                        "list the exact origins of your frontend",
                    );
                }
            } else if !is_exact_origin(origin) {
                r.fail(
                    "server.allowed_origins",
                    "holds a value that is not scheme://host[:port]",
                    "write origins like https://chat.example.com",
                );
            }
        }
        let tls = &self.tls;
        let both = "set both PEM files for TLS, or neither for plain HTTP";
        match (
            tls.cert_file.as_os_str().is_empty(),
            tls.key_file.as_os_str().is_empty(),
        ) {
            (true, true) => {}
            (false, true) => r.fail(
                "server.tls.key_file",
                "is empty while server.tls.cert_file is set",
                both,
            ),
            (true, false) => r.fail(
                "server.tls.cert_file",
                "is empty while server.tls.key_file is set",
                both,
            ),
            (false, false) => {
                r.file(
                    "server.tls.cert_file",
                    &tls.cert_file,
                    "give a PEM certificate chain (see certs/README.md)",
                );
                r.file(
                    "server.tls.key_file",
                    &tls.key_file,
                    "give the certificate's PEM private key (see certs/README.md)",
                );
            }
        }
    }
}

impl StoreConfig {
    fn check(&self, r: &mut Rules, prod: bool) {
        match self.kind {
            StoreKind::Embedded if prod => r.fail(
                "store.kind",
                "is \"embedded\" in production (users would vanish at restart)",
                "use \"mongodb\" and set CALLGATE_MONGODB_URI",
            ),
            StoreKind::Mongodb if self.mongodb.uri.expose_secret().is_empty() => {
                r.fail("store.mongodb.uri", "is empty", "set CALLGATE_MONGODB_URI")
            }
            _ => {}
        }
        if self.kind == StoreKind::Embedded && !self.seed.as_os_str().is_empty() {
            r.file(
                "store.seed",
                &self.seed,
                "give a JSON seed file (see demo/seed.json)",
            );
        }
        let m = &self.mongodb;
        for (key, value) in [
            ("store.mongodb.database", &m.database),
            ("store.mongodb.users_collection", &m.users_collection),
            ("store.mongodb.groups_collection", &m.groups_collection),
            ("store.mongodb.username_field", &m.username_field),
            ("store.mongodb.display_name_field", &m.display_name_field),
            ("store.mongodb.password_hash_field", &m.password_hash_field),
            ("store.mongodb.group_name_field", &m.group_name_field),
            ("store.mongodb.members_field", &m.members_field),
            ("store.mongodb.owner_field", &m.owner_field),
        ] {
            if value.is_empty() || value.starts_with('$') || value.contains(['.', '\0']) {
                r.fail(
                    key,
                    "must be a plain, non-empty name (no leading $, no dots)",
                    "use the name used in your database",
                );
            }
        }
        r.range(
            "store.mongodb.connect_timeout_secs",
            m.connect_timeout_secs,
            1,
            60,
            WHY_TIMEOUT,
        );
        r.range(
            "store.mongodb.query_timeout_ms",
            m.query_timeout_ms,
            100,
            60_000,
            "below 100 ms a healthy database times out, above a minute a dead one holds every request",
        );
        r.range(
            "store.mongodb.readyz_timeout_ms",
            m.readyz_timeout_ms,
            100,
            60_000,
            "a load balancer's health check must get its answer before its own timeout",
        );
    }
}

/// The JWT algorithms accepted from an external issuer.
const EXTERNAL_ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA",
];

impl AuthConfig {
    fn check(&self, r: &mut Rules, prod: bool) {
        let secret_len = self.jwt_secret.expose_secret().len();
        let fix_secret = "set CALLGATE_JWT_SECRET to at least 32 random bytes";
        match self.algorithm {
            IssuerAlgorithm::HS256 if secret_len == 0 && prod => {
                r.fail("auth.jwt_secret", "is empty in production", fix_secret)
            }
            IssuerAlgorithm::HS256 if secret_len > 0 && secret_len < 32 => {
                r.fail("auth.jwt_secret", "is shorter than 32 bytes", fix_secret)
            }
            IssuerAlgorithm::HS256 => {}
            IssuerAlgorithm::EdDSA => {
                r.file(
                    "auth.ed25519_private_key_file",
                    &self.ed25519_private_key_file,
                    "give a PEM file (see certs/README.md)",
                );
                r.file(
                    "auth.ed25519_public_key_file",
                    &self.ed25519_public_key_file,
                    "give a PEM file (see certs/README.md)",
                );
            }
        }
        r.non_empty("auth.issuer", &self.issuer, "set a non-empty issuer name");
        r.non_empty("auth.audience", &self.audience, "set a non-empty audience");
        r.range(
            "auth.token_ttl_secs",
            self.token_ttl_secs,
            60,
            7 * 24 * 3600,
            "a token must outlive a login round trip, and a stolen one must not live for weeks",
        );
        r.range(
            "auth.leeway_secs",
            self.leeway_secs,
            0,
            300,
            "clock skew allowance, and minutes of it extend every token's life",
        );
        r.range(
            "auth.max_token_bytes",
            self.max_token_bytes,
            512,
            65536,
            "a real JWT is a few hundred bytes, and the cap is checked before any decoding",
        );
        r.range(
            "auth.session_recheck_secs",
            self.session_recheck_secs,
            1,
            3600,
            "how long a deleted user keeps live sockets, and each pass reads the directory",
        );
        let ext = &self.external;
        if ext.enabled {
            let hmac = ext.algorithm.starts_with("HS");
            if !EXTERNAL_ALGORITHMS.contains(&ext.algorithm.as_str()) {
                r.fail(
                    "auth.external.algorithm",
                    "is not a supported algorithm",
                    &format!("use one of {}", EXTERNAL_ALGORITHMS.join(", ")),
                );
            } else if hmac && ext.secret.expose_secret().len() < 32 {
                r.fail(
                    "auth.external.secret",
                    "is shorter than 32 bytes",
                    "set CALLGATE_EXTERNAL_JWT_SECRET to the chat backend's signing secret",
                );
            } else if !hmac {
                r.file(
                    "auth.external.public_key_file",
                    &ext.public_key_file,
                    "give the issuer's PEM public key",
                );
            }
            r.non_empty(
                "auth.external.issuer",
                &ext.issuer,
                "set the iss the chat backend puts in its tokens",
            );
            r.non_empty(
                "auth.external.audience",
                &ext.audience,
                "set the aud the chat backend puts in its tokens",
            );
            r.non_empty(
                "auth.external.user_id_claim",
                &ext.user_id_claim,
                "name the claim with the user id (sub, id, userId)",
            );
        }
    }
}

impl PasswordConfig {
    fn check(&self, r: &mut Rules) {
        let cost =
            "argon2id cost: below it hashes are cheap to crack, above it one login takes seconds";
        r.range("password.memory_kib", self.memory_kib, 8, 1 << 20, cost);
        r.range("password.iterations", self.iterations, 1, 64, cost);
        r.range("password.parallelism", self.parallelism, 1, 16, cost);
        let ceiling = "stored hashes costlier than this are refused, so a planted hash cannot stall the server";
        r.range(
            "password.max_memory_kib",
            self.max_memory_kib,
            8,
            4 << 20,
            ceiling,
        );
        r.range(
            "password.max_iterations",
            self.max_iterations,
            1,
            256,
            ceiling,
        );
        r.range(
            "password.max_parallelism",
            self.max_parallelism,
            1,
            64,
            ceiling,
        );
        r.range(
            "password.max_concurrent",
            self.max_concurrent,
            0,
            256,
            "hashing threads, 0 means one fewer than the cores",
        );
        r.range(
            "password.queue_timeout_ms",
            self.queue_timeout_ms,
            1,
            60_000,
            WHY_TIMEOUT,
        );
        if self.memory_kib < 8 * self.parallelism {
            r.fail(
                "password.memory_kib",
                "is below 8 KiB per lane (8 × password.parallelism)",
                "raise memory_kib or lower parallelism",
            );
        }
        for (key, value, param, ceiling) in [
            (
                "password.max_memory_kib",
                self.max_memory_kib,
                "password.memory_kib",
                self.memory_kib,
            ),
            (
                "password.max_iterations",
                self.max_iterations,
                "password.iterations",
                self.iterations,
            ),
            (
                "password.max_parallelism",
                self.max_parallelism,
                "password.parallelism",
                self.parallelism,
            ),
        ] {
            if value < ceiling {
                r.fail(
                    key,
                    &format!("is {value}, below {param} ({ceiling})"),
                    &format!("raise it to at least {ceiling}"),
                );
            }
        }
    }
}

impl SocketIoConfig {
    fn check(&self, r: &mut Rules) {
        let heartbeat = "a client silent for interval + timeout is dropped, 0 would drop everyone";
        r.range(
            "socketio.ping_interval_secs",
            self.ping_interval_secs,
            1,
            300,
            heartbeat,
        );
        r.range(
            "socketio.ping_timeout_secs",
            self.ping_timeout_secs,
            1,
            300,
            heartbeat,
        );
        r.range(
            "socketio.connect_timeout_secs",
            self.connect_timeout_secs,
            1,
            60,
            WHY_TIMEOUT,
        );
        let size = "signaling messages are a few hundred bytes, larger limits let one client hold megabytes";
        r.range(
            "socketio.max_payload_bytes",
            self.max_payload_bytes,
            1024,
            16 << 20,
            size,
        );
        r.range(
            "socketio.ws_max_message_bytes",
            self.ws_max_message_bytes,
            1024,
            16 << 20,
            size,
        );
        r.range(
            "socketio.ws_max_frame_bytes",
            self.ws_max_frame_bytes,
            1024,
            16 << 20,
            size,
        );
        r.range(
            "socketio.ws_read_buffer_bytes",
            self.ws_read_buffer_bytes,
            256,
            65536,
            "kept by every idle socket, it grows for larger messages",
        );
        r.range(
            "socketio.max_buffer_size",
            self.max_buffer_size,
            1,
            65536,
            "packets queued per socket, 0 would fail every emit",
        );
        let path = &self.path;
        if !path.starts_with('/')
            || path.len() < 2
            || path.ends_with('/')
            || path.contains(['?', '#', ' '])
        {
            r.fail(
                "socketio.path",
                "must start with / and not end with / (e.g. /socket.io)",
                "use the default \"/socket.io\"",
            );
        }
        if self.transports.is_empty() {
            r.fail(
                "socketio.transports",
                "is empty",
                "use [\"polling\", \"websocket\"] or [\"websocket\"]",
            );
        }
    }
}

impl JitsiConfig {
    /// `[jitsi]`: what each token mode needs.
    fn check(&self, r: &mut Rules, prod: bool) {
        let j = self;
        r.range(
            "jitsi.token_ttl_secs",
            j.token_ttl_secs,
            60,
            7 * 24 * 3600,
            "Jitsi checks exp only when a participant joins, so a token lives this long for anyone who holds it",
        );
        if !j.domain.is_empty() && !is_host(&j.domain) {
            r.fail(
                "jitsi.domain",
                "is not a host name (with an optional :port)",
                "write the Jitsi host alone, e.g. meet.example.com (no scheme, no path)",
            );
        }
        if j.token == JitsiTokenMode::Off {
            return;
        }
        if j.domain.is_empty() {
            r.fail(
                "jitsi.domain",
                "is empty while jitsi.token is on",
                "set the Jitsi host the tokens are for, e.g. meet.example.com (8x8.vc for JaaS)",
            );
        }
        if j.audience.is_empty() {
            r.fail(
                "jitsi.audience",
                "is empty",
                "use the default \"jitsi\" or one of Prosody's JWT_ACCEPTED_AUDIENCES",
            );
        }
        if j.app_id.is_empty() {
            r.fail(
                "jitsi.app_id",
                "is empty",
                "set Prosody's JWT_APP_ID (JaaS: the vpaas-magic-cookie-... AppID)",
            );
        }
        match j.token {
            JitsiTokenMode::Off => {}
            JitsiTokenMode::Hs256 => {
                let len = j.app_secret.expose_secret().len();
                if len == 0 {
                    r.fail(
                        "jitsi.app_secret",
                        "is empty",
                        "set CALLGATE_JITSI_APP_SECRET to Prosody's JWT_APP_SECRET",
                    );
                } else if len < 32 && prod {
                    r.fail(
                        "jitsi.app_secret",
                        "is shorter than 32 bytes in production",
                        "set CALLGATE_JITSI_APP_SECRET (and JWT_APP_SECRET) to at least 32 random bytes",
                    );
                }
                if j.subject.is_empty() {
                    r.fail(
                        "jitsi.subject",
                        "is empty",
                        "set the XMPP domain (docker-jitsi-meet: meet.jitsi), the tenant, or \"*\"",
                    );
                }
            }
            JitsiTokenMode::Rs256 | JitsiTokenMode::Jaas => {
                if !j.private_key_file.is_file() {
                    r.fail(
                        "jitsi.private_key_file",
                        "is not a readable file",
                        "give the PEM RSA private key whose public key Prosody (or JaaS) has",
                    );
                }
                if j.kid.is_empty() {
                    r.fail(
                        "jitsi.kid",
                        "is empty",
                        "set the key id Prosody's asap_key_server (or JaaS) knows the key by",
                    );
                }
                if j.token == JitsiTokenMode::Rs256 && j.subject.is_empty() {
                    r.fail(
                        "jitsi.subject",
                        "is empty",
                        "set the XMPP domain (docker-jitsi-meet: meet.jitsi), the tenant, or \"*\"",
                    );
                }
            }
        }
        if j.token == JitsiTokenMode::Jaas {
            if !j.app_id.starts_with("vpaas-magic-cookie-") || j.app_id.contains('/') {
                r.fail(
                    "jitsi.app_id",
                    "is not a JaaS AppID",
                    "copy the AppID (vpaas-magic-cookie-...) from the JaaS console",
                );
            }
            if !j.kid.starts_with(&format!("{}/", j.app_id)) {
                r.fail(
                    "jitsi.kid",
                    "is not <AppID>/<key id> for JaaS",
                    "copy the API key id from the JaaS console",
                );
            }
            if !j.subject.is_empty() && j.subject != j.app_id {
                r.fail(
                    "jitsi.subject",
                    "differs from jitsi.app_id (JaaS wants the AppID)",
                    "leave it empty for JaaS",
                );
            }
            if j.audience != "jitsi" {
                r.fail(
                    "jitsi.audience",
                    "must be \"jitsi\" for JaaS",
                    "use the default",
                );
            }
        }
    }
}

/// `host[:port]`: DNS labels or an IPv4 address, nothing else.
fn is_host(raw: &str) -> bool {
    let (host, port) = match raw.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (raw, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    let labels_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    port_ok && labels_ok
}

/// `scheme://host[:port]` with an http(s) scheme and nothing after the authority.
fn is_exact_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
        && rest
            .rsplit_once(':')
            .is_none_or(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Config, Problems> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        Config::load_from(None, &Overrides::default(), &env)
    }

    #[test]
    fn defaults_load_and_validate() {
        let config = load(&[]).expect("defaults parse");
        config.validate().expect("defaults are valid");
        assert_eq!(config.server.listen.port(), 4000);
        assert_eq!(config.environment, Environment::Development);
    }

    #[test]
    fn secrets_come_from_their_environment_variables_verbatim() {
        let config =
            load(&[(ENV_JWT_SECRET, "12345678901234567890123456789012345")]).expect("parse");
        assert_eq!(
            config.auth.jwt_secret.expose_secret(),
            "12345678901234567890123456789012345"
        );
    }

    #[test]
    fn the_redis_url_is_a_secret_and_a_bad_one_is_refused_without_its_value() {
        let config = load(&[]).expect("parse");
        assert!(!config.cluster.enabled(), "one process by default");
        let url = "redis://:hunter2-very-secret@10.0.0.5:6379";
        let config = load(&[(ENV_REDIS_URL, url)]).expect("parse");
        assert!(config.cluster.enabled());
        assert_eq!(config.cluster.redis_url.expose_secret(), url);
        config.validate().expect("a valid cluster config");

        let mut bad = config.clone();
        bad.cluster.redis_url = "http://:hunter2-very-secret@10.0.0.5".to_string().into();
        bad.cluster.node_id = "node 1!".into();
        bad.cluster.heartbeat_ms = 2000;
        let problems = bad.validate().expect_err("refused").0;
        let text = format!("{problems:?}");
        assert!(!text.contains("hunter2"), "no secret in problems: {text}");
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"cluster.redis_url"), "{keys:?}");
        assert!(keys.contains(&"cluster.node_id"), "{keys:?}");
        assert!(
            keys.contains(&"cluster.node_timeout_ms"),
            "5000 ms is less than three 2000 ms heartbeats: {keys:?}"
        );
        let a = config.cluster.node_id();
        assert!(
            a.starts_with("node-") && a != config.cluster.node_id(),
            "random per start"
        );
    }

    #[test]
    fn production_refuses_missing_secret_embedded_store_and_wildcard_origin() {
        let mut config = load(&[]).expect("parse");
        config.environment = Environment::Production;
        config.server.allowed_origins.push("*".into());
        let problems = config.validate().expect_err("must refuse").0;
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"auth.jwt_secret"), "{keys:?}");
        assert!(keys.contains(&"store.kind"), "{keys:?}");
        assert!(keys.contains(&"server.allowed_origins"), "{keys:?}");
    }

    #[test]
    fn nested_keys_come_from_double_underscore_variables() {
        let config = load(&[
            ("CALLGATE__SERVER__LISTEN", "127.0.0.1:5000"),
            ("CALLGATE__AUTH__TOKEN_TTL_SECS", "120"),
            ("CALLGATE__SOCKETIO__TRANSPORTS", "[\"websocket\"]"),
        ])
        .expect("parse");
        assert_eq!(config.server.listen.port(), 5000);
        assert_eq!(config.auth.token_ttl_secs, 120);
        assert_eq!(config.socketio.transports, vec![Transport::Websocket]);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let problems = load(&[("CALLGATE__SERVER__LISTN", "x")]).expect_err("unknown key");
        assert_eq!(
            problems.to_string(),
            "CALLGATE__SERVER__LISTN: server.listn: is an unknown key; remove it; did you mean \"listen\"?"
        );
    }

    #[test]
    fn a_short_secret_is_refused_in_every_environment() {
        let problems = load(&[(ENV_JWT_SECRET, "short")]).expect_err("must refuse");
        assert_eq!(
            problems.to_string(),
            "CALLGATE_JWT_SECRET: auth.jwt_secret: is shorter than 32 bytes; set CALLGATE_JWT_SECRET to at least 32 random bytes"
        );
    }

    fn resolve_env(env: &[(&str, &str)]) -> Resolved<Config> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        Config::resolve(None, &Overrides::default(), &env)
    }

    fn resolve_file(text: &str) -> (Resolved<Config>, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("callgate.toml");
        std::fs::write(&path, text).expect("write");
        let resolved = Config::resolve(Some(&path), &Overrides::default(), &[]);
        (resolved, path.display().to_string())
    }

    fn lines(resolved: &Resolved<Config>) -> Vec<String> {
        resolved.problems.iter().map(ToString::to_string).collect()
    }

    /// Every numeric leaf of a TOML table, as dotted keys.
    pub(crate) fn numeric_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Integer(_) | toml::Value::Float(_) => out.push(key),
                toml::Value::Table(t) => numeric_keys(t, &key, out),
                _ => {}
            }
        }
    }

    #[test]
    fn every_number_in_the_defaults_has_a_range() {
        let config = load(&[]).expect("defaults");
        let rules = config.rules();
        let mut keys = Vec::new();
        numeric_keys(&toml::from_str(DEFAULTS_TOML).expect("toml"), "", &mut keys);
        assert!(keys.len() > 20, "{keys:?}");
        for key in keys {
            assert!(
                rules.ranges().iter().any(|r| r.key == key),
                "{key} has no range rule: add one next to its section's other rules"
            );
        }
    }

    #[test]
    fn every_range_holds_at_its_edges_and_refuses_past_them() {
        let config = load(&[]).expect("defaults");
        for rule in config.rules().ranges() {
            let var = format!(
                "{ENV_PREFIX}{}",
                rule.key.to_ascii_uppercase().replace('.', "__")
            );
            let range_problem = |value: i128| {
                let resolved = resolve_env(&[(&var, &value.to_string())]);
                resolved
                    .problems
                    .iter()
                    .find(|p| p.key == rule.key)
                    .map(ToString::to_string)
                    .filter(|p| p.contains("must be"))
            };
            for edge in [rule.min, rule.max] {
                assert_eq!(
                    range_problem(edge),
                    None,
                    "{} = {edge} is allowed",
                    rule.key
                );
            }
            let above = range_problem(rule.max + 1).expect("above the range is refused");
            assert!(
                above.starts_with(&format!(
                    "{var}: {}: is {}, must be {} to {} (",
                    rule.key,
                    rule.max + 1,
                    rule.min,
                    rule.max
                )),
                "{above}"
            );
            if rule.min > 0 {
                assert!(
                    range_problem(rule.min - 1).is_some(),
                    "{} below {}",
                    rule.key,
                    rule.min
                );
            }
        }
    }

    #[test]
    fn a_file_with_several_problems_reports_each_once_naming_the_file() {
        let (resolved, file) = resolve_file(
            "[server]\nlisten = \"nonsense\"\nlistn = 1\nbody_limit_bytes = 0\n\
             [log]\nformat = \"xml\"\n\
             [auth]\ntoken_ttl_secs = \"an hour\"\n\
             [socketio]\ntransports = [\"polling\", \"pigeon\"]\nping_interval_secs = 0\n",
        );
        let lines = lines(&resolved);
        let expect = [
            (
                "server.listen",
                "is not valid \"nonsense\": invalid socket address syntax; use a value like \"127.0.0.1:4000\" (the default)",
            ),
            (
                "server.listn",
                "is an unknown key; remove it; did you mean \"listen\"?",
            ),
            ("server.body_limit_bytes", "is 0, must be 1024 to 1048576"),
            (
                "log.format",
                "is \"xml\", which is not one of its values; use one of \"text\", \"json\"",
            ),
            (
                "auth.token_ttl_secs",
                "is the string \"an hour\", expected a whole number of 0 or more; use a value like 3600",
            ),
            (
                "socketio.transports[1]",
                "is \"pigeon\", which is not one of its values; use one of \"polling\", \"websocket\"",
            ),
            ("socketio.ping_interval_secs", "is 0, must be 1 to 300"),
        ];
        for (key, text) in expect {
            let prefix = format!("{file}: {key}: {text}");
            assert_eq!(
                lines.iter().filter(|l| l.starts_with(&prefix)).count(),
                1,
                "{prefix}\nin:\n{}",
                lines.join("\n")
            );
        }
        assert_eq!(lines.len(), expect.len(), "{}", lines.join("\n"));
        assert!(
            lines
                .iter()
                .all(|l| !l.contains("``") && !l.contains("bytes ")),
            "{lines:?}"
        );
    }

    #[test]
    fn a_toml_syntax_error_names_the_file_line_and_column() {
        let (resolved, file) = resolve_file("[server]\nlisten = \"127.0.0.1:4000\"\n[log\n");
        let lines = lines(&resolved);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with(&format!("{file}: is not valid TOML at line 3, column 5: ")),
            "{lines:?}"
        );
        assert!(
            lines[0].ends_with("; fix the TOML syntax there"),
            "{lines:?}"
        );
    }

    #[test]
    fn problems_from_the_file_the_environment_and_validation_come_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "environment = \"production\"\n[log]\nformat = 7\n").expect("write");
        let env = vec![("CALLGATE__SERVER__LISTEN".to_string(), "here".to_string())];
        let resolved = Config::resolve(Some(&path), &Overrides::default(), &env);
        let lines = lines(&resolved);
        let file = path.display().to_string();
        for start in [
            format!("{file}: log.format: "),
            "CALLGATE__SERVER__LISTEN: server.listen: ".to_string(),
            "auth.jwt_secret: is empty in production;".to_string(),
            "store.kind: is \"embedded\" in production".to_string(),
        ] {
            assert!(
                lines.iter().any(|l| l.starts_with(&start)),
                "{start}\nin {lines:#?}"
            );
        }
    }

    #[test]
    fn every_secret_is_read_verbatim_from_every_environment_name() {
        let digits = "12345678901234567890123456789012345";
        for var in [ENV_JWT_SECRET, "CALLGATE__AUTH__JWT_SECRET"] {
            let config = load(&[(var, digits)]).expect("a numeric-looking secret is a string");
            assert_eq!(config.auth.jwt_secret.expose_secret(), digits, "{var}");
        }
        for var in [ENV_EXTERNAL_JWT_SECRET, "CALLGATE__AUTH__EXTERNAL__SECRET"] {
            let config = load(&[(var, digits)]).expect("parse");
            assert_eq!(config.auth.external.secret.expose_secret(), digits, "{var}");
        }
        for var in [ENV_MONGODB_URI, "CALLGATE__STORE__MONGODB__URI"] {
            let config = load(&[(var, "1234")]).expect("parse");
            assert_eq!(config.store.mongodb.uri.expose_secret(), "1234", "{var}");
        }
        // The short name wins over the long one.
        let config = load(&[
            (ENV_JWT_SECRET, digits),
            ("CALLGATE__AUTH__JWT_SECRET", "x"),
        ])
        .expect("parse");
        assert_eq!(config.auth.jwt_secret.expose_secret(), digits);
    }

    #[test]
    fn no_problem_and_no_printout_shows_a_secret() {
        let (resolved, _) = resolve_file(
            "[auth]\njwt_secret = 987654321\n[auth.external]\nenabled = true\nsecret = [\"s3cr3t-in-an-array\"]\n\
             [store.mongodb]\nuri = { user = \"mongo-pass-in-a-table\" }\n",
        );
        let text = lines(&resolved).join("\n");
        for key in [
            "auth.jwt_secret",
            "auth.external.secret",
            "store.mongodb.uri",
        ] {
            assert!(
                text.contains(&format!("{key}: ")),
                "{key} not reported:\n{text}"
            );
        }
        for secret in ["987654321", "s3cr3t", "mongo-pass"] {
            assert!(!text.contains(secret), "{secret} leaked:\n{text}");
        }
        // Short secrets are reported without their value, and --print redacts.
        let shown = "a-short-but-secret";
        let resolved = resolve_env(&[
            (ENV_JWT_SECRET, shown),
            (ENV_MONGODB_URI, "mongodb://u:pw-secret@h"),
        ]);
        let text = lines(&resolved).join("\n");
        assert!(
            text.contains("auth.jwt_secret: is shorter than 32 bytes"),
            "{text}"
        );
        let printed = resolved.effective_toml();
        for leaked in [&text, &printed] {
            assert!(
                !leaked.contains(shown) && !leaked.contains("pw-secret"),
                "{leaked}"
            );
        }
        assert!(printed.contains("jwt_secret = \"<redacted>\""), "{printed}");
        assert!(printed.contains("listen = \"127.0.0.1:4000\""), "{printed}");
    }

    #[test]
    fn log_colour_is_auto_always_or_never() {
        for (name, want) in [
            ("auto", LogColor::Auto),
            ("always", LogColor::Always),
            ("never", LogColor::Never),
        ] {
            let config = load(&[("CALLGATE__LOG__COLOR", name)]).expect("parse");
            assert_eq!(config.log.color, want);
        }
        assert!(load(&[("CALLGATE__LOG__COLOR", "rainbow")]).is_err());
        assert!(!LogColor::Auto.enabled(false), "never to a pipe or a file");
        assert!(LogColor::Always.enabled(false));
        assert!(!LogColor::Never.enabled(true));
    }

    #[test]
    fn the_websocket_read_buffer_and_hashing_priority_are_checked() {
        for (bytes, ok) in [
            ("255", false),
            ("256", true),
            ("65536", true),
            ("65537", false),
        ] {
            let refused = resolve_env(&[("CALLGATE__SOCKETIO__WS_READ_BUFFER_BYTES", bytes)])
                .problems
                .iter()
                .any(|p| p.key == "socketio.ws_read_buffer_bytes");
            assert_eq!(refused, !ok, "{bytes}");
        }
        for (name, want) in [
            ("idle", WorkerPriority::Idle),
            ("low", WorkerPriority::Low),
            ("normal", WorkerPriority::Normal),
        ] {
            let config = load(&[("CALLGATE__PASSWORD__WORKER_PRIORITY", name)]).expect("parse");
            assert_eq!(config.password.worker_priority, want);
        }
        let problems =
            load(&[("CALLGATE__PASSWORD__WORKER_PRIORITY", "realtime")]).expect_err("refused");
        assert!(
            problems.to_string().contains("worker_priority"),
            "{problems}"
        );
    }

    /// Parsed, whatever `validate` would say (for tests of the rules).
    fn parsed(env: &[(&str, &str)]) -> Config {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        Config::resolve(None, &Overrides::default(), &env)
            .value
            .expect("parse")
    }

    fn problem_keys(config: &Config) -> Vec<String> {
        config
            .validate()
            .err()
            .map(|p| p.0.into_iter().map(|p| p.key).collect())
            .unwrap_or_default()
    }

    #[test]
    fn jitsi_defaults_are_off_with_no_domain() {
        let config = parsed(&[]);
        assert_eq!(config.jitsi.token, JitsiTokenMode::Off);
        assert_eq!(config.jitsi.domain(), None);
        assert_eq!(config.jitsi.audience, "jitsi");
        assert_eq!(config.jitsi.token_ttl_secs, 7200);
        assert_eq!(config.jitsi.moderator, JitsiModerator::Caller);
    }

    #[test]
    fn the_jitsi_secret_is_read_verbatim_and_short_ones_are_refused_in_production() {
        let env = [
            ("CALLGATE__JITSI__DOMAIN", "meet.example.com"),
            ("CALLGATE__JITSI__TOKEN", "hs256"),
            ("CALLGATE__JITSI__APP_ID", "callgate"),
            ("CALLGATE__JITSI__SUBJECT", "meet.jitsi"),
            (ENV_JITSI_APP_SECRET, "0123456789"),
        ];
        let mut config = parsed(&env);
        assert_eq!(config.jitsi.app_secret.expose_secret(), "0123456789");
        assert!(problem_keys(&config).is_empty(), "development allows it");
        config.environment = Environment::Production;
        let problems = config
            .validate()
            .expect_err("production refuses")
            .to_string();
        assert!(
            problems.contains("jitsi.app_secret: is shorter than 32 bytes"),
            "{problems}"
        );
        assert!(!problems.contains("0123456789"), "no secret in errors");
    }

    #[test]
    fn every_jitsi_mode_lists_what_it_lacks() {
        let hs = parsed(&[("CALLGATE__JITSI__TOKEN", "hs256")]);
        let keys = problem_keys(&hs);
        for key in [
            "jitsi.domain",
            "jitsi.app_id",
            "jitsi.app_secret",
            "jitsi.subject",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key}: {keys:?}");
        }
        let rs = parsed(&[("CALLGATE__JITSI__TOKEN", "rs256")]);
        let keys = problem_keys(&rs);
        for key in ["jitsi.private_key_file", "jitsi.kid", "jitsi.subject"] {
            assert!(keys.iter().any(|k| k == key), "{key}: {keys:?}");
        }
        let jaas = parsed(&[
            ("CALLGATE__JITSI__TOKEN", "jaas"),
            ("CALLGATE__JITSI__DOMAIN", "8x8.vc"),
            ("CALLGATE__JITSI__APP_ID", "not-a-cookie"),
            ("CALLGATE__JITSI__KID", "other/key"),
            ("CALLGATE__JITSI__AUDIENCE", "meet"),
        ]);
        let keys = problem_keys(&jaas);
        for key in [
            "jitsi.app_id",
            "jitsi.kid",
            "jitsi.audience",
            "jitsi.private_key_file",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key}: {keys:?}");
        }
        assert!(load(&[("CALLGATE__JITSI__TOKEN", "rs512")]).is_err());
        assert!(load(&[("CALLGATE__JITSI__MODERATOR", "owner")]).is_err());
    }

    #[test]
    fn the_jitsi_domain_is_a_bare_host() {
        for ok in ["meet.example.com", "8x8.vc", "localhost:8443", "10.0.0.5"] {
            assert!(is_host(ok), "{ok}");
        }
        for bad in [
            "https://meet.example.com",
            "meet.example.com/",
            "meet example",
            "-a.com",
            "a.com:0",
            "a..com",
            "",
        ] {
            assert!(!is_host(bad), "{bad}");
        }
        let config = parsed(&[("CALLGATE__JITSI__DOMAIN", "https://meet.x")]);
        assert_eq!(problem_keys(&config), vec!["jitsi.domain".to_string()]);
    }

    #[test]
    fn the_demo_page_is_on_in_development_and_off_in_production_unless_set() {
        let config = parsed(&[]);
        assert_eq!(config.server.demo, DemoSwitch::Auto);
        assert!(config.server.demo.enabled(Environment::Development));
        assert!(!config.server.demo.enabled(Environment::Production));
        for (value, want) in [("true", true), ("false", false), ("\"auto\"", true)] {
            let config = parsed(&[("CALLGATE__SERVER__DEMO", value)]);
            assert_eq!(config.server.demo.enabled(Environment::Development), want);
        }
        let on = parsed(&[("CALLGATE__SERVER__DEMO", "true")]);
        assert!(on.server.demo.enabled(Environment::Production));
        let off = parsed(&[("CALLGATE__SERVER__DEMO", "false")]);
        assert!(!off.server.demo.enabled(Environment::Development));
        let problems = load(&[("CALLGATE__SERVER__DEMO", "maybe")]).expect_err("refused");
        assert!(problems.to_string().contains("server.demo"), "{problems}");
    }

    #[test]
    fn origins_must_be_exact() {
        assert!(is_exact_origin("https://chat.example.com"));
        assert!(is_exact_origin("http://localhost:3000"));
        for bad in [
            "chat.example.com",
            "https://a.com/",
            "https://a.com:x",
            "null",
            "https://",
        ] {
            assert!(!is_exact_origin(bad), "{bad}");
        }
    }
}
