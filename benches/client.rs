//! The client path in memory, no sockets: `ClientSession::submit`, encode the request,
//! (the replica's part: encode its reply), decode the reply, `ClientSession::on_message`.
//! Reported per operation, for a 64-byte operation.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
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
criterion_main!(benches);
