//! The protocol core alone: three replicas in one thread passing messages in memory, the
//! null service, 64-byte operations from many sessions. Reports committed ops/s
//! (criterion's elements/s): every op is prepared, acknowledged, committed and executed
//! on all three replicas, and answered by the primary.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vsr::client::ClientSession;
use vsr::protocol::{Body, Message, Operation, Request};
use vsr::service::Null;
use vsr::testing::MemoryCluster;
use vsr::Config;

const PAYLOAD_BYTES: usize = 64;

struct Workload {
    cluster: MemoryCluster<Null>,
    /// Per session: client id, session number, next request number.
    sessions: Vec<(u64, u64, u32)>,
    body: Bytes,
}

impl Workload {
    fn new(sessions: usize) -> Workload {
        let mut config = Config::new(1, 3);
        config.clients_max = sessions as u32;
        config.batch_entries_max = 8192;
        config.pipeline_prepares_max = 16;
        let mut cluster = MemoryCluster::new(&config, |_| Null);
        let sessions = (1..=sessions as u64)
            .map(|client| {
                let mut session = ClientSession::new(client, 3, 1000);
                cluster.register(&mut session);
                (client, session.session(), 1)
            })
            .collect();
        Workload {
            cluster,
            sessions,
            body: Bytes::from(vec![7u8; PAYLOAD_BYTES]),
        }
    }

    /// One request from every session, run to completion; returns replies received.
    fn round(&mut self) -> usize {
        for (client, session, request) in &mut self.sessions {
            let message = Message {
                epoch: 0,
                view: 0,
                replica: 0,
                body: Body::Request(Request {
                    client: *client,
                    session: *session,
                    request: *request,
                    operation: Operation::Apply,
                    body: self.body.clone(),
                }),
            };
            *request += 1;
            self.cluster.deliver(0, message);
        }
        self.cluster.flush();
        self.cluster.run(usize::MAX);
        let replies = self.cluster.replies.len();
        self.cluster.replies.clear();
        replies
    }
}

fn bench_core(c: &mut Criterion) {
    let mut group = c.benchmark_group("replica_core");
    for sessions in [64usize, 1024, 4096] {
        let mut workload = Workload::new(sessions);
        group.throughput(Throughput::Elements(sessions as u64));
        group.bench_function(format!("{sessions}_sessions_64B"), |b| {
            b.iter(|| assert_eq!(workload.round(), sessions));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_core);
criterion_main!(benches);
