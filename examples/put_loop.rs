//! Measures a running kv cluster from one thread: `sessions` sessions each keep one
//! 64-byte put in flight (1 session = a simple blocking client loop), for `seconds`;
//! prints committed ops/s and the put latency percentiles.
//!
//! `cargo run --release --example put_loop -- A0,A1,A2 [sessions] [seconds]`
//! (start the replicas first, e.g. `vsr replica --cluster A0,A1,A2 --replica I`).

use bytes::Bytes;
use std::time::{Duration, Instant};
use vsr::client::{ClientOptions, PipelinedClient};
use vsr::service::kv::KvOp;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let cluster = args
        .get(1)
        .ok_or("usage: put_loop A0,A1,A2 [sessions] [seconds]")?;
    let addresses = cluster
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let sessions: usize = args.get(2).map_or(Ok(1), |s| s.parse())?;
    let seconds: u64 = args.get(3).map_or(Ok(5), |s| s.parse())?;
    let connections = sessions.clamp(1, 4);
    let mut client =
        PipelinedClient::connect(&addresses, ClientOptions::default(), sessions, connections)?;
    let mut latency_us = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let value = Bytes::from(vec![b'v'; 64]);
    let mut started = vec![Instant::now(); sessions];
    let mut completions = Vec::with_capacity(sessions);
    let submit = |client: &mut PipelinedClient, session: usize, n: u64, at: &mut Instant| {
        let key = Bytes::from(format!("key-{session}-{}", n % 1000));
        *at = Instant::now();
        client.submit(session, KvOp::Put(key, value.clone()).encode())
    };
    for (session, at) in started.iter_mut().enumerate() {
        submit(&mut client, session, 0, at)?;
    }
    let (begin, mut ops, mut errors) = (Instant::now(), 0u64, 0u64);
    let end = begin + Duration::from_secs(seconds);
    while Instant::now() < end {
        client.poll(&mut completions, Duration::from_millis(10))?;
        for completion in completions.drain(..) {
            match completion.result {
                Ok(_) => {
                    ops += 1;
                    latency_us.saturating_record(started[completion.session].elapsed().as_micros() as u64);
                }
                Err(_) => errors += 1,
            }
            submit(
                &mut client,
                completion.session,
                ops,
                &mut started[completion.session],
            )?;
        }
    }
    let elapsed = begin.elapsed().as_secs_f64();
    println!(
        "sessions {sessions}: {:.0} ops/s ({ops} ops, {errors} errors in {elapsed:.1} s), latency p50 {} us, p99 {} us, p999 {} us, max {} us",
        ops as f64 / elapsed,
        latency_us.value_at_quantile(0.5),
        latency_us.value_at_quantile(0.99),
        latency_us.value_at_quantile(0.999),
        latency_us.max()
    );
    Ok(())
}
