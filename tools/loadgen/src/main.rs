//! `vsr-load`: the bundled load generator. Starts a local vsr cluster (or drives
//! `--cluster`), runs closed- or open-loop load through the public client API, and reports
//! throughput and latency; can sweep load, compare against a raw-TCP baseline, and check
//! linearizability. See `perf/README.md` for how the numbers in this repository were made.

mod baseline;
mod check;
mod cli;
mod cluster;
mod driver;
mod hgrm;
mod output;
mod ports;
mod reply;
mod report;
mod sizing;
mod stats_probe;
mod stop;
mod sweep;
mod system;
mod transport;
mod vsr_client;
mod workload;

use clap::Parser;
use cli::{Cli, Command, LoadArgs};
use driver::LoadSpec;
use report::Summary;
use std::process::ExitCode;
use system::{Shape, System, Target};
use workload::Workload;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::BaselineNode(args)) => baseline::node::run(args).map(|()| ExitCode::SUCCESS),
        None => run(cli.load),
    };
    result.unwrap_or_else(|error| {
        eprintln!("vsr-load: error: {error:#}");
        ExitCode::FAILURE
    })
}

fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    args.validate()?;
    stop::install()?;
    output::init(args.out_dir.as_deref());
    if args.check {
        return check::run(&args);
    }
    if args.sweep {
        return sweep::run(&args);
    }
    let summaries = if args.compare {
        vec![
            measure(System::Vsr, &args)?,
            measure(System::TcpBaseline, &args)?,
        ]
    } else if args.baseline.is_some() {
        vec![measure(System::TcpBaseline, &args)?]
    } else {
        vec![measure(System::Vsr, &args)?]
    };
    print!("{}", report::table(&summaries));
    for (i, summary) in summaries.iter().enumerate() {
        // With --compare the first file gets vsr, the baseline goes beside it.
        let suffix = if i == 0 { None } else { Some("baseline") };
        if let Some(path) = &args.json {
            summary.write_json(&output::with_suffix(path, suffix))?;
        }
        if let Some(path) = &args.hgrm {
            summary.write_hgrm(&output::with_suffix(path, suffix))?;
        }
    }
    Ok(if stop::requested() {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// Starts `system`, runs the load of `args` against it, stops it, and summarises.
fn measure(system: System, args: &LoadArgs) -> anyhow::Result<Summary> {
    let mut target = Target::start(system, args)?;
    let before = target.cluster_stats();
    let mut workload = Workload::new(
        args.service,
        args.payload_bytes,
        args.read_fraction,
        args.keys,
        1,
    )
    .with_key_order(args.key_order);
    let label = if args.compare {
        format!("{} ", system.title())
    } else {
        String::new()
    };
    let spec = LoadSpec {
        sessions: args.sessions(),
        rate: args.rate,
        warmup: args.warmup,
        duration: args.duration,
        progress: !args.quiet,
        label,
        check_replies: system == System::Vsr,
    };
    let shape = match args.rate {
        Some(rate) if args.sessions.is_none() => {
            let trial = args.warmup.max(sizing::TRIAL_MIN);
            let mut connect = |sessions: usize| {
                let connections = args.connections.min(sessions);
                target.connect(sessions, connections)
            };
            let mut shape =
                sizing::size_open_loop(&spec, rate, trial, &mut workload, &mut connect)?;
            shape.connections = args.connections.min(shape.sessions);
            shape
        }
        _ => Shape {
            sessions: spec.sessions,
            connections: args.connections.min(spec.sessions),
            ..Shape::default()
        },
    };
    // A fresh client: a trial's operations may still be in flight on its sessions.
    let mut transport = target.connect(shape.sessions, shape.connections)?;
    let spec = LoadSpec {
        sessions: shape.sessions,
        ..spec
    };
    let measurement = driver::run(transport.as_mut(), &mut workload, &spec)?;
    drop(transport);
    let summary = target.summary(args, shape, measurement, &before);
    target.succeeded();
    Ok(summary)
}
