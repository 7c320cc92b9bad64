//! The one typed configuration, loaded once at start-up.
//!
//! Layers, later wins: the embedded, commented `defaults.toml`; the file given
//! with `--config`; environment variables `CALLGATE__SECTION__KEY` (plus the two
//! secrets `CALLGATE_JWT_SECRET` and `CALLGATE_MONGODB_URI`); command-line flags.
//! [`Config::validate`] then lists every problem at once.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The defaults, embedded so the binary runs with no file at all.
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");

/// Environment variable holding the HMAC secret for tokens callgate issues.
pub const ENV_JWT_SECRET: &str = "CALLGATE_JWT_SECRET";
/// Environment variable holding the MongoDB connection string.
pub const ENV_MONGODB_URI: &str = "CALLGATE_MONGODB_URI";

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
}

impl Problem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; {}", self.key, self.problem, self.fix)
    }
}

/// Every problem found, printed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

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
    /// Loads defaults, then `file`, then the environment, then `overrides`.
    ///
    /// # Errors
    /// Returns the problems found while reading or parsing any layer.
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
        let mut figment = Figment::from(Toml::string(DEFAULTS_TOML));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(Problems(vec![Problem::new(
                    "--config",
                    format!("{} is not a readable file", path.display()),
                    "give the path of a TOML file",
                )]));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        for (name, value) in env {
            if let Some(path) = name.strip_prefix("CALLGATE__") {
                let key = path.to_ascii_lowercase().replace("__", ".");
                // Values are read as TOML-ish scalars or arrays, like figment's Env.
                let value: figment::value::Value = value.parse().unwrap_or_else(|e| match e {});
                figment = figment.merge((key, value));
            }
        }
        let var = |wanted: &str| {
            env.iter()
                .find(|(k, _)| k == wanted)
                .map(|(_, v)| v.clone())
        };
        // Secrets are taken verbatim as strings, never reinterpreted as numbers.
        if let Some(secret) = var(ENV_JWT_SECRET) {
            figment = figment.merge(("auth.jwt_secret", secret));
        }
        if let Some(uri) = var(ENV_MONGODB_URI) {
            figment = figment.merge(("store.mongodb.uri", uri));
        }
        if let Some(listen) = overrides.listen {
            figment = figment.merge(("server.listen", listen.to_string()));
        }
        if let Some(seed) = &overrides.seed {
            figment = figment.merge(("store.seed", seed.display().to_string()));
        }
        figment.extract().map_err(|errors| {
            Problems(
                errors
                    .into_iter()
                    .map(|e| {
                        let key = if e.path.is_empty() {
                            "config".to_string()
                        } else {
                            e.path.join(".")
                        };
                        Problem::new(
                            key,
                            e.kind.to_string(),
                            "see the configuration table in README.md",
                        )
                    })
                    .collect(),
            )
        })
    }

    /// Checks every rule that types alone cannot express.
    ///
    /// # Errors
    /// Returns every problem found, not only the first.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut out = Vec::new();
        let mut bad =
            |key: &str, problem: &str, fix: &str| out.push(Problem::new(key, problem, fix));
        let prod = self.environment == Environment::Production;

        // Tokens.
        let secret_len = self.auth.jwt_secret.expose_secret().len();
        if self.auth.algorithm == IssuerAlgorithm::HS256 {
            if secret_len == 0 && prod {
                bad(
                    "auth.jwt_secret",
                    "is empty in production",
                    "set CALLGATE_JWT_SECRET to at least 32 random bytes",
                );
            } else if secret_len > 0 && secret_len < 32 {
                bad(
                    "auth.jwt_secret",
                    "is shorter than 32 bytes",
                    "set CALLGATE_JWT_SECRET to at least 32 random bytes",
                );
            }
        } else {
            for (key, path) in [
                (
                    "auth.ed25519_private_key_file",
                    &self.auth.ed25519_private_key_file,
                ),
                (
                    "auth.ed25519_public_key_file",
                    &self.auth.ed25519_public_key_file,
                ),
            ] {
                if !path.is_file() {
                    bad(
                        key,
                        "is not a readable file",
                        "give a PEM file (see certs/README.md)",
                    );
                }
            }
        }
        if self.auth.issuer.is_empty() {
            bad("auth.issuer", "is empty", "set a non-empty issuer name");
        }
        if self.auth.audience.is_empty() {
            bad("auth.audience", "is empty", "set a non-empty audience");
        }
        if !(60..=7 * 24 * 3600).contains(&self.auth.token_ttl_secs) {
            bad(
                "auth.token_ttl_secs",
                "must be 60 to 604800",
                "pick a lifetime between a minute and a week",
            );
        }
        if self.auth.leeway_secs > 300 {
            bad(
                "auth.leeway_secs",
                "must be at most 300",
                "keep clock skew allowance small (default 5)",
            );
        }
        if !(512..=65536).contains(&self.auth.max_token_bytes) {
            bad(
                "auth.max_token_bytes",
                "must be 512 to 65536",
                "use the default 8192",
            );
        }
        let ext = &self.auth.external;
        if ext.enabled {
            let hmac = ext.algorithm.starts_with("HS");
            if !matches!(
                ext.algorithm.as_str(),
                "HS256"
                    | "HS384"
                    | "HS512"
                    | "RS256"
                    | "RS384"
                    | "RS512"
                    | "ES256"
                    | "ES384"
                    | "EdDSA"
            ) {
                bad(
                    "auth.external.algorithm",
                    "is not supported",
                    "use HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384 or EdDSA",
                );
            } else if hmac && ext.secret.expose_secret().len() < 32 {
                bad(
                    "auth.external.secret",
                    "must be at least 32 bytes for HMAC",
                    "set the chat backend's signing secret",
                );
            } else if !hmac && !ext.public_key_file.is_file() {
                bad(
                    "auth.external.public_key_file",
                    "is not a readable file",
                    "give the issuer's PEM public key",
                );
            }
            if ext.issuer.is_empty() {
                bad(
                    "auth.external.issuer",
                    "is empty",
                    "set the iss the chat backend puts in its tokens",
                );
            }
            if ext.audience.is_empty() {
                bad(
                    "auth.external.audience",
                    "is empty",
                    "set the aud the chat backend puts in its tokens",
                );
            }
            if ext.user_id_claim.is_empty() {
                bad(
                    "auth.external.user_id_claim",
                    "is empty",
                    "name the claim with the user id (sub, id, userId)",
                );
            }
        }

        // Listener.
        let srv = &self.server;
        if srv.ipv6_prefix_len > 128 {
            bad(
                "server.ipv6_prefix_len",
                "must be 0 to 128",
                "use the default 64",
            );
        }
        if !(1..=3600).contains(&srv.idle_timeout_secs)
            || srv.idle_timeout_secs <= self.socketio.ping_interval_secs
        {
            bad(
                "server.idle_timeout_secs",
                "must be 1 to 3600 and more than socketio.ping_interval_secs",
                "use the default 60",
            );
        }
        if !(1..=3600).contains(&srv.http2_keep_alive_interval_secs)
            || !(1..=600).contains(&srv.http2_keep_alive_timeout_secs)
        {
            bad(
                "server.http2_keep_alive_interval_secs",
                "interval must be 1 to 3600 and timeout 1 to 600",
                "use the defaults 20 and 10",
            );
        }
        if srv.max_connections == 0 {
            bad(
                "server.max_connections",
                "must be positive",
                "use the default 25000",
            );
        }
        if !(1024..=65_536).contains(&srv.max_socketio_header_bytes) {
            bad(
                "server.max_socketio_header_bytes",
                "must be 1024 to 65536",
                "use the default 8192",
            );
        }
        if !(1..=3600).contains(&self.auth.session_recheck_secs) {
            bad(
                "auth.session_recheck_secs",
                "must be 1 to 3600",
                "use the default 30",
            );
        }
        let path = &self.socketio.path;
        if !path.starts_with('/')
            || path.len() < 2
            || path.ends_with('/')
            || path.contains(['?', '#', ' '])
        {
            bad(
                "socketio.path",
                "must start with / and not end with / (e.g. /socket.io)",
                "use the default /socket.io",
            );
        }
        if !(1..=300).contains(&self.server.header_read_timeout_secs) {
            bad(
                "server.header_read_timeout_secs",
                "must be 1 to 300",
                "use the default 10",
            );
        }
        let tls = &self.server.tls;
        match (
            tls.cert_file.as_os_str().is_empty(),
            tls.key_file.as_os_str().is_empty(),
        ) {
            (true, true) => {}
            (false, true) => bad(
                "server.tls.key_file",
                "is empty while server.tls.cert_file is set",
                "set both PEM files for TLS, or neither for plain HTTP",
            ),
            (true, false) => bad(
                "server.tls.cert_file",
                "is empty while server.tls.key_file is set",
                "set both PEM files for TLS, or neither for plain HTTP",
            ),
            (false, false) => {
                for (key, path, fix) in [
                    (
                        "server.tls.cert_file",
                        &tls.cert_file,
                        "give a PEM certificate chain (see certs/README.md)",
                    ),
                    (
                        "server.tls.key_file",
                        &tls.key_file,
                        "give the certificate's PEM private key (see certs/README.md)",
                    ),
                ] {
                    if !path.is_file() {
                        bad(key, "is not a readable file", fix);
                    }
                }
            }
        }

        // Store.
        match self.store.kind {
            StoreKind::Embedded if prod => bad(
                "store.kind",
                "is \"embedded\" in production (users would vanish at restart)",
                "use \"mongodb\" and set CALLGATE_MONGODB_URI",
            ),
            StoreKind::Mongodb if self.store.mongodb.uri.expose_secret().is_empty() => {
                bad("store.mongodb.uri", "is empty", "set CALLGATE_MONGODB_URI")
            }
            _ => {}
        }
        if self.store.kind == StoreKind::Embedded
            && !self.store.seed.as_os_str().is_empty()
            && !self.store.seed.is_file()
        {
            bad(
                "store.seed",
                "is not a readable file",
                "give a JSON seed file (see demo/seed.json)",
            );
        }
        let m = &self.store.mongodb;
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
                bad(
                    key,
                    "must be a plain, non-empty name (no leading $, no dots)",
                    "use the name used in your database",
                );
            }
        }
        if !(1..=60).contains(&m.connect_timeout_secs) {
            bad(
                "store.mongodb.connect_timeout_secs",
                "must be 1 to 60",
                "use the default 5",
            );
        }
        if !(100..=60_000).contains(&m.query_timeout_ms) {
            bad(
                "store.mongodb.query_timeout_ms",
                "must be 100 to 60000",
                "use the default 1500",
            );
        }
        if !(100..=60_000).contains(&m.readyz_timeout_ms) {
            bad(
                "store.mongodb.readyz_timeout_ms",
                "must be 100 to 60000",
                "use the default 800",
            );
        }

        // Passwords.
        let p = &self.password;
        if argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None).is_err() {
            bad(
                "password",
                "memory_kib, iterations, parallelism are not valid argon2 parameters",
                "use the OWASP defaults 19456, 2, 1",
            );
        }
        if p.memory_kib > p.max_memory_kib
            || p.iterations > p.max_iterations
            || p.parallelism > p.max_parallelism
        {
            bad(
                "password.max_memory_kib",
                "the ceilings are below the parameters",
                "raise max_* to at least the parameters",
            );
        }
        if !(1..=60_000).contains(&p.queue_timeout_ms) {
            bad(
                "password.queue_timeout_ms",
                "must be 1 to 60000",
                "use the default 2000",
            );
        }

        // Transport.
        let s = &self.socketio;
        if s.ping_interval_secs == 0 || s.ping_timeout_secs == 0 {
            bad(
                "socketio.ping_interval_secs",
                "ping interval and timeout must be positive",
                "use the defaults 25 and 20",
            );
        }
        if !(1..=60).contains(&s.connect_timeout_secs) {
            bad(
                "socketio.connect_timeout_secs",
                "must be 1 to 60",
                "use the default 10",
            );
        }
        if s.max_payload_bytes < 1024
            || s.ws_max_message_bytes < 1024
            || s.ws_max_frame_bytes < 1024
        {
            bad(
                "socketio.max_payload_bytes",
                "payload, message and frame limits must be at least 1024",
                "use the default 65536",
            );
        }
        if !(256..=65_536).contains(&s.ws_read_buffer_bytes) {
            bad(
                "socketio.ws_read_buffer_bytes",
                "must be 256 to 65536",
                "use the default 1024",
            );
        }
        if s.max_buffer_size == 0 {
            bad(
                "socketio.max_buffer_size",
                "must be positive",
                "use the default 128",
            );
        }
        if s.transports.is_empty() {
            bad(
                "socketio.transports",
                "is empty",
                "use [\"polling\", \"websocket\"] or [\"websocket\"]",
            );
        }

        // HTTP.
        if !(1024..=1 << 20).contains(&self.server.body_limit_bytes) {
            bad(
                "server.body_limit_bytes",
                "must be 1024 to 1048576",
                "use the default 16384",
            );
        }
        if crate::http::client_ip::TrustedProxies::parse(&self.server.trusted_proxies).is_err() {
            bad(
                "server.trusted_proxies",
                "holds an entry that is not a CIDR or an IP address",
                "write entries like \"10.0.0.0/8\" or \"192.0.2.10\"",
            );
        }
        for origin in &self.server.allowed_origins {
            if origin == "*" {
                if prod {
                    bad(
                        "server.allowed_origins",
                        "contains \"*\" in production",
                        "list the exact origins of your frontend",
                    );
                }
            } else if !is_exact_origin(origin) {
                bad(
                    "server.allowed_origins",
                    "holds a value that is not scheme://host[:port]",
                    "write origins like https://chat.example.com",
                );
            }
        }

        if out.is_empty() {
            Ok(())
        } else {
            Err(Problems(out))
        }
    }
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
mod tests {
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
        assert!(problems.to_string().contains("listn"), "{problems}");
    }

    #[test]
    fn a_short_secret_is_refused_in_every_environment() {
        let config = load(&[(ENV_JWT_SECRET, "short")]).expect("parse");
        let problems = config.validate().expect_err("must refuse");
        assert!(
            problems
                .to_string()
                .starts_with("auth.jwt_secret: is shorter than 32 bytes;")
        );
    }

    #[test]
    fn the_websocket_read_buffer_and_hashing_priority_are_checked() {
        for (bytes, ok) in [
            ("255", false),
            ("256", true),
            ("65536", true),
            ("65537", false),
        ] {
            let config =
                load(&[("CALLGATE__SOCKETIO__WS_READ_BUFFER_BYTES", bytes)]).expect("parse");
            let refused = config
                .validate()
                .err()
                .is_some_and(|p| p.to_string().contains("socketio.ws_read_buffer_bytes"));
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

    #[test]
    fn the_demo_page_is_on_in_development_and_off_in_production_unless_set() {
        let config = load(&[]).expect("parse");
        assert_eq!(config.server.demo, DemoSwitch::Auto);
        assert!(config.server.demo.enabled(Environment::Development));
        assert!(!config.server.demo.enabled(Environment::Production));
        for (value, want) in [("true", true), ("false", false), ("\"auto\"", true)] {
            let config = load(&[("CALLGATE__SERVER__DEMO", value)]).expect("parse");
            assert_eq!(config.server.demo.enabled(Environment::Development), want);
        }
        let on = load(&[("CALLGATE__SERVER__DEMO", "true")]).expect("parse");
        assert!(on.server.demo.enabled(Environment::Production));
        let off = load(&[("CALLGATE__SERVER__DEMO", "false")]).expect("parse");
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
