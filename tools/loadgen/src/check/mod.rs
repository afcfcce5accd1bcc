//! `--check`: a put/get/cas workload on a few keys of the kv service, every operation's
//! invocation and completion time recorded, then each key's history checked for
//! linearizability (keys are independent registers, so per-key checking is exact).
//!
//! Values are unique per put/cas (`s<session>-<n>`), so a read names the write it saw.
//! An operation that failed (timeout, eviction, disconnection) or was still in flight at
//! the end has an unknown outcome: it may have executed once, or not at all.

pub mod linearizability;

use crate::cli::LoadArgs;
use crate::reply::{self, Expect};
use crate::stop;
use crate::system::{System, Target};
use crate::transport::Done;
use crate::workload::Rng;
use bytes::Bytes;
use linearizability::{Input, Operation, Output, Value, Verdict};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vsr::service::kv::{KvOp, KvResult};

/// One recorded operation, before interning.
#[derive(Clone, Debug)]
struct Record {
    session: usize,
    key: usize,
    op: KvOp,
    call_ns: u64,
    return_ns: Option<u64>,
    result: Option<KvResult>,
}

/// Chooses the next operation: 40% put, 30% get, 30% cas from a recently seen value.
struct Generator {
    rng: Rng,
    keys: Vec<Bytes>,
    /// Per key, the last value any reply showed (a plausible `old` for cas).
    last_seen: Vec<Option<Bytes>>,
    counter: u64,
}

impl Generator {
    fn next(&mut self, session: usize) -> (usize, KvOp) {
        let key = self.rng.below(self.keys.len() as u64) as usize;
        self.counter += 1;
        let fresh = Bytes::from(format!("s{session}-{}", self.counter));
        let op = match self.rng.below(10) {
            0..=3 => KvOp::Put(self.keys[key].clone(), fresh),
            4..=6 => KvOp::Get(self.keys[key].clone()),
            _ => KvOp::Cas(self.keys[key].clone(), self.last_seen[key].clone(), fresh),
        };
        (key, op)
    }

    fn observe(&mut self, key: usize, op: &KvOp, result: &KvResult) {
        match (op, result) {
            (KvOp::Put(_, value), KvResult::Ok) | (KvOp::Cas(_, _, value), KvResult::Ok) => {
                self.last_seen[key] = Some(value.clone());
            }
            (_, KvResult::Value(value)) => self.last_seen[key] = Some(value.clone()),
            (_, KvResult::Nil) | (_, KvResult::CasFail(None)) => self.last_seen[key] = None,
            (_, KvResult::CasFail(Some(value))) => self.last_seen[key] = Some(value.clone()),
            _ => {}
        }
    }
}

/// Runs the check and prints the verdict; exit code 0 only if every key is linearizable.
pub fn run(args: &LoadArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.service == crate::cli::ServiceKind::Kv,
        "--check needs the kv service: add --service kv"
    );
    let mut target = Target::start(System::Vsr, args)?;
    let records = record_history(&target, args)?;
    let code = report(&records, args.check_keys() as usize, args.check_states_max);
    // A violation or an undecided check keeps the replicas' logs.
    if code == ExitCode::SUCCESS {
        target.succeeded();
    }
    Ok(code)
}

fn record_history(target: &Target, args: &LoadArgs) -> anyhow::Result<Vec<Record>> {
    let sessions = args.sessions();
    let mut transport = target.connect(sessions, args.connections.min(sessions))?;
    // Key names new to this run, so every key starts absent even on a cluster that served
    // earlier runs (`--cluster`): the checker's initial state is "absent".
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u32);
    let keys: Vec<Bytes> = (0..args.check_keys())
        .map(|k| Bytes::from(format!("check-{run:08x}-{k}")))
        .collect();
    let mut generator = Generator {
        rng: Rng::new(0xC4EC),
        last_seen: vec![None; keys.len()],
        keys,
        counter: 0,
    };
    let start = Instant::now();
    let end = start + args.duration;
    let mut records: Vec<Record> = Vec::new();
    let mut in_flight: Vec<Option<usize>> = vec![None; sessions];
    let mut done: Vec<Done> = Vec::new();
    let submit_next = |session: usize, generator: &mut Generator, records: &mut Vec<Record>| {
        let (key, op) = generator.next(session);
        let record = Record {
            session,
            key,
            op: op.clone(),
            call_ns: 0,
            return_ns: None,
            result: None,
        };
        records.push(record);
        (records.len() - 1, op.encode())
    };
    for (session, slot) in in_flight.iter_mut().enumerate() {
        if records.len() >= args.check_ops_max {
            break;
        }
        let (index, bytes) = submit_next(session, &mut generator, &mut records);
        records[index].call_ns = start.elapsed().as_nanos() as u64;
        transport.submit(session, bytes)?;
        *slot = Some(index);
    }
    while in_flight.iter().any(Option::is_some) && Instant::now() < end && !stop::requested() {
        transport.poll(&mut done, Duration::from_millis(50))?;
        let now_ns = start.elapsed().as_nanos() as u64;
        for completion in done.drain(..) {
            let index = in_flight[completion.session]
                .take()
                .expect("a completion for an idle session");
            let record = &mut records[index];
            if let Ok(bytes) = &completion.result {
                // An empty or foreign reply: the kv checks name the service that sent it.
                let result = KvResult::decode(bytes)
                    .filter(|result| *result != KvResult::Invalid)
                    .ok_or_else(|| {
                        let why = reply::check(Expect::KvPut, bytes)
                            .expect_err("no put may get an empty, foreign or invalid reply");
                        anyhow::anyhow!("wrong reply: {why}; --check needs a kv cluster")
                    })?;
                record.return_ns = Some(now_ns);
                generator.observe(record.key, &record.op.clone(), &result);
                records[index].result = Some(result);
            }
            if records.len() < args.check_ops_max && Instant::now() < end {
                let (next, bytes) = submit_next(completion.session, &mut generator, &mut records);
                records[next].call_ns = start.elapsed().as_nanos() as u64;
                transport.submit(completion.session, bytes)?;
                in_flight[completion.session] = Some(next);
            }
        }
    }
    Ok(records)
}

