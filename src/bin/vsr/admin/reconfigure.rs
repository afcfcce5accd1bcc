//! `vsr admin reconfigure --cluster OLD --to NEW`: move a running cluster to the members at
//! NEW (paper section 7), with the checks an operator would otherwise make by hand.
//!
//! 1. Ask every replica of OLD and NEW for its state; the newest configuration any of
//!    them reports is the current one (whose members are asked too, when OLD is an
//!    earlier configuration). If it already has NEW's members, say its epoch and
//!    stop (a repeated command changes nothing).
//! 2. The next configuration is `Configuration::successor_at(NEW)`: a current member at
//!    an address of NEW keeps its identity, every other address gets a fresh one. Its
//!    witnesses (paper 6.1) are `--witnesses` (indexes in NEW), none with
//!    `--no-witnesses`, else the current witnesses that stay. It must be a valid
//!    successor (an odd number of at least three distinct members, at most f witnesses).
//! 3. Warm-up (paper 7.5): every new member must be running already (`vsr replica
//!    --join`) as a learner under the identity the change will give it, within
//!    `--lag-max` ops of the cluster's commit, so that the change stalls writes only for
//!    the last few ops. Otherwise refuse, saying which member and why.
//! 4. Send the RECONFIGURATION through a client session and wait for it to commit; a
//!    refusal comes back with the primary's reason (another change in progress, ...).
//! 5. CheckEpoch: wait until a majority of the new members are normal in the new epoch
//!    under one primary, then print the new epoch.
//!
//! Exit status 0 with the epoch on stdout once the new configuration is normal; 1 with a
//! one-line reason on stderr otherwise (rejected, timed out, not warmed up, invalid).

use super::{ask_all, ClusterArgs};
use anyhow::{bail, Context};
use bytes::Bytes;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vsr::client::{Client, ClientError, ClientOptions, ReplicaStats, ReplicaStatus};
use vsr::protocol::{Configuration, ReplicaSet};

/// Arguments of `vsr admin reconfigure`.
#[derive(clap::Args)]
pub struct ReconfigureArgs {
    /// The running cluster: the addresses of its current configuration (or of any earlier
    /// one whose replicas still answer).
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The new configuration's addresses, comma-separated, in order (at least three, an
    /// odd number). Members to add must already run `vsr replica --cluster NEW --replica
    /// I --join OLD`.
    #[arg(long, value_delimiter = ',', required = true)]
    to: Vec<String>,
    /// Indexes (in --to, from 0) of the new configuration's witnesses (paper 6.1): at most
    /// f of them, which store the log and vote but never execute or lead. A current
    /// witness may become active and an active a witness (with `--durability disk` too:
    /// its store drops its checkpoint). Without it, the current witnesses that stay
    /// members stay witnesses.
    #[arg(long, value_delimiter = ',', conflicts_with = "no_witnesses")]
    witnesses: Option<Vec<u8>>,
    /// The new configuration has no witnesses: every member executes.
    #[arg(long)]
    no_witnesses: bool,
    /// Refuse while a new member's commit is more than this many ops behind the cluster's.
    #[arg(long, default_value_t = 10_000)]
    lag_max: u64,
    /// How long to wait for the change to commit and the new configuration to be normal,
    /// in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    wait_ms: u64,
}

/// The pause between two polls of the new members' state.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

pub fn run(args: ReconfigureArgs) -> anyhow::Result<ExitCode> {
    let options = args.cluster.stats_options()?;
    let to = args
        .to
        .iter()
        .map(|address| resolve(address.trim()))
        .collect::<anyhow::Result<Vec<SocketAddr>>>()?;
    let to_bytes: Vec<Bytes> = to.iter().map(|a| Bytes::from(a.to_string())).collect();
    let mut asked: Vec<String> = args.cluster.cluster.clone();
    for address in &to {
        if !asked.iter().any(|a| resolve(a).ok() == Some(*address)) {
            asked.push(address.to_string());
        }
    }
    let mut answers = ask_all(&asked, &options);
    let current = newest_configuration(&answers)
        .context("no replica of --cluster or --to reported its configuration")?;
    // --cluster may name an earlier configuration: the current members are asked too.
    let unasked: Vec<String> = current
        .members()
        .iter()
        .map(|member| String::from_utf8_lossy(&member.address).into_owned())
        .filter(|address| {
            !asked
                .iter()
                .any(|a| resolve(a).ok() == resolve(address).ok())
        })
        .collect();
    answers.extend(ask_all(&unasked, &options));
    asked.extend(unasked);
    let deadline = Instant::now() + Duration::from_millis(args.wait_ms);
    let current_addresses: Vec<Bytes> = current
        .members()
        .iter()
        .map(|m| m.address.clone())
        .collect();
    let next = current.successor_at(&to_bytes);
    let witnesses = next_witnesses(&current, &next, &args)?;
    if current_addresses == to_bytes && witnesses == current.witnesses() {
        eprintln!(
            "the cluster is in this configuration already (epoch {})",
            current.epoch()
        );
        return check_epoch(&current, &options, deadline);
    }
    let next = next.with_proposed_witnesses(witnesses);
    if let Err(reason) = current.check_successor(&next) {
        bail!(
            "--to cannot follow the current configuration (epoch {}): {reason}",
            current.epoch()
        );
    }
    check_warm(&current, &next, &asked, &answers, args.lag_max)?;
    let client_options = ClientOptions {
        // The current configuration's: the session must find its primary.
        witnesses: current.witnesses(),
        cluster_id: args.cluster.cluster_id,
        cluster_key: options.cluster_key.clone(),
        request_timeout: deadline.saturating_duration_since(Instant::now()),
        ..ClientOptions::default()
    };
    let addresses: Vec<SocketAddr> = current
        .members()
        .iter()
        .filter_map(|m| std::str::from_utf8(&m.address).ok()?.parse().ok())
        .collect();
    let mut client = Client::connect(&addresses, client_options)
        .context("cannot open a session with the cluster")?;
    match client.reconfigure(&next) {
        Ok(()) => {}
        Err(ClientError::Rejected(reason)) => bail!("the primary rejected the change: {reason}"),
        Err(ClientError::Timeout) => bail!(
            "timed out after {} ms waiting for the change to commit (it may still commit)",
            args.wait_ms
        ),
        Err(error) => return Err(error).context("the change did not commit"),
    }
    check_epoch(&next, &options, deadline)
}

