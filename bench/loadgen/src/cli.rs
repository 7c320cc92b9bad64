//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load generator for callgate, the Node reference and the bare relay.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a seed file of N users in callgate's format, sharing one password hash.
    GenSeed(GenSeedArgs),
    /// Drive one running server through every scenario and report.
    Run(Box<RunArgs>),
    /// Summarise run reports (JSON lines) of several servers and rounds.
    Report(ReportArgs),
}

/// `gen-seed`.
#[derive(Debug, Args)]
pub struct GenSeedArgs {
    /// Number of users.
    #[arg(long)]
    pub users: usize,
    /// Where to write the seed.
    #[arg(long)]
    pub out: PathBuf,
    /// The password every user shares (hashed once with argon2id).
    #[arg(long, default_value = "bench-password")]
    pub password: String,
    /// Use this argon2id PHC string instead of hashing `--password`.
    #[arg(long)]
    pub password_hash: Option<String>,
}

/// Which server is under test. Only a label: the generator drives them all
/// the same way (its payloads carry every field each of them routes by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// callgate.
    Callgate,
    /// callgate on the MongoDB store.
    CallgateMongo,
    /// Two callgate nodes on one Redis (cluster mode): callers on one, callees on the other.
    CallgateCluster,
    /// The Node socket.io reference running the seed's handlers.
    Node,
    /// The bare socketioxide relay.
    Relay,
    /// Two bare relays on socketioxide's Redis adapter (one Redis): callers on
    /// one, callees on the other. The adapter's own cost, with no callgate logic.
    RelayCluster,
}

impl Target {
    /// The label in reports.
    pub fn label(self) -> &'static str {
        match self {
            Self::Callgate => "callgate",
            Self::CallgateMongo => "callgate-mongo",
            Self::CallgateCluster => "callgate-cluster",
            Self::Node => "node",
            Self::Relay => "relay",
            Self::RelayCluster => "relay-cluster",
        }
    }
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The server's address (loopback).
    #[arg(long, default_value = "127.0.0.1:4000")]
    pub addr: SocketAddr,
    /// Which server this is, for the report.
    #[arg(long, value_enum, default_value = "callgate")]
    pub target: Target,
    /// Round number, for the report.
    #[arg(long, default_value_t = 0)]
    pub round: u32,
    /// The seed file the server loaded.
    #[arg(long)]
    pub seed: PathBuf,
    /// HS256 secret to mint tokens with; without it, tokens come from POST /auth/login.
    #[arg(long, env = "CALLGATE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The seed users' password (login storm, and tokens without --jwt-secret).
    #[arg(long, default_value = "bench-password")]
    pub password: String,
    /// Server process id: RSS and CPU are read from /proc/<pid>.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// A second node of the same cluster: every odd-numbered socket (so every
    /// callee) connects there, every even one (every caller) to --addr, so
    /// each call crosses nodes.
    #[arg(long)]
    pub peer_addr: Option<SocketAddr>,
    /// The second node's process id: RSS and CPU are the sum of both nodes.
    #[arg(long)]
    pub peer_pid: Option<u32>,
    /// The cluster's Redis (`host:port`, no password): its `INFO commandstats`
    /// is read around each phase to count Redis commands per call and per
    /// connect.
    #[arg(long)]
    pub redis_addr: Option<SocketAddr>,

    /// Open sockets in stages up to these totals; memory is sampled after each.
    #[arg(long, value_delimiter = ',', default_value = "5000,10000")]
    pub connections: Vec<usize>,
    /// Sockets opened per second (0: as fast as --connect-in-flight allows).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Handshakes in flight at most.
    #[arg(long, default_value_t = 64)]
    pub connect_in_flight: usize,
    /// Sockets per client source address before moving to the next 127.0.0.x.
    #[arg(long, default_value_t = 25_000)]
    pub sockets_per_source: usize,
    /// Pause after each connection stage before sampling memory, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub settle_secs: f64,

    /// Caller/callee pairs (taken from the first sockets; the rest stay idle).
    #[arg(long, default_value_t = 2000)]
    pub pairs: usize,
    /// Warm-up call rate (calls per second), not reported in the summary.
    #[arg(long, default_value_t = 500.0)]
    pub warmup_rate: f64,
    /// Warm-up duration, in seconds (0: none).
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,
    /// Fixed call rates to measure set-up latency at, calls per second.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub rates: Vec<f64>,
    /// Duration of each measured phase, in seconds.
    #[arg(long, default_value_t = 4.0)]
    pub phase_secs: f64,
    /// How long a phase waits for its last calls to finish, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub drain_secs: f64,

    /// Concurrent login loops during the storm (0: no storm).
    #[arg(long, default_value_t = 8)]
    pub storm_clients: usize,
    /// Call rate before and during the storm, calls per second.
    #[arg(long, default_value_t = 1000.0)]
    pub storm_rate: f64,

    /// Call rates to step through, ascending, until set-up p99 passes
    /// --knee-p99-ms (`--steps` with no value: no knee search).
    #[arg(
        long,
        num_args = 0..,
        value_delimiter = ',',
        default_value = "1000,2000,3000,4000,6000,8000,12000,16000"
    )]
    pub steps: Vec<f64>,
    /// The set-up p99 that marks the knee, in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    pub knee_p99_ms: f64,
    /// Duration of each step, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub step_secs: f64,

    /// Print the report as one JSON line on stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Files of JSON lines written by `run --json`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The server the others are compared with.
    #[arg(long, default_value = "callgate")]
    pub baseline: String,
}
