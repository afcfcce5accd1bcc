//! The write stall of a reconfiguration under load, with and without warm-up (paper 7.5):
//! a measurement harness, not a check (ignored by default; perf/reconfig.md has the
//! numbers and the command).
//!
//! Each round starts a fresh 3-replica kv cluster and a pipelined load of puts, then makes
//! two changes: grow 3 → 5 (the old members keep a quorum of the new epoch), then replace
//! every member by 3 new ones (the new epoch's quorum is all new members, so they must
//! hold the start before anything commits). "With warm-up" starts the new members first
//! and lets them catch up as learners; "without", the change is requested as soon as
//! they run (`--lag-max` unbounded), so they fetch the state during the change. The
//! stall of a change is the longest window without any completed put between the
//! request and a second after `vsr admin reconfigure` returned; the same window length
//! measured just before the request, with no change, is the baseline.
//!
//! `cargo test --release --test reconfig_stall -- --ignored --nocapture`
//! (`STALL_ROUNDS`, default 5).

mod common;

use bytes::Bytes;
use common::cluster::{address_list, free_addresses, TestCluster};
use common::wait_for;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vsr::client::{ClientOptions, Completion, PipelinedClient};
use vsr::service::kv::KvOp;

const SESSIONS: usize = 32;
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// The load stops by itself after this long.
const LOAD_DURATION_MAX: Duration = Duration::from_secs(120);
/// The window after the admin command returns that still counts toward the change.
const AFTER: Duration = Duration::from_secs(1);

/// Completion times of puts, shared with the load thread.
type Times = Arc<Mutex<Vec<Instant>>>;

fn start_load(addresses: Vec<SocketAddr>, stop: Arc<AtomicBool>, times: Times) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let options = ClientOptions {
            request_timeout: Duration::from_secs(60),
            ..ClientOptions::default()
        };
        let mut client = PipelinedClient::connect(&addresses, options, SESSIONS, 2).unwrap();
        let started = Instant::now();
        let mut next = 0u64;
        let mut submit = |client: &mut PipelinedClient, session: usize| {
            let key = Bytes::from(format!("key-{}", next % 100_000));
            next += 1;
            client
                .submit(
                    session,
                    KvOp::Put(key, Bytes::from_static(b"value")).encode(),
                )
                .unwrap();
        };
        for session in 0..SESSIONS {
            submit(&mut client, session);
        }
        let mut completions: Vec<Completion> = Vec::new();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < LOAD_DURATION_MAX {
            client
                .poll(&mut completions, Duration::from_millis(10))
                .unwrap();
            let now = Instant::now();
            let mut times = times.lock().unwrap();
            for completion in completions.drain(..) {
                completion.result.expect("a put never fails");
                times.push(now);
                submit(&mut client, completion.session);
            }
        }
    })
}

fn reconfigure(from: &[SocketAddr], to: &[SocketAddr], lag_max: u64) {
    let output = Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args([
            "admin",
            "reconfigure",
            "--cluster",
            &address_list(from),
            "--to",
            &address_list(to),
        ])
        .args(["--lag-max", &lag_max.to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The longest gap between consecutive completions within `[from, to]` (the edges count
/// as completions: a window with none is all gap).
fn longest_gap(times: &Times, from: Instant, to: Instant) -> Duration {
    let times = times.lock().unwrap();
    let mut last = from;
    let mut longest = Duration::ZERO;
    for &time in times.iter().filter(|&&t| t >= from && t <= to) {
        longest = longest.max(time - last);
        last = time;
    }
    longest.max(to.saturating_duration_since(last))
}

/// Starts the learners of `new` not in `old`, waits for warm-up if asked, makes the change
/// and returns (stall, baseline).
fn change(
    cluster: &mut TestCluster,
    times: &Times,
    old: &[SocketAddr],
    new: &[SocketAddr],
    warm: bool,
) -> (Duration, Duration) {
    let learners: Vec<usize> = (0..new.len())
        .filter(|&i| !old.contains(&new[i]))
        .map(|i| cluster.join(new, i, old, &[]))
        .collect();
    for &learner in &learners {
        wait_for("a learner", CHANGE_TIMEOUT, || {
            cluster.stats(learner).is_ok_and(|stats| {
                stats.status() == "joining" && (!warm || stats.u64("commit") > 0)
            })
        });
    }
    if warm {
        // Caught up to within a few hundred ops of a running member.
        let member = (0..learners[0])
            .find(|&i| cluster.stats(i).is_ok())
            .unwrap();
        for &learner in &learners {
            wait_for("warm-up", CHANGE_TIMEOUT, || {
                let (Ok(l), Ok(m)) = (cluster.stats(learner), cluster.stats(member)) else {
                    return false;
                };
                l.u64("commit") + 500 >= m.u64("commit")
            });
        }
    }
    let start = Instant::now();
    // Warm: within about a second of ops at this load (a learner pulls while the cluster
    // commits ~100k puts a second on this machine).
    reconfigure(old, new, if warm { 200_000 } else { u64::MAX });
    let end = Instant::now() + AFTER;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stall = longest_gap(times, start, end);
    let baseline = longest_gap(times, start - (end - start), start);
    (stall, baseline)
}

#[test]
#[ignore = "a measurement: cargo test --release --test reconfig_stall -- --ignored --nocapture"]
fn measure_write_stalls() {
    let rounds: usize = std::env::var("STALL_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    // (scenario, warm) -> stalls and baselines in ms
    let mut results: Vec<(&str, bool, Vec<f64>, Vec<f64>)> = Vec::new();
    for warm in [true, false] {
        let mut grow = (Vec::new(), Vec::new());
        let mut replace = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let mut cluster = TestCluster::start(3, "kv");
            cluster.wait_until_serving(Duration::from_secs(20));
            let first = cluster.addresses().to_vec();
            let stop = Arc::new(AtomicBool::new(false));
            let times: Times = Arc::default();
            let load = start_load(first.clone(), stop.clone(), times.clone());
            // Some state first (and a baseline window's worth of load).
            std::thread::sleep(Duration::from_secs(2));
            let spare = free_addresses(5);
            let five: Vec<SocketAddr> = first.iter().chain(&spare[..2]).copied().collect();
            let (stall, baseline) = change(&mut cluster, &times, &first, &five, warm);
            grow.0.push(stall.as_secs_f64() * 1e3);
            grow.1.push(baseline.as_secs_f64() * 1e3);
            let three = spare[2..].to_vec();
            let (stall, baseline) = change(&mut cluster, &times, &five, &three, warm);
            replace.0.push(stall.as_secs_f64() * 1e3);
            replace.1.push(baseline.as_secs_f64() * 1e3);
            stop.store(true, Ordering::Relaxed);
            load.join().unwrap();
        }
        results.push(("grow 3 -> 5", warm, grow.0, grow.1));
        results.push(("replace all 5 -> 3 new", warm, replace.0, replace.1));
    }
    println!("| change | warm-up | stall p50 (ms) | stall max (ms) | baseline p50 (ms) | baseline max (ms) |");
    println!("|---|---|---:|---:|---:|---:|");
    for (name, warm, mut stalls, mut baselines) in results {
        stalls.sort_by(f64::total_cmp);
        baselines.sort_by(f64::total_cmp);
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            if warm { "yes" } else { "no" },
            stalls[stalls.len() / 2],
            stalls[stalls.len() - 1],
            baselines[baselines.len() / 2],
            baselines[baselines.len() - 1],
        );
    }
}
