//! `vsr admin`: operator commands over a whole cluster, one subcommand each. `status` asks
//! every replica for its stats and prints one row per replica, like
//! `etcdctl endpoint status -w table`; `reconfigure` (paper 7, module `reconfigure`)
//! moves the cluster to other members and shares [`ClusterArgs`].
//!
//! Contract (README.md, "Cluster status"): `vsr admin status --cluster ADDRS [--json]`
//! prints one row per address given, in that order, and exits 0 only if a majority of
//! them answered and a majority is normal in the view of exactly one primary; otherwise
//! it exits 1 with a one-line reason on stderr. The table or JSON is printed either way, so a script sees
//! which replica is missing.

mod reconfigure;

use serde::Serialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use vsr::client::{ReplicaStats, ReplicaStatus, StatsError, StatsOptions};

/// Arguments of `vsr admin`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(clap::Subcommand)]
enum AdminCommand {
    /// One row per replica: identity, epoch, view, status, primary, op, commit,
    /// checkpoint, lag.
    /// Exits 0 when a majority answered and is normal under one primary.
    Status(StatusArgs),
    /// Move the cluster to the members at --to (paper 7): checks that new members are
    /// warmed up, requests the change, and prints the new epoch once it is normal.
    Reconfigure(reconfigure::ReconfigureArgs),
}

/// How to reach the cluster; shared by every admin command.
#[derive(clap::Args)]
pub(crate) struct ClusterArgs {
    /// The replicas' addresses, comma-separated, in configuration order.
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) cluster: Vec<String>,
    /// The cluster id (must match the replicas').
    #[arg(long, default_value_t = 0)]
    pub(crate) cluster_id: u128,
    /// The cluster's shared secret, when the replicas run with `--cluster-key`.
    #[arg(long, value_name = "FILE")]
    cluster_key: Option<PathBuf>,
    /// How long to wait for each replica (all are asked at once), in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

impl ClusterArgs {
    pub(crate) fn stats_options(&self) -> anyhow::Result<StatsOptions> {
        Ok(StatsOptions {
            cluster_id: self.cluster_id,
            cluster_key: crate::replica::load_key(self.cluster_key.as_deref())?,
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }
}

/// Arguments of `vsr admin status`.
#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print a JSON array (one object per replica) instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        AdminCommand::Status(args) => status(args),
        AdminCommand::Reconfigure(args) => reconfigure::run(args),
    }
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let options = args.cluster.stats_options()?;
    let answers = ask_all(&args.cluster.cluster, &options);
    let rows = rows(&args.cluster.cluster, answers);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json_rows(&rows))?);
    } else {
        print!("{}", table(&rows));
    }
    for row in &rows {
        if let Ok(stats) = &row.answer {
            if usize::from(stats.replica) != row.index {
                eprintln!(
                    "warning: {} is listed at index {} but says it is replica {}: \
                     is --cluster in configuration order?",
                    row.address, row.index, stats.replica
                );
            }
        }
    }
    verdict(&rows).map_err(anyhow::Error::msg)?;
    Ok(ExitCode::SUCCESS)
}

/// How long past the timeout a thread may take to report the answer it got in time.
const REPORT_MARGIN: Duration = Duration::from_millis(500);

/// Asks every address at once, one thread each, and waits at most the timeout (plus a
/// margin for the threads to report): a replica that has not answered by then is
/// reported as such, whatever its thread is still doing (resolving a name, say).
pub(crate) fn ask_all(
    addresses: &[String],
    options: &StatsOptions,
) -> Vec<Result<ReplicaStats, String>> {
    let (sender, receiver) = mpsc::channel();
    for (index, address) in addresses.iter().enumerate() {
        let (sender, address, options) = (sender.clone(), address.clone(), options.clone());
        std::thread::spawn(move || {
            // The receiver may be gone after the deadline; nobody needs this answer then.
            let _ = sender.send((index, ask(&address, &options)));
        });
    }
    drop(sender);
    let deadline = Instant::now() + options.timeout + REPORT_MARGIN;
    let mut answers: Vec<Option<Result<ReplicaStats, String>>> = vec![None; addresses.len()];
    while answers.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok((index, answer)) => answers[index] = Some(answer),
            Err(_) => break,
        }
    }
    answers
        .into_iter()
        .map(|answer| {
            answer.unwrap_or_else(|| {
                Err(format!(
                    "unreachable: no reply within {:?}",
                    options.timeout
                ))
            })
        })
        .collect()
}

