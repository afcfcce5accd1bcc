//! The library as a log replicator: three in-process replicas of the log service, each
//! with its stream of committed operations, and the status API.

mod common;

use common::cluster::free_addresses;
use std::time::{Duration, Instant};
use vsr::bytes::Bytes;
use vsr::client::{Client, ClientOptions};
use vsr::runtime::{CommittedOp, ReplicaServer, ServerError, ServerOptions};
use vsr::Status;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn every_replica_streams_the_same_committed_operations_in_order() {
    let addresses = free_addresses(3);
    let (servers, streams): (Vec<_>, Vec<_>) = (0..3u8)
        .map(|i| ReplicaServer::spawn_log(ServerOptions::new(addresses.clone(), i, 11)).unwrap())
        .unzip();
    let options = ClientOptions {
        cluster_id: 11,
        ..ClientOptions::default()
    };
    let mut client = Client::connect(&addresses, options).unwrap();
    for n in 0..50u32 {
        client.call(Bytes::from(format!("op {n}"))).unwrap();
    }
    let mut sequences: Vec<Vec<CommittedOp>> = Vec::new();
    for stream in &streams {
        let mut ops = Vec::new();
        let deadline = Instant::now() + 20 * SECOND;
        while ops.len() < 50 && Instant::now() < deadline {
            ops.extend(stream.next_timeout(SECOND));
        }
        assert_eq!(ops.len(), 50, "{ops:?}");
        assert!(stream.try_next().is_none(), "nothing more was committed");
        sequences.push(ops);
    }
    assert_eq!(sequences[0], sequences[1]);
    assert_eq!(sequences[0], sequences[2]);
    let ours: Vec<&CommittedOp> = sequences[0]
        .iter()
        .filter(|op| !op.operation.is_empty())
        .collect();
    for (n, op) in ours.iter().enumerate() {
        assert_eq!(op.operation, Bytes::from(format!("op {n}")));
    }
    let ops: Vec<u64> = sequences[0].iter().map(|op| op.op).collect();
    // In order; the session's registration took an op of its own, not streamed.
    assert!(ops.windows(2).all(|pair| pair[1] > pair[0]), "{ops:?}");
    assert_eq!(ops[0], 2, "op 1 registered the client's session");
    let timestamps: Vec<u64> = sequences[0].iter().map(|op| op.timestamp).collect();
    assert!(timestamps.windows(2).all(|pair| pair[1] >= pair[0]));

    let statuses: Vec<_> = servers.iter().map(ReplicaServer::status).collect();
    assert_eq!(
        statuses.iter().filter(|s| s.is_primary).count(),
        1,
        "{statuses:?}"
    );
    // The status is stored at the end of the loop iteration that streamed the ops.
    for server in &servers {
        common::wait_for("the status to show the commit", 10 * SECOND, || {
            let status = server.status();
            status.status == Status::Normal && status.commit >= *ops.last().unwrap()
        });
    }
    for server in servers {
        server.shutdown().unwrap();
    }
}

#[test]
fn port_zero_is_only_for_a_single_replica_cluster() {
    let mut addresses = free_addresses(3);
    addresses[1].set_port(0);
    let refused = ReplicaServer::spawn_log(ServerOptions::new(addresses, 0, 1));
    assert!(
        matches!(refused, Err(ServerError::PortZero { replica: 1 })),
        "{refused:?}"
    );
}
