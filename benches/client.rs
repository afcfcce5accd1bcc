//! The client path in memory, no sockets: `ClientSession::submit`, encode the request,
//! (the replica's part: encode its reply), decode the reply, `ClientSession::on_message`.
//! Reported per operation, for a 64-byte operation.
//!
//! With `VSR_BENCH_CLUSTER=A0,A1,A2` set, it instead drives that running kv cluster with
//! 64-byte puts for `VSR_BENCH_SECONDS` (default 5) and prints ops/s and latency
//! percentiles: a `Client::call` loop when `VSR_BENCH_SESSIONS` is 1 (the default), else a
//! `PipelinedClient` with that many sessions over `VSR_BENCH_CONNECTIONS` (default 4).

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, Criterion, Throughput};
use std::hint::black_box;
use vsr::client::ClientSession;
use vsr::protocol::{Body, Message, Reply, ReplyStatus};
use vsr::wire::{self, Frame};

const CLUSTER: u128 = 1;
const MESSAGE_BYTES_MAX: u32 = 1 << 20;

fn reply(client: u64, session: u64, request: u32, result: &Bytes) -> Message {
    Message {
        epoch: 0,
        view: 0,
        replica: 0,
        body: Body::Reply(Reply {
            client,
            session,
            request,
            op: request as u64,
            status: ReplyStatus::Ok,
            result: result.clone(),
        }),
    }
}

fn registered_session() -> ClientSession {
    let mut session = ClientSession::new(42, 3, 100);
    session.register();
    let registered = reply(42, 1, 0, &Bytes::new());
    assert!(session.on_message(&registered).is_some());
    assert!(session.is_registered());
    session
}

fn client_round_trip(c: &mut Criterion) {
    let operation = Bytes::from(vec![7u8; 64]);
    let result = Bytes::from_static(b"\x01");
    let mut group = c.benchmark_group("client");
    group.throughput(Throughput::Elements(1));
    group.bench_function("session_submit_encode_decode_complete", |b| {
        let mut session = registered_session();
        let mut requests = BytesMut::with_capacity(64 << 10);
        let mut replies = BytesMut::with_capacity(64 << 10);
        b.iter(|| {
            let (request, _target, message) = session.submit(operation.clone()).unwrap();
            wire::encode(&message, CLUSTER, &mut requests);
            requests.clear();
            wire::encode(&reply(42, 1, request, &result), CLUSTER, &mut replies);
            let Ok(Some(Frame::Message(message))) =
                wire::decode(&mut replies, CLUSTER, MESSAGE_BYTES_MAX)
            else {
                panic!("the reply decodes");
            };
            black_box(
                session
                    .on_message(&message)
                    .expect("the reply completes the request"),
            );
        });
    });
    group.finish();
}

criterion_group!(benches, client_round_trip);

fn main() {
    match std::env::var("VSR_BENCH_CLUSTER") {
        Ok(cluster) => loopback::run(&cluster),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}

/// Throughput and latency against a running cluster (not run by default).
mod loopback {
    use bytes::Bytes;
    use hdrhistogram::Histogram;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};
    use vsr::client::{Client, ClientOptions, Completion, PipelinedClient};
    use vsr::service::kv::KvOp;

    fn env_or(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    fn put(session: usize, sequence: u64) -> Bytes {
        let key = Bytes::from(format!("key-{session}"));
        let mut value = [b'v'; 64];
        value[..8].copy_from_slice(&sequence.to_le_bytes());
        KvOp::Put(key, Bytes::copy_from_slice(&value)).encode()
    }

    pub fn run(cluster: &str) {
        let addresses: Vec<SocketAddr> = cluster
            .split(',')
            .map(|a| a.parse().expect("an address"))
            .collect();
        let seconds = env_or("VSR_BENCH_SECONDS", 5);
        let sessions = env_or("VSR_BENCH_SESSIONS", 1) as usize;
        let connections = env_or("VSR_BENCH_CONNECTIONS", 4) as usize;
        let duration = Duration::from_secs(seconds);
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let options = ClientOptions::default();
        let (ops, errors, elapsed) = if sessions == 1 {
            closed_loop_call(&addresses, options, duration, &mut histogram)
        } else {
            closed_loop_pipelined(
                &addresses,
                options,
                sessions,
                connections,
                duration,
                &mut histogram,
            )
        };
        let us = |q: f64| histogram.value_at_quantile(q);
        println!(
            "sessions={sessions} connections={} ops={ops} errors={errors} seconds={:.2} ops_per_sec={:.0} \
             latency_us p50={} p90={} p99={} p999={} max={}",
            if sessions == 1 { 1 } else { connections },
            elapsed.as_secs_f64(),
            ops as f64 / elapsed.as_secs_f64(),
            us(0.5),
            us(0.9),
            us(0.99),
            us(0.999),
            histogram.max()
        );
    }

    fn closed_loop_call(
        addresses: &[SocketAddr],
        options: ClientOptions,
        duration: Duration,
        histogram: &mut Histogram<u64>,
    ) -> (u64, u64, Duration) {
        let mut client = Client::connect(addresses, options).expect("connect");
        let (mut ops, mut errors) = (0, 0);
        let start = Instant::now();
        while start.elapsed() < duration {
            let sent = Instant::now();
            match client.call(put(0, ops)) {
                Ok(_) => {
                    histogram
                        .record(sent.elapsed().as_micros().max(1) as u64)
                        .unwrap();
                    ops += 1;
                }
                Err(_) => errors += 1,
            }
        }
        (ops, errors, start.elapsed())
    }

    fn closed_loop_pipelined(
        addresses: &[SocketAddr],
        options: ClientOptions,
        sessions: usize,
        connections: usize,
        duration: Duration,
        histogram: &mut Histogram<u64>,
    ) -> (u64, u64, Duration) {
        let mut client =
            PipelinedClient::connect(addresses, options, sessions, connections).expect("connect");
        let mut sent = vec![Instant::now(); sessions];
        let (mut ops, mut errors) = (0u64, 0u64);
        let start = Instant::now();
        for (session, sent) in sent.iter_mut().enumerate() {
            *sent = Instant::now();
            client.submit(session, put(session, 0)).unwrap();
        }
        let mut completions: Vec<Completion> = Vec::with_capacity(sessions);
        let mut outstanding = sessions;
        while outstanding > 0 {
            client
                .poll(&mut completions, Duration::from_millis(100))
                .expect("poll");
            let running = start.elapsed() < duration;
            let now = Instant::now();
            for completion in completions.drain(..) {
                match completion.result {
                    Ok(_) => {
                        histogram
                            .record(
                                now.duration_since(sent[completion.session])
                                    .as_micros()
                                    .max(1) as u64,
                            )
                            .unwrap();
                        ops += 1;
                    }
                    Err(_) => errors += 1,
                }
                if running {
                    sent[completion.session] = now;
                    client
                        .submit(completion.session, put(completion.session, ops))
                        .unwrap();
                } else {
                    outstanding -= 1;
                }
            }
        }
        (ops, errors, start.elapsed())
    }
}