/// One replica's answer, or the row text that says why there is none: `refused: ...`
/// when it answered with a refusal, `unreachable: ...` otherwise.
fn ask(address: &str, options: &StatsOptions) -> Result<ReplicaStats, String> {
    let resolved: SocketAddr = address
        .to_socket_addrs()
        .map_err(|error| format!("unreachable: cannot resolve: {error}"))?
        .next()
        .ok_or_else(|| "unreachable: resolves to no address".to_string())?;
    vsr::client::replica_stats(resolved, options).map_err(|error| match error {
        StatsError::Refused(_) => error.to_string(),
        _ => format!("unreachable: {error}"),
    })
}

/// One replica's row: where it is, what it said (or why it said nothing) and how far its
/// commit is behind the highest commit any replica reported.
#[derive(Debug)]
struct Row {
    /// Its position in `--cluster`.
    index: usize,
    address: String,
    answer: Result<ReplicaStats, String>,
    /// Ops between its commit and the highest commit seen; `None` when it did not answer.
    lag: Option<u64>,
}

fn rows(addresses: &[String], answers: Vec<Result<ReplicaStats, String>>) -> Vec<Row> {
    assert_eq!(addresses.len(), answers.len());
    let commit_max = answers
        .iter()
        .filter_map(|answer| answer.as_ref().ok().map(|stats| stats.commit))
        .max();
    addresses
        .iter()
        .zip(answers)
        .enumerate()
        .map(|(index, (address, answer))| {
            let lag = match (&answer, commit_max) {
                (Ok(stats), Some(max)) => Some(max - stats.commit),
                _ => None,
            };
            Row {
                index,
                address: address.clone(),
                answer,
                lag,
            }
        })
        .collect()
}

/// How many distinct reasons for missing answers the exit line names.
const REASONS_SHOWN: usize = 2;

/// Whether the cluster can serve, or the one-line reason it cannot: a majority of the
/// replicas answered, exactly one says it is primary, and a majority (the primary
/// included) is normal in its epoch and view, so it can commit.
fn verdict(rows: &[Row]) -> Result<(), String> {
    let count = rows.len();
    let majority = count / 2 + 1;
    let answered: Vec<(&Row, &ReplicaStats)> = rows
        .iter()
        .filter_map(|row| row.answer.as_ref().ok().map(|stats| (row, stats)))
        .collect();
    if answered.len() < majority {
        let mut reasons: Vec<&str> = rows
            .iter()
            .filter_map(|row| row.answer.as_ref().err().map(String::as_str))
            .collect();
        reasons.sort_unstable();
        reasons.dedup();
        // The table has every reason; the line keeps to the first few distinct ones.
        let more = reasons.len().saturating_sub(REASONS_SHOWN);
        reasons.truncate(REASONS_SHOWN);
        let more = match more {
            0 => String::new(),
            more => format!("; {more} more"),
        };
        return Err(format!(
            "no primary: {} of {count} replicas answered ({}{more})",
            answered.len(),
            reasons.join("; ")
        ));
    }
    // Replicas of an earlier epoch (not yet moved, or retiring) do not speak for the
    // cluster: the primary is the newest epoch's.
    let epoch = answered
        .iter()
        .map(|(_, stats)| stats.epoch)
        .max()
        .unwrap_or(0);
    let primaries: Vec<&(&Row, &ReplicaStats)> = answered
        .iter()
        .filter(|(_, stats)| {
            stats.is_primary && stats.status == ReplicaStatus::Normal && stats.epoch == epoch
        })
        .collect();
    let (primary_row, primary) = match primaries.as_slice() {
        [] => {
            let statuses: Vec<String> = answered
                .iter()
                .map(|(row, stats)| {
                    format!("{} {} in view {}", row.address, stats.status, stats.view)
                })
                .collect();
            return Err(format!(
                "no primary: none of the {} replicas that answered is primary ({})",
                answered.len(),
                statuses.join(", ")
            ));
        }
        [one] => *one,
        several => {
            let addresses: Vec<&str> = several
                .iter()
                .map(|(row, _)| row.address.as_str())
                .collect();
            return Err(format!(
                "replicas disagree: {} each say they are primary",
                addresses.join(" and ")
            ));
        }
    };
    let following = answered
        .iter()
        .filter(|(_, stats)| {
            stats.status == ReplicaStatus::Normal
                && (stats.epoch, stats.view) == (primary.epoch, primary.view)
        })
        .count();
    if following < majority {
        return Err(format!(
            "no working primary: {} is primary of view {} but only {following} of {count} \
             replicas are normal in that view",
            primary_row.address, primary.view
        ));
    }
    Ok(())
}

