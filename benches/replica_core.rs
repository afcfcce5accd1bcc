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

/// The client table alone, as the primary uses it per op: the request's probe
/// (`get_mut`, noting the route) and, at execution, the admitting probe with the reply's
/// record, over sessions visited in a scattered order (clients' ids are random, and a
/// batch's requests come from sessions in no particular order).
fn bench_client_table(c: &mut Criterion) {
    use vsr::protocol::client_table::{ClientTable, RouteToken};
    let mut group = c.benchmark_group("client_table");
    for sessions in [1024usize, 4096] {
        let mut table = ClientTable::new(sessions);
        // Ids as clients draw them (random), an order that is not the registration order.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut clients: Vec<(u64, u64, u32)> = (0..sessions as u64)
            .map(|op| {
                let client = next();
                table.register(client, op + 1, 1);
                (client, op + 1, 0)
            })
            .collect();
        for i in (1..clients.len()).rev() {
            clients.swap(i, next() as usize % (i + 1));
        }
        let reply = Bytes::from(vec![7u8; PAYLOAD_BYTES]);
        let mut op = sessions as u64;
        group.throughput(Throughput::Elements(sessions as u64));
        group.bench_function(format!("{sessions}_sessions"), |b| {
            b.iter(|| {
                for (client, session, request) in &mut clients {
                    *request += 1;
                    let entry = table.get_mut(*client).expect("registered");
                    assert_eq!(entry.session, *session);
                    entry.set_route(*request, 0, Some(RouteToken(*client)));
                }
                for &(client, session, request) in &clients {
                    op += 1;
                    let entry = table
                        .admit_mut(client, session, request)
                        .expect("next request");
                    entry.record(request, op, reply.clone());
                    assert_eq!(entry.route_of(request, 0), Some(RouteToken(client)));
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_core, bench_client_table);
criterion_main!(benches);
