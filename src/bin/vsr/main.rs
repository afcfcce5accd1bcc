//! The `vsr` command line: run a replica, talk to a cluster, operate it, run the simulator.

mod admin;
mod kv;
mod replica;
mod sim;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vsr",
    version,
    about = "Viewstamped Replication: replica, client and simulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one replica of a cluster over TCP.
    Replica(Box<replica::Args>),
    /// Talk to a cluster running the kv service (commands on stdin, or one from arguments).
    Kv(kv::Args),
    /// Print a running replica's counters and latency histograms.
    Stats(stats::Args),
    /// Operate a running cluster: `status`, `reconfigure`.
    Admin(admin::Args),
    /// Run the deterministic simulator over many seeds, or replay one.
    Sim(sim::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replica(args) => replica::run(*args),
        Command::Kv(args) => kv::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Admin(args) => admin::run(args),
        Command::Sim(args) => sim::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
