//! The `callgate` binary: parses the command line and hands over to the library.

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use callgate::app::{self, App};
use callgate::config::{Config, Overrides, Problems};
use callgate::policy::Policy;
use clap::{Args, Parser, Subcommand};

/// The version and the git commit it was built from (`build.rs`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CALLGATE_GIT_COMMIT"),
    ")"
);

/// callgate: a secure Socket.IO call-signaling server.
#[derive(Debug, Parser)]
#[command(version = VERSION, about)]
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
    /// Also print the effective configuration and policy (secrets redacted).
    #[arg(long)]
    print: bool,
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
    // Colour only on a terminal unless log.color says otherwise; JSON never.
    let ansi = config.log.color.enabled(std::io::stderr().is_terminal());
    let _ = callgate::telemetry::try_init_with(config.log.format, ansi, filter, std::io::stderr);
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
    // Every layer and every check, each problem once (a key already reported
    // is not reported again in another wording).
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = Config::resolve(args.config.as_deref(), &Overrides::default(), &env);
    let mut problems = Problems(config.problems.clone());
    if let Some(c) = config.value.as_ref().filter(|_| config.problems.is_empty()) {
        let tls = &c.server.tls;
        if !tls.cert_file.as_os_str().is_empty()
            && !tls.key_file.as_os_str().is_empty()
            && let Err(e) = callgate::serve::load_server_config(&tls.cert_file, &tls.key_file)
        {
            let mut p = vec![e.to_problem()];
            config.attribute(&mut p);
            problems.extend_new(p);
        }
        if let Err(p) = callgate::auth::TokenKeys::from_config(&c.auth, c.environment) {
            let mut p = p.0;
            config.attribute(&mut p);
            problems.extend_new(p);
        }
    }
    let policy_path = args
        .policy
        .clone()
        .or_else(|| Some(PathBuf::from(app::DEFAULT_POLICY_PATH)).filter(|p| p.is_file()));
    let policy = Policy::resolve(policy_path.as_deref());
    problems.0.extend(policy.problems.iter().cloned());
    // One write, whose failure (a closed pipe: `| head`) is not a panic.
    let mut out = String::new();
    if args.print {
        out.push_str("# effective configuration (secrets redacted)\n");
        out.push_str(&config.effective_toml());
        out.push_str(&format!(
            "\n# effective policy: {} over the built-in defaults\n",
            policy_path
                .as_deref()
                .map_or_else(|| "nothing".to_string(), |p| p.display().to_string())
        ));
        out.push_str(&policy.effective_toml());
        out.push('\n');
    }
    let code = if problems.0.is_empty() {
        out.push_str("configuration and policy are valid\n");
        ExitCode::SUCCESS
    } else {
        for p in &problems.0 {
            out.push_str(&format!("{p}\n"));
        }
        ExitCode::FAILURE
    };
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    code
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