/// One row of `--json`: every key is present in every row, `null` where the replica did
/// not answer (then `error` says why) or, for `error`, where it did.
#[derive(Debug, Serialize)]
struct JsonRow<'a> {
    index: usize,
    address: &'a str,
    reachable: bool,
    error: Option<&'a str>,
    /// The index the replica reports for itself.
    replica: Option<u8>,
    /// Its identity, never reused (paper 7: stable across configurations).
    id: Option<u64>,
    epoch: Option<u32>,
    view: Option<u32>,
    status: Option<&'a ReplicaStatus>,
    is_primary: Option<bool>,
    op: Option<u64>,
    commit: Option<u64>,
    checkpoint_op: Option<u64>,
    durability: Option<&'a str>,
    lag: Option<u64>,
}

fn json_rows(rows: &[Row]) -> Vec<JsonRow<'_>> {
    rows.iter()
        .map(|row| {
            let stats = row.answer.as_ref().ok();
            JsonRow {
                index: row.index,
                address: &row.address,
                reachable: stats.is_some(),
                error: row.answer.as_ref().err().map(String::as_str),
                replica: stats.map(|s| s.replica),
                id: stats.map(|s| s.replica_id),
                epoch: stats.map(|s| s.epoch),
                view: stats.map(|s| s.view),
                status: stats.map(|s| &s.status),
                is_primary: stats.map(|s| s.is_primary),
                op: stats.map(|s| s.op),
                commit: stats.map(|s| s.commit),
                checkpoint_op: stats.map(|s| s.checkpoint_op),
                durability: stats.map(|s| s.durability.as_str()),
                lag: row.lag,
            }
        })
        .collect()
}

/// The table's columns: a header and whether its values are numbers (right-aligned).
const COLUMNS: [(&str, bool); 12] = [
    ("INDEX", true),
    ("ADDRESS", false),
    ("ID", true),
    ("EPOCH", true),
    ("VIEW", true),
    ("STATUS", false),
    ("PRIMARY", false),
    ("OP", true),
    ("COMMIT", true),
    ("CHECKPOINT", true),
    ("DURABILITY", false),
    ("LAG", true),
];

/// The columns an unreachable replica's row still fills; its reason spans the rest.
const COLUMNS_LEADING: usize = 2;