/// Interns a key's values and converts its records to the checker's operations.
fn to_operations(records: &[&Record]) -> Result<Vec<Operation>, String> {
    let mut ids: HashMap<Bytes, Value> = HashMap::new();
    let mut intern = |value: &Bytes| {
        let next = ids.len() as Value;
        *ids.entry(value.clone()).or_insert(next)
    };
    let mut operations = Vec::with_capacity(records.len());
    for record in records {
        let input = match &record.op {
            KvOp::Put(_, value) => Input::Put(intern(value)),
            KvOp::Get(_) => Input::Get,
            KvOp::Delete(_) => Input::Delete,
            KvOp::Cas(_, old, new) => Input::Cas {
                old: old.as_ref().map(&mut intern),
                new: intern(new),
            },
        };
        let output = match &record.result {
            None => None,
            Some(KvResult::Ok) => Some(Output::Ok),
            Some(KvResult::Value(value)) => Some(Output::Read(Some(intern(value)))),
            Some(KvResult::Nil) => Some(Output::Read(None)),
            Some(KvResult::CasFail(seen)) => Some(Output::CasFail(seen.as_ref().map(&mut intern))),
            Some(KvResult::Invalid) => {
                return Err(format!("the service called {:?} invalid", record.op))
            }
        };
        operations.push(Operation {
            session: record.session,
            call_ns: record.call_ns,
            return_ns: record.return_ns,
            input,
            output,
        });
    }
    Ok(operations)
}

fn describe(record: &Record) -> String {
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let op = match &record.op {
        KvOp::Put(k, v) => format!("put {} {}", text(k), text(v)),
        KvOp::Get(k) => format!("get {}", text(k)),
        KvOp::Delete(k) => format!("delete {}", text(k)),
        KvOp::Cas(k, old, new) => format!(
            "cas {} {} {}",
            text(k),
            old.as_ref().map_or("nil".into(), text),
            text(new)
        ),
    };
    let result = match &record.result {
        None => "unknown (no reply)".to_string(),
        Some(KvResult::Ok) => "ok".into(),
        Some(KvResult::Value(v)) => format!("value {}", text(v)),
        Some(KvResult::Nil) => "nil".into(),
        Some(KvResult::CasFail(v)) => format!("cas-fail {}", v.as_ref().map_or("nil".into(), text)),
        Some(KvResult::Invalid) => "invalid".into(),
    };
    let ret = record
        .return_ns
        .map_or("?".to_string(), |ns| format!("{:.6}", ns as f64 / 1e9));
    format!(
        "session {:>3} [{:.6}s .. {ret}s] {op} -> {result}",
        record.session,
        record.call_ns as f64 / 1e9
    )
}

fn report(records: &[Record], keys: usize, states_max: u64) -> ExitCode {
    let unknown = records.iter().filter(|r| r.result.is_none()).count();
    println!(
        "check: {} operations on {keys} keys ({unknown} with unknown outcome)",
        records.len()
    );
    let mut violations = 0;
    let mut undecided = 0;
    for key in 0..keys {
        let of_key: Vec<&Record> = records.iter().filter(|r| r.key == key).collect();
        let operations = match to_operations(&of_key) {
            Ok(operations) => operations,
            Err(error) => {
                println!("key check-{key}: NOT linearizable: {error}");
                violations += 1;
                continue;
            }
        };
        // Every key is new to this run (see `record_history`), so it starts absent.
        match linearizability::check(&operations, None, states_max) {
            Verdict::Linearizable => println!(
                "key check-{key}: linearizable ({} operations)",
                operations.len()
            ),
            Verdict::Unknown { states } => {
                undecided += 1;
                println!("key check-{key}: unknown: search bound reached after {states} states");
            }
            Verdict::Violation {
                stuck,
                candidates,
                prefix,
            } => {
                violations += 1;
                println!("key check-{key}: NOT linearizable");
                println!("  cannot be ordered: {}", describe(of_key[stuck]));
                println!("  concurrent with it (tried before its completion):");
                for &c in candidates.iter().filter(|&&c| c != stuck) {
                    println!("    {}", describe(of_key[c]));
                }
                println!(
                    "  end of the longest legal order found ({} operations):",
                    prefix.len()
                );
                for &p in &prefix[prefix.len().saturating_sub(5)..] {
                    println!("    {}", describe(of_key[p]));
                }
            }
        }
    }
    if violations > 0 {
        println!("verdict: NOT linearizable ({violations} of {keys} keys)");
        ExitCode::from(1)
    } else if undecided > 0 {
        println!(
            "verdict: unknown ({undecided} keys hit the search bound: use fewer --sessions, \
             more --check-keys, or a larger --check-states-max)"
        );
        ExitCode::from(2)
    } else if stop::requested() {
        println!("verdict: linearizable (interrupted run)");
        ExitCode::from(130)
    } else {
        println!("verdict: linearizable");
        ExitCode::SUCCESS
    }
}
