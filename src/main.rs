//! The `callgate` binary: parses the command line and hands over to the library.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use callgate::app::{self, App};
use callgate::config::{Config, Overrides};
use callgate::policy::Policy;
use clap::{Args, Parser, Subcommand};

/// callgate: a secure Socket.IO call-signaling server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Validate the configuration and policy; print every problem; exit 1 on any.
    CheckConfig(CheckArgs),
    /// Read a password on stdin and print its argon2id PHC string.
    HashPassword(ConfigArg),
}

#[derive(Debug, Args, Clone, Default)]
struct ConfigArg {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args, Clone, Default)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:4000].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// JSON seed file for the embedded store.
    #[arg(long, value_name = "FILE")]
    seed: Option<PathBuf>,
    /// Policy file [default: policies/default.toml].
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
struct CheckArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Policy file [default: policies/default.toml].
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::CheckConfig(args)) => check_config(args),
        Some(Command::HashPassword(args)) => hash_password(args),
    }
}

fn init_tracing(config: &Config) {
    // The filter is capped so that no RUST_LOG value can log a token (see telemetry).
    let filter = callgate::telemetry::user_filter(&config.log.filter);
    let _ = callgate::telemetry::try_init(config.log.format, filter, std::io::stderr);
}

fn serve(args: ServeArgs) -> ExitCode {
    let overrides = Overrides {
        listen: args.listen,
        seed: args.seed,
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("callgate: configuration problems:\n{problems}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(&config);
    let policy_path = args.policy.clone();
    let policy = match app::load_policy(args.policy) {
        Ok(p) => p,
        Err(problems) => {
            eprintln!("callgate: policy problems:\n{problems}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("callgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let app = match App::build(config, policy).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("callgate: cannot start:\n{e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = match app.local_addr() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("callgate: {e}");
                return ExitCode::FAILURE;
            }
        };
        let scheme = if app.tls_reloader().is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, "callgate listening");
        if !app.seeded_usernames().is_empty() {
            tracing::info!(
                users = %app.seeded_usernames().join(", "),
                "seeded users: log in with POST {scheme}://{addr}/auth/login {{\"username\",\"password\"}} (demo passwords are in the seed file)"
            );
        }
        if app.serves_demo() {
            tracing::info!("demo page: open {scheme}://{addr}/demo/ in two windows");
        }
        spawn_reload_on_sighup(&app, policy_path);
        match app.run_until(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("callgate: server error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// On SIGHUP, re-reads the policy (an invalid file is refused and the old
/// policy stays).
#[cfg(unix)]
fn spawn_reload_on_sighup(app: &App, policy_path: Option<PathBuf>) {
    let hub = app.hub().clone();
    tokio::spawn(async move {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP: reloading is off");
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the policy");
            let _ = app::reload_policy(&hub, policy_path.clone());
        }
    });
}

#[cfg(not(unix))]
fn spawn_reload_on_sighup(_app: &App, _policy_path: Option<PathBuf>) {}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn check_config(args: CheckArgs) -> ExitCode {
    let mut problems = Vec::new();
    match Config::load(args.config.as_deref(), &Overrides::default()) {
        Ok(config) => {
            if let Err(p) = config.validate() {
                problems.extend(p.0);
            }
            let tls = &config.server.tls;
            if !tls.cert_file.as_os_str().is_empty()
                && !tls.key_file.as_os_str().is_empty()
                && let Err(e) = callgate::serve::load_server_config(&tls.cert_file, &tls.key_file)
            {
                problems.push(e.to_problem());
            }
            if let Err(p) = callgate::auth::TokenKeys::from_config(&config.auth, config.environment)
            {
                problems.extend(
                    p.0.into_iter()
                        .filter(|k| !problems.contains(k))
                        .collect::<Vec<_>>(),
                );
            }
        }
        Err(p) => problems.extend(p.0),
    }
    match app::load_policy(args.policy) {
        Ok(policy) => {
            if let Err(p) = Policy::validate(&policy) {
                problems.extend(p.0);
            }
        }
        Err(p) => problems.extend(p.0),
    }
    if problems.is_empty() {
        println!("configuration and policy are valid");
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            println!("{p}");
        }
        ExitCode::FAILURE
    }
}

fn hash_password(args: ConfigArg) -> ExitCode {
    let config = match Config::load(args.config.as_deref(), &Overrides::default()) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("callgate: configuration problems:\n{problems}");
            return ExitCode::FAILURE;
        }
    };
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        eprintln!("callgate: cannot read stdin");
        return ExitCode::FAILURE;
    }
    let password = input.strip_suffix('\n').unwrap_or(&input);
    let password = password.strip_suffix('\r').unwrap_or(password);
    let password = match callgate::domain::Password::parse(password.to_string()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("callgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let hashed = callgate::auth::password::params(&config.password)
        .map_err(|_| ())
        .and_then(|params| {
            callgate::auth::password::hash_blocking(&params, password.expose()).map_err(|_| ())
        });
    match hashed {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(()) => {
            eprintln!("callgate: invalid [password] parameters");
            ExitCode::FAILURE
        }
    }
}