/// The rows as a box-drawn table, one line per replica.
fn table(rows: &[Row]) -> String {
    let cells: Vec<Result<Vec<String>, String>> = rows.iter().map(row_cells).collect();
    let mut widths: Vec<usize> = COLUMNS.iter().map(|(header, _)| header.len()).collect();
    for row in &cells {
        let filled = match row {
            Ok(cells) => &cells[..],
            Err(_) => continue,
        };
        for (width, cell) in widths.iter_mut().zip(filled) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for (row, cells) in rows.iter().zip(&cells) {
        if let Err(reason) = cells {
            widths[0] = widths[0].max(row.index.to_string().len());
            widths[1] = widths[1].max(row.address.chars().count());
            let span = span_width(&widths);
            let needed = reason.chars().count();
            if needed > span {
                *widths.last_mut().expect("columns") += needed - span;
            }
        }
    }
    let rule = {
        let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
        format!("+{}+\n", dashes.join("+"))
    };
    let mut out = rule.clone();
    let headers: Vec<String> = COLUMNS.iter().map(|(h, _)| h.to_string()).collect();
    out.push_str(&line(&headers, &widths, false));
    out.push_str(&rule);
    for (row, cells) in rows.iter().zip(&cells) {
        match cells {
            Ok(cells) => out.push_str(&line(cells, &widths, true)),
            Err(reason) => {
                let lead = [row.index.to_string(), row.address.clone()];
                let mut text = line(&lead, &widths[..COLUMNS_LEADING], true);
                text.pop(); // the newline: the reason goes on this line
                let span = span_width(&widths);
                text.push_str(&format!(" {reason:<span$} |\n"));
                out.push_str(&text);
            }
        }
    }
    out.push_str(&rule);
    out
}

/// The width of the cells after the leading ones, with the separators between them.
fn span_width(widths: &[usize]) -> usize {
    let rest = &widths[COLUMNS_LEADING..];
    rest.iter().sum::<usize>() + 3 * (rest.len() - 1)
}

/// `| a | b |` padded to `widths`; numbers right-aligned when `align` is set.
fn line(cells: &[String], widths: &[usize], align: bool) -> String {
    let mut out = String::from("|");
    for ((cell, width), (_, number)) in cells.iter().zip(widths).zip(COLUMNS) {
        if align && number {
            out.push_str(&format!(" {cell:>width$} |"));
        } else {
            out.push_str(&format!(" {cell:<width$} |"));
        }
    }
    out.push('\n');
    out
}

/// A row's cells, or the text of a row without an answer.
fn row_cells(row: &Row) -> Result<Vec<String>, String> {
    let stats = row.answer.as_ref().map_err(Clone::clone)?;
    let durability = match stats.durability.as_str() {
        "" => "-",
        mode => mode,
    };
    Ok(vec![
        row.index.to_string(),
        row.address.clone(),
        stats.replica_id.to_string(),
        stats.epoch.to_string(),
        stats.view.to_string(),
        stats.status.to_string(),
        if stats.is_primary { "yes" } else { "no" }.to_string(),
        stats.op.to_string(),
        stats.commit.to_string(),
        stats.checkpoint_op.to_string(),
        durability.to_string(),
        row.lag.map_or("-".to_string(), |lag| lag.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica's answer, from the fields that matter here.
    fn answer(replica: u8, status: &str, view: u32, commit: u64) -> Result<ReplicaStats, String> {
        let is_primary = status == "normal" && u64::from(view) % 3 == u64::from(replica);
        let json = format!(
            r#"{{"replica":{replica},"status":"{status}","is_primary":{is_primary},"view":{view},
               "op":{},"commit":{commit},"checkpoint_op":0,"durability":"memory"}}"#,
            commit + 1
        );
        Ok(ReplicaStats::from_json(&json).unwrap())
    }

    fn unreachable() -> Result<ReplicaStats, String> {
        Err("unreachable: cannot connect: Connection refused (os error 111)".to_string())
    }

    fn check(answers: Vec<Result<ReplicaStats, String>>) -> (Vec<Row>, Result<(), String>) {
        let addresses: Vec<String> = (0..answers.len())
            .map(|i| format!("127.0.0.1:700{i}"))
            .collect();
        let rows = rows(&addresses, answers);
        let verdict = verdict(&rows);
        (rows, verdict)
    }

    #[test]
    fn lag_is_measured_from_the_highest_commit() {
        let (rows, verdict) = check(vec![
            answer(0, "normal", 3, 90),
            answer(1, "normal", 3, 100),
            unreachable(),
        ]);
        assert_eq!(verdict, Ok(()));
        let lags: Vec<Option<u64>> = rows.iter().map(|row| row.lag).collect();
        assert_eq!(lags, [Some(10), Some(0), None]);
    }

    #[test]
    fn the_primary_is_the_newest_epochs() {
        // Replica 0 is still primary of epoch 0 (it has not moved yet); 1 and 2 run
        // epoch 1, where 1 is primary of view 0 of its (new) configuration.
        let mut old = answer(0, "normal", 0, 5).unwrap();
        old.epoch = 0;
        let moved = |replica: u8, is_primary: bool| {
            let mut stats = answer(replica, "normal", 0, 7).unwrap();
            stats.epoch = 1;
            stats.is_primary = is_primary;
            Ok(stats)
        };
        let (_, verdict) = check(vec![Ok(old), moved(1, true), moved(2, false)]);
        assert_eq!(verdict, Ok(()));
    }

    #[test]
    fn verdicts() {
        let no_majority = check(vec![
            answer(0, "normal", 0, 5),
            unreachable(),
            unreachable(),
        ]);
        assert_eq!(
            no_majority.1,
            Err(
                "no primary: 1 of 3 replicas answered (unreachable: cannot connect: \
                 Connection refused (os error 111))"
                    .to_string()
            )
        );
        let refused = "refused: cluster id differs: 0x0 here, 0x9 there".to_string();
        let wrong_cluster = check(vec![
            Err(refused.clone()),
            Err(refused.clone()),
            Err(refused),
        ]);
        assert_eq!(
            wrong_cluster.1,
            Err("no primary: 0 of 3 replicas answered \
                 (refused: cluster id differs: 0x0 here, 0x9 there)"
                .to_string())
        );
        let refusals = check(
            (0..5)
                .map(|i| {
                    Err(format!(
                        "refused: replica {i} failed to prove the cluster key"
                    ))
                })
                .collect(),
        );
        assert_eq!(
            refusals.1,
            Err(
                "no primary: 0 of 5 replicas answered (refused: replica 0 failed to prove the \
                 cluster key; refused: replica 1 failed to prove the cluster key; 3 more)"
                    .to_string()
            )
        );
        let view_change = check(vec![
            answer(0, "view_change", 4, 5),
            answer(1, "view_change", 4, 5),
            unreachable(),
        ]);
        assert!(
            view_change
                .1
                .as_ref()
                .unwrap_err()
                .starts_with("no primary: none of the 2 replicas that answered is primary"),
            "{view_change:?}"
        );
        let alone = check(vec![
            answer(0, "normal", 3, 5),
            answer(1, "view_change", 4, 5),
            answer(2, "recovering", 0, 0),
        ]);
        assert_eq!(
            alone.1,
            Err(
                "no working primary: 127.0.0.1:7000 is primary of view 3 but only 1 of 3 \
                 replicas are normal in that view"
                    .to_string()
            )
        );
        let two = check(vec![
            answer(0, "normal", 3, 5),
            answer(1, "normal", 4, 5),
            answer(2, "normal", 4, 5),
        ]);
        assert_eq!(
            two.1,
            Err(
                "replicas disagree: 127.0.0.1:7000 and 127.0.0.1:7001 each say they are primary"
                    .to_string()
            )
        );
    }

    #[test]
    fn table_has_one_line_per_replica_and_spans_the_reason() {
        let (rows, _) = check(vec![
            answer(0, "normal", 3, 1042),
            answer(1, "normal", 3, 1040),
            unreachable(),
        ]);
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "{text}");
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count()),
            "{text}"
        );
        assert!(lines[1].starts_with("| INDEX | ADDRESS "), "{text}");
        assert!(lines[3].contains("| normal | yes     |"), "{text}");
        assert!(lines[3].ends_with("| memory     |   0 |"), "{text}");
        assert!(lines[4].ends_with("| memory     |   2 |"), "{text}");
        assert!(
            lines[5].starts_with("|     2 | 127.0.0.1:7002 | unreachable: cannot connect: "),
            "{text}"
        );
    }

    #[test]
    fn a_long_reason_widens_the_table() {
        let reason = "x".repeat(200);
        let (rows, _) = check(vec![Err(reason.clone())]);
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{text}");
        assert!(lines[3].contains(&reason), "{text}");
    }

    #[test]
    fn json_has_every_key_in_every_row() {
        let (rows, _) = check(vec![answer(0, "normal", 0, 7), unreachable()]);
        let json = serde_json::to_value(json_rows(&rows)).unwrap();
        let array = json.as_array().unwrap();
        let keys =
            |i: usize| -> Vec<String> { array[i].as_object().unwrap().keys().cloned().collect() };
        assert_eq!(keys(0), keys(1));
        assert_eq!(array[0]["status"], "normal");
        assert_eq!(array[0]["is_primary"], true);
        assert_eq!(array[0]["lag"], 0);
        assert_eq!(array[0]["error"], serde_json::Value::Null);
        assert_eq!(array[1]["reachable"], false);
        assert_eq!(array[1]["commit"], serde_json::Value::Null);
        assert!(array[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("unreachable: cannot connect"));
    }
}