/// The witnesses of `next` (indexes in it): `--witnesses`, none with `--no-witnesses`, or
/// else the current witnesses that stay members.
fn next_witnesses(
    current: &Configuration,
    next: &Configuration,
    args: &ReconfigureArgs,
) -> anyhow::Result<ReplicaSet> {
    let mut witnesses = ReplicaSet::default();
    if args.no_witnesses {
        return Ok(witnesses);
    }
    match &args.witnesses {
        Some(indexes) => {
            for &index in indexes {
                if !next.contains(index) {
                    bail!(
                        "--witnesses {index}: not an index of --to (0..{})",
                        next.replica_count()
                    );
                }
                witnesses.insert(index);
            }
        }
        None => {
            for index in next.indexes() {
                let id = next.id_of(index);
                if current.index_of(id).is_some_and(|i| current.is_witness(i)) {
                    witnesses.insert(index);
                }
            }
        }
    }
    Ok(witnesses)
}

/// The configuration of the highest epoch any answer reports.
fn newest_configuration(answers: &[Result<ReplicaStats, String>]) -> Option<Configuration> {
    answers
        .iter()
        .filter_map(|answer| answer.as_ref().ok())
        .filter_map(|stats| stats.configuration.as_ref()?.to_configuration())
        .max_by_key(Configuration::epoch)
}

/// Paper 7.5: every member `next` adds runs as a learner with the identity `next` gives it
/// and is within `lag_max` ops of the cluster's commit.
fn check_warm(
    current: &Configuration,
    next: &Configuration,
    asked: &[String],
    answers: &[Result<ReplicaStats, String>],
    lag_max: u64,
) -> anyhow::Result<()> {
    let answer_at = |address: &Bytes| {
        asked
            .iter()
            .position(|a| {
                resolve(a).ok().map(|a| a.to_string().into_bytes()) == Some(address.to_vec())
            })
            .map(|index| &answers[index])
    };
    let commit = current
        .members()
        .iter()
        .filter_map(|member| answer_at(&member.address)?.as_ref().ok())
        .filter(|stats| stats.epoch == current.epoch())
        .map(|stats| stats.commit)
        .max()
        .context("no member of the current configuration answered")?;
    for member in next.members() {
        if current.contains_id(member.id) {
            continue;
        }
        let address = String::from_utf8_lossy(&member.address);
        let stats = match answer_at(&member.address) {
            Some(Ok(stats)) => stats,
            Some(Err(reason)) => bail!(
                "new member {address} is not ready: {reason} (start it first with \
                 `vsr replica --cluster NEW --replica I --join OLD`)"
            ),
            None => bail!("new member {address} was not asked"),
        };
        if stats.replica_id != member.id {
            bail!(
                "new member {address} runs as identity {}, but this change gives it identity {} \
                 (restart it with --join after the cluster's current configuration)",
                stats.replica_id,
                member.id
            );
        }
        if stats.status != ReplicaStatus::Other("joining".into()) {
            bail!(
                "new member {address} is {} in epoch {}, not a learner waiting to join",
                stats.status,
                stats.epoch
            );
        }
        let lag = commit.saturating_sub(stats.commit);
        if lag > lag_max {
            bail!(
                "new member {address} lags {lag} ops behind the cluster's commit {commit} \
                 (more than --lag-max {lag_max}): let it catch up first"
            );
        }
    }
    Ok(())
}

/// CheckEpoch: waits until a majority of `configuration`'s members are normal in its
/// epoch under one primary, then prints the epoch.
fn check_epoch(
    configuration: &Configuration,
    options: &vsr::client::StatsOptions,
    deadline: Instant,
) -> anyhow::Result<ExitCode> {
    let addresses: Vec<String> = configuration
        .members()
        .iter()
        .map(|m| String::from_utf8_lossy(&m.address).into_owned())
        .collect();
    let majority = addresses.len() / 2 + 1;
    let epoch = configuration.epoch();
    loop {
        let answers = ask_all(&addresses, options);
        let normal: Vec<&ReplicaStats> = answers
            .iter()
            .filter_map(|answer| answer.as_ref().ok())
            .filter(|stats| stats.epoch == epoch && stats.status == ReplicaStatus::Normal)
            .collect();
        let primaries = normal.iter().filter(|stats| stats.is_primary).count();
        if normal.len() >= majority && primaries == 1 {
            println!("{epoch}");
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out: {} of {} members are normal in epoch {epoch} ({primaries} primary)",
                normal.len(),
                addresses.len()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn resolve(address: &str) -> anyhow::Result<SocketAddr> {
    address
        .to_socket_addrs()
        .with_context(|| format!("cannot parse address {address:?} (expected HOST:PORT)"))?
        .next()
        .with_context(|| format!("address {address:?} resolves to nothing"))
}
