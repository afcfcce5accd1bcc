//! Normal operation through the fault-free in-memory cluster: requests commit on every
//! replica, in order, exactly once, and the primary answers duplicates from its table.

use bytes::Bytes;
use vsr::client::{ClientSession, Outcome};
use vsr::service::kv::{Kv, KvOp, KvResult};
use vsr::testing::MemoryCluster;
use vsr::Config;

fn config() -> Config {
    let mut config = Config::new(1, 3);
    config.checkpoint_interval_ops = 16;
    config.log_tail_ops = 4;
    config
}

fn put(key: &str, value: &str) -> Bytes {
    KvOp::Put(
        Bytes::copy_from_slice(key.as_bytes()),
        Bytes::copy_from_slice(value.as_bytes()),
    )
    .encode()
}

#[test]
fn requests_commit_everywhere_and_checkpoints_trim_the_log() {
    let config = config();
    let mut cluster = MemoryCluster::new(&config, |_| Kv::new());
    let mut sessions: Vec<ClientSession> =
        (1..=4).map(|id| ClientSession::new(id, 3, 100)).collect();
    for session in &mut sessions {
        cluster.register(session);
    }
    let mut completed = 0;
    for round in 0..20 {
        for session in &mut sessions {
            let (_, target, message) = session.submit(put("k", &format!("{round}"))).unwrap();
            cluster.send_from_client(target, message);
        }
        cluster.run(100_000);
        cluster.tick();
        cluster.run(100_000);
        while let Some((client, reply)) = cluster.replies.pop_front() {
            let session = &mut sessions[client as usize - 1];
            match session.on_message(&reply) {
                Some(Outcome::Completed { result, .. }) => {
                    assert_eq!(KvResult::decode(&result), Some(KvResult::Ok));
                    completed += 1;
                }
                other => panic!("unexpected outcome {other:?}"),
            }
        }
    }
    assert_eq!(completed, 80);
    // Commits reach the backups with the next heartbeat.
    for _ in 0..config.commit_interval_ticks {
        cluster.tick();
    }
    cluster.run(100_000);
    let commit = cluster.replicas[0].commit();
    assert_eq!(commit, 84, "4 registrations and 80 puts");
    for replica in &cluster.replicas {
        replica.invariants();
        assert_eq!(replica.commit(), commit);
        assert!(
            replica.checkpoint_op() == 80 && replica.log_entries() <= 8,
            "log trimmed after checkpoint"
        );
    }
}

/// An operation over the size limit is refused with a clear answer, not dropped into a
/// timeout, and the client goes on in a fresh session (so that a late copy of the refusal,
/// answering a retry, can never pass for the answer to its next request).
#[test]
fn an_oversized_operation_is_rejected_and_the_session_continues() {
    let config = config();
    let mut cluster = MemoryCluster::new(&config, |_| Kv::new());
    let mut session = ClientSession::new(1, 3, 100);
    cluster.register(&mut session);
    let first_session = session.session();
    let too_large = vec![b'x'; config.request_body_bytes_max as usize + 1];
    let (request, target, message) = session.submit(Bytes::from(too_large)).unwrap();
    cluster.send_from_client(target.clone(), message.clone());
    cluster.run(100_000);
    let mut outcomes = Vec::new();
    while let Some((_, reply)) = cluster.replies.pop_front() {
        outcomes.extend(session.on_message(&reply));
    }
    assert_eq!(
        outcomes,
        vec![Outcome::Rejected {
            request,
            reason: bytes::Bytes::new()
        }]
    );
    assert!(!session.is_registered());
    cluster.register(&mut session);
    assert!(session.session() > first_session);
    // A retried copy of the refused request is refused again; its answer is ignored.
    cluster.send_from_client(target, message);
    let (request, target, message) = session.submit(put("k", "v")).unwrap();
    assert_eq!(request, 1);
    cluster.send_from_client(target, message);
    cluster.run(100_000);
    let mut outcomes = Vec::new();
    while let Some((_, reply)) = cluster.replies.pop_front() {
        outcomes.extend(session.on_message(&reply));
    }
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert!(matches!(
        &outcomes[0],
        Outcome::Completed { request: 1, .. }
    ));
}
