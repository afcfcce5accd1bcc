//! `vsr kv`: a line-oriented client of the kv service.
//!
//! Contract: commands on stdin, one per line
//! (`put K V`, `get K`, `delete K`, `cas K OLD NEW`, where `cas K nil NEW` succeeds only if
//! K is absent); one answer line per command (`ok`, `value V`, `nil`, `cas-fail V`,
//! `cas-fail nil`, `error TEXT`), flushed as soon as it is known. Blank lines are skipped;
//! keys and values are single words (a line is split on whitespace), printed back as UTF-8
//! (lossily).
//! stdout carries answers only; logs go to stderr. With a command in the arguments, runs
//! it alone and exits non-zero if its answer is an error.
//!
//! `get` is a read-only query; `--reads` says how it is served: `strict` (the default)
//! orders it through the log (linearizable), `backup` asks any replica that has executed
//! every op this session has seen (paper 6.3.2: reads its own writes, never goes back in
//! time, may be stale). Writes always go through the log.

use anyhow::Context;
use bytes::Bytes;
use std::io::{BufRead, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;
use vsr::client::{Client, ClientError, ClientOptions, ReadMode};
use vsr::protocol::ReplicaSet;
use vsr::service::kv::{KvOp, KvResult};

/// Arguments of `vsr kv`.
#[derive(clap::Args)]
pub struct Args {
    /// The replicas' addresses, comma-separated, in configuration order.
    #[arg(long, value_delimiter = ',', required = true)]
    cluster: Vec<String>,
    /// The cluster id (must match the replicas').
    #[arg(long, default_value_t = 0)]
    cluster_id: u128,
    /// The cluster's shared secret, when the replicas run with `--cluster-key`.
    #[arg(long, value_name = "FILE")]
    cluster_key: Option<std::path::PathBuf>,
    /// Indexes of the members that are witnesses (the replicas' `--witnesses`): never
    /// primary and never answering reads, so nothing is sent there.
    #[arg(long, value_delimiter = ',', value_name = "I,J")]
    witnesses: Vec<u8>,
    /// How `get` reads: `strict` (through the log, linearizable), `lease` (at the primary
    /// from its state while it holds a lease from f backups, through the log otherwise:
    /// linearizable) or `backup` (at any replica that has executed what this session has
    /// seen: causal, may be stale).
    #[arg(long, default_value_t = ReadMode::Strict)]
    reads: ReadMode,
    /// Deadline of one command, retries included, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// One command to run instead of reading stdin, e.g. `put K V`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let addresses = resolve(&args.cluster)?;
    let options = ClientOptions {
        cluster_id: args.cluster_id,
        request_timeout: Duration::from_millis(args.timeout_ms),
        cluster_key: crate::replica::load_key(args.cluster_key.as_deref())?,
        witnesses: args
            .witnesses
            .iter()
            .fold(ReplicaSet::default(), |mut set, &w| {
                set.insert(w);
                set
            }),
        ..ClientOptions::default()
    };
    let mut session = Session {
        addresses,
        options,
        reads: args.reads,
        client: None,
        refused: false,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !args.command.is_empty() {
        let answer = session.execute(&args.command.join(" "));
        writeln!(out, "{answer}")?;
        out.flush()?;
        let failed = answer.starts_with("error");
        return Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let answer = session.execute(&line);
        writeln!(out, "{answer}")?;
        out.flush()?;
        if session.refused {
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn resolve(cluster: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    cluster
        .iter()
        .map(|address| {
            address
                .to_socket_addrs()
                .with_context(|| format!("resolving {address}"))?
                .next()
                .with_context(|| format!("{address} resolves to no address"))
        })
        .collect()
}

/// A connection to the cluster, opened on the first command and again after a failure to
/// open, so that every command gets exactly one answer line.
struct Session {
    addresses: Vec<SocketAddr>,
    options: ClientOptions,
    reads: ReadMode,
    client: Option<Client>,
    /// The cluster refused this client's configuration: every later command would fail.
    refused: bool,
}

impl Session {
    /// Runs one command line; returns its answer line.
    fn execute(&mut self, line: &str) -> String {
        let op = match parse(line) {
            Ok(op) => op,
            Err(error) => return format!("error {error}"),
        };
        if self.client.is_none() {
            match Client::connect(&self.addresses, self.options.clone()) {
                Ok(client) => self.client = Some(client),
                Err(error @ ClientError::Refused(_)) => {
                    // Nothing later can succeed: say why once, on stderr too, and stop.
                    eprintln!("error: {error}");
                    self.refused = true;
                    return format!("error {error}");
                }
                Err(error) => return format!("error {error}"),
            }
        }
        let client = self.client.as_mut().expect("connected above");
        let answer = match op {
            KvOp::Get(_) => client.read(op.encode(), self.reads),
            _ => client.call(op.encode()),
        };
        match answer {
            Ok(result) => match KvResult::decode(&result) {
                Some(result) => format_result(&result),
                None => "error undecodable result from the service".to_string(),
            },
            Err(error) => format!("error {error}"),
        }
    }
}

/// Parses one command line.
fn parse(line: &str) -> Result<KvOp, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let bytes = |word: &str| Bytes::copy_from_slice(word.as_bytes());
    match words.as_slice() {
        ["put", key, value] => Ok(KvOp::Put(bytes(key), bytes(value))),
        ["get", key] => Ok(KvOp::Get(bytes(key))),
        ["delete", key] => Ok(KvOp::Delete(bytes(key))),
        ["cas", key, "nil", new] => Ok(KvOp::Cas(bytes(key), None, bytes(new))),
        ["cas", key, old, new] => Ok(KvOp::Cas(bytes(key), Some(bytes(old)), bytes(new))),
        [command @ ("put" | "get" | "delete" | "cas"), ..] => {
            let usage = match *command {
                "put" => "put K V",
                "get" => "get K",
                "delete" => "delete K",
                _ => "cas K OLD NEW",
            };
            Err(format!("wrong number of arguments: usage: {usage}"))
        }
        [command, ..] => Err(format!(
            "unknown command {command:?}: expected put, get, delete or cas"
        )),
        [] => Err("empty command".to_string()),
    }
}

/// The answer line for a result.
fn format_result(result: &KvResult) -> String {
    let text = |value: &Bytes| String::from_utf8_lossy(value).into_owned();
    match result {
        KvResult::Ok => "ok".to_string(),
        KvResult::Value(value) => format!("value {}", text(value)),
        KvResult::Nil => "nil".to_string(),
        KvResult::CasFail(Some(value)) => format!("cas-fail {}", text(value)),
        KvResult::CasFail(None) => "cas-fail nil".to_string(),
        KvResult::Invalid => "error the service could not decode the operation".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn check(line: &str, expected: Result<KvOp, &str>) {
        let parsed = parse(line);
        match expected {
            Ok(op) => assert_eq!(parsed, Ok(op), "{line:?}"),
            Err(prefix) => {
                let error = parsed.expect_err(line);
                assert!(error.starts_with(prefix), "{line:?}: {error}");
            }
        }
    }

    #[test]
    fn commands_parse() {
        check("put k v", Ok(KvOp::Put(b("k"), b("v"))));
        check("  get   k ", Ok(KvOp::Get(b("k"))));
        check("delete k", Ok(KvOp::Delete(b("k"))));
        check("cas k nil n", Ok(KvOp::Cas(b("k"), None, b("n"))));
        check("cas k o n", Ok(KvOp::Cas(b("k"), Some(b("o")), b("n"))));
        check("put k", Err("wrong number of arguments: usage: put K V"));
        check("get", Err("wrong number of arguments"));
        check("cas k o", Err("wrong number of arguments"));
        check("frobnicate k", Err("unknown command \"frobnicate\""));
        check("PUT k v", Err("unknown command"));
    }

    #[test]
    fn results_format() {
        assert_eq!(format_result(&KvResult::Ok), "ok");
        assert_eq!(format_result(&KvResult::Value(b("v"))), "value v");
        assert_eq!(format_result(&KvResult::Nil), "nil");
        assert_eq!(
            format_result(&KvResult::CasFail(Some(b("v")))),
            "cas-fail v"
        );
        assert_eq!(format_result(&KvResult::CasFail(None)), "cas-fail nil");
        assert!(format_result(&KvResult::Invalid).starts_with("error "));
    }
}
