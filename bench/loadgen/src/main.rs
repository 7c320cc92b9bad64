//! `callgate-loadgen`: drives callgate (or the Node reference, or the bare
//! relay) over Engine.IO v4 / Socket.IO v5 websockets and reports latency,
//! memory and CPU. See `bench/README.md`.
//!
//! Layout: [`cli`] (arguments), [`seed`] (seed files), [`token`] (JWTs),
//! [`http`] (login client), [`protocol`] (Socket.IO packets), [`client`] (one
//! socket), [`fleet`] (many sockets), [`call`] and [`phase`] (open-loop call
//! traffic), [`storm`] (login storm), [`probe`] (/proc), [`redis_stats`] (Redis commands), [`stats`]
//! (histograms), [`scenario`] (a run), [`report`] (a run's report),
//! [`summary`] (many runs compared).

mod call;
mod cli;
mod client;
mod fleet;
mod http;
mod phase;
mod probe;
mod protocol;
mod redis_stats;
mod report;
mod scenario;
mod seed;
mod stats;
mod storm;
mod summary;
mod token;

use std::process::ExitCode;

use clap::Parser as _;

use cli::{Cli, Command, GenSeedArgs, RunArgs};

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::GenSeed(args) => gen_seed(&args),
        Command::Run(args) => run(&args),
        Command::Report(args) => summary::print(&args.files, &args.baseline),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("callgate-loadgen: {message}");
            ExitCode::FAILURE
        }
    }
}

fn gen_seed(args: &GenSeedArgs) -> Result<(), String> {
    let hash = match &args.password_hash {
        Some(hash) => hash.clone(),
        None => seed::hash_password(&args.password)?,
    };
    seed::save(&seed::generate(args.users, &hash), &args.out)?;
    eprintln!("wrote {} users to {}", args.users, args.out.display());
    Ok(())
}

fn run(args: &RunArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report = runtime.block_on(scenario::run(args))?;
    if args.json {
        eprint!("{}", report::table(&report));
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report::table(&report));
    }
    // The sockets close with the runtime; do not wait for their tasks.
    runtime.shutdown_background();
    Ok(())
}
