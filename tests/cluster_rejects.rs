//! Bad input on one connection closes that connection only, with a logged reason, and the
//! cluster keeps serving: garbage bytes, a corrupted checksum, another cluster's frame, and a
//! client connection trying to speak as a replica.

mod common;

use bytes::BytesMut;
use common::client::TestClient;
use common::cluster::TestCluster;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use vsr::protocol::{Body, Commit, Message};
use vsr::wire::{self, Peer};

const SECOND: Duration = Duration::from_secs(1);

/// Sends `bytes` on a fresh connection and expects the replica to close it.
fn expect_closed(address: SocketAddr, bytes: &[u8]) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.write_all(bytes).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + 10 * SECOND;
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Ok(_) | Err(_) => assert!(
                Instant::now() < deadline,
                "the replica kept the bad connection open"
            ),
        }
    }
}

#[test]
fn bad_connections_are_closed_and_the_cluster_keeps_serving() {
    check_rejects(&[]);
}

/// The same when client connections move to I/O threads after their hello.
#[test]
fn bad_connections_are_closed_with_io_threads() {
    check_rejects(&["--io-threads", "2"]);
}

fn check_rejects(extra: &[&str]) {
    let mut cluster = TestCluster::start_with(3, "kv", extra);
    cluster.wait_until_serving(30 * SECOND);
    let primary = cluster.primary().expect("one primary");
    let address = cluster.addresses()[primary];
    let cluster_id = cluster.cluster;
    let mut client = TestClient::connect(cluster.addresses(), cluster_id, 10 * SECOND).unwrap();
    client.put(b"before", b"1", 10 * SECOND).unwrap();

    // Garbage: the header checksum fails.
    let garbage: Vec<u8> = (0..300u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    expect_closed(address, &garbage);

    // A well-formed hello with one header byte flipped.
    let mut frame = BytesMut::new();
    common::encode_hello(Peer::Client(42), cluster_id, &mut frame);
    frame[20] ^= 0x40;
    expect_closed(address, &frame);

    // A hello from another cluster.
    let mut frame = BytesMut::new();
    common::encode_hello(Peer::Client(42), cluster_id + 7, &mut frame);
    expect_closed(address, &frame);

    // A client that then speaks as a replica.
    let mut frames = BytesMut::new();
    common::encode_hello(Peer::Client(42), cluster_id, &mut frames);
    let forged = Message {
        epoch: 0,
        view: 0,
        replica: 1,
        body: Body::Commit(Commit {
            commit: 1_000_000,
            actives_commit: 0,
            stamp: 0,
        }),
    };
    wire::encode(&forged, cluster_id, &mut frames);
    expect_closed(address, &frames);

    // A hello claiming this replica's own index.
    let mut frame = BytesMut::new();
    common::encode_hello(Peer::Replica(primary as u64), cluster_id, &mut frame);
    expect_closed(address, &frame);

    let log = cluster.log(primary);
    for reason in [
        "decode error: header checksum mismatch",
        "cluster id differs",
        "a client connection sent a replica message (commit)",
        "hello claims to be this replica",
    ] {
        assert!(
            log.contains(reason),
            "no {reason:?} in the primary's log:\n{log}"
        );
    }

    // The cluster still serves, in the same view, and the forged commit changed nothing.
    client.put(b"after", b"2", 10 * SECOND).unwrap();
    assert_eq!(
        client.get(b"before", 10 * SECOND).unwrap().as_deref(),
        Some(&b"1"[..])
    );
    let stats = cluster.stats(primary).unwrap();
    assert_eq!(stats.status(), "normal");
    assert_eq!(stats.u64("view_changes"), 0, "{}", stats.json);
    assert!(stats.u64("connections_rejected") >= 5, "{}", stats.json);
    assert!(stats.u64("commit") < 1_000_000);
}
