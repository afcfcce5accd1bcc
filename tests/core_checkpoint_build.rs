//! Checkpoints built off the event loop (paper 5.1's copy-on-write), through the
//! in-memory cluster with builds deferred as a busy worker thread would defer them: the
//! replica goes on executing while its checkpoint is built, and the checkpoint holds the
//! state at its op; the next two checkpoint ops are skipped while the build runs, and the
//! one after waits for it, so the log stays bounded; a primary holds ordering an interval
//! before that, so a backup whose build is slower than the primary's goes on; a build is
//! abandoned when the replica installs another state.

use bytes::Bytes;
use vsr::client::ClientSession;
use vsr::service::kv::{Kv, KvOp, KvResult};
use vsr::testing::MemoryCluster;
use vsr::Config;

const INTERVAL: u64 = 50;

fn config() -> Config {
    let mut config = Config::new(7, 3);
    config.checkpoint_interval_ops = INTERVAL;
    config.log_tail_ops = 10;
    config
}

/// Puts `count` keys (`tag`-ed values of 300 bytes), one request at a time.
fn put(cluster: &mut MemoryCluster<Kv>, session: &mut ClientSession, count: u32, tag: u8) {
    for key in 0..count {
        let op = KvOp::Put(
            Bytes::from(format!("key {key:04}")),
            Bytes::from(vec![tag; 300]),
        );
        let result = cluster.execute(session, op.encode());
        assert_eq!(
            KvResult::decode(&result),
            Some(KvResult::Ok),
            "put of key {key}"
        );
    }
}

/// Puts until replica 0 has executed `op`, then ticks until every replica up has.
fn put_until(cluster: &mut MemoryCluster<Kv>, session: &mut ClientSession, op: u64, tag: u8) {
    while cluster.replicas[0].commit() < op {
        let left = (op - cluster.replicas[0].commit()) as u32;
        put(cluster, session, left, tag);
    }
    for _ in 0..200 {
        let up = cluster.replicas.iter().zip(&cluster.down);
        if up
            .filter(|(_, down)| !**down)
            .all(|(r, _)| r.commit() >= op)
        {
            return;
        }
        cluster.tick();
        cluster.run(100_000);
    }
    panic!("the replicas did not reach {op}");
}

fn cluster() -> (MemoryCluster<Kv>, ClientSession) {
    let mut cluster = MemoryCluster::new(&config(), |_| Kv::new());
    cluster.defer_builds();
    let mut session = ClientSession::new(1, 3, 100);
    cluster.register(&mut session);
    (cluster, session)
}

#[test]
fn a_checkpoint_holds_the_state_at_its_op_though_built_later() {
    let (mut cluster, mut session) = cluster();
    put_until(&mut cluster, &mut session, INTERVAL, 1);
    for id in 0..3 {
        assert_eq!(cluster.replicas[id].checkpoint_building(), Some(INTERVAL));
        assert_eq!(cluster.replicas[id].checkpoint_op(), 0, "not built yet");
    }
    // Replica 1 builds at once; replica 0 only after it executed 30 more ops, which
    // overwrite every key the checkpoint holds.
    assert_eq!(cluster.run_builds(1), 1);
    assert_eq!(cluster.replicas[1].checkpoint_op(), INTERVAL);
    put_until(&mut cluster, &mut session, INTERVAL + 30, 2);
    let replica = &cluster.replicas[0];
    assert_eq!(replica.checkpoint_op(), 0);
    assert_eq!(
        replica.entry(1).map(|_| ()),
        Some(()),
        "the log is kept until it is built"
    );
    assert_eq!(cluster.run_builds(0), 1);
    let (built, at_once) = (&cluster.replicas[0], &cluster.replicas[1]);
    assert_eq!(built.checkpoint_op(), INTERVAL);
    assert_eq!(
        built.checkpoint(),
        at_once.checkpoint(),
        "the state at op {INTERVAL}"
    );
    assert_eq!(built.checkpoint_id(), at_once.checkpoint_id());
    // The log is trimmed below the checkpoint, less the tail.
    assert!(built.entry(INTERVAL - 10).is_none());
    assert!(built.entry(INTERVAL - 9).is_some());
    assert_eq!(built.stats().checkpoints, 1);
}

#[test]
fn a_slow_build_skips_two_checkpoints_then_is_waited_for() {
    let (mut cluster, mut session) = cluster();
    // Replica 2's worker never gets to its builds; the others' do.
    put_until(&mut cluster, &mut session, INTERVAL, 1);
    for round in 2..=3 {
        cluster.run_builds(0);
        cluster.run_builds(1);
        put_until(&mut cluster, &mut session, round * INTERVAL, round as u8);
    }
    cluster.run_builds(0);
    cluster.run_builds(1);
    let replica = &cluster.replicas[2];
    assert_eq!(replica.stats().checkpoints_skipped, 2);
    assert_eq!(replica.stats().checkpoint_build_waits, 0);
    assert_eq!(
        replica.checkpoint_building(),
        Some(INTERVAL),
        "still the first"
    );
    assert_eq!(replica.checkpoint_op(), 0);
    put_until(&mut cluster, &mut session, 4 * INTERVAL, 4);
    let replica = &cluster.replicas[2];
    assert_eq!(replica.stats().checkpoint_build_waits, 1);
    assert_eq!(replica.checkpoint_op(), INTERVAL, "waited for");
    assert_eq!(replica.checkpoint_building(), Some(4 * INTERVAL));
    let config = replica.config();
    assert!(replica.log_entries() as u64 <= config.log_entries_max());
    assert!(replica.entry(INTERVAL - 10).is_none(), "trimmed once built");
    // Its checkpoints are the others' at the same op.
    cluster.run_builds(2);
    cluster.run_builds(0);
    let (slow, other) = (&cluster.replicas[2], &cluster.replicas[0]);
    assert_eq!(slow.checkpoint_op(), 4 * INTERVAL);
    assert_eq!(slow.checkpoint_id(), other.checkpoint_id());
}

#[test]
fn a_backup_whose_build_is_an_interval_slower_than_the_primarys_does_not_wait() {
    let (mut cluster, mut session) = cluster();
    put_until(&mut cluster, &mut session, INTERVAL, 1);
    // Every worker took its build; the primary's and backup 1's are slow, backup 2's
    // slower still.
    for id in 0..3 {
        cluster.start_builds(id);
    }
    // The primary holds two intervals on, as long as its build runs.
    let hold = 3 * INTERVAL;
    put_until(&mut cluster, &mut session, hold - 1, 2);
    assert_eq!(cluster.replicas[0].op(), hold - 1, "held");
    cluster.run_builds(0);
    cluster.run_builds(1);
    // Backup 2 executes past the primary's hold, through one more checkpoint op,
    // without waiting; its build finishes before the op where it would.
    put_until(&mut cluster, &mut session, hold + INTERVAL / 2, 3);
    let slow = &cluster.replicas[2];
    assert_eq!(slow.commit(), hold + INTERVAL / 2);
    assert_eq!(slow.stats().checkpoint_build_waits, 0, "never waited");
    assert_eq!(slow.checkpoint_building(), Some(INTERVAL), "still building");
    assert_eq!(slow.stats().checkpoints_skipped, 2);
    assert!(slow.log_entries() as u64 <= slow.config().log_entries_max());
    cluster.run_builds(2);
    put_until(&mut cluster, &mut session, 4 * INTERVAL, 4);
    cluster.run_builds(0);
    cluster.run_builds(2);
    let (slow, primary) = (&cluster.replicas[2], &cluster.replicas[0]);
    assert_eq!(slow.stats().checkpoint_build_waits, 0);
    assert_eq!(slow.checkpoint_op(), 4 * INTERVAL);
    assert_eq!(
        primary.checkpoint_op(),
        3 * INTERVAL,
        "took the one at its hold"
    );
    assert_eq!(primary.stats().checkpoint_build_waits, 0);
}

#[test]
fn a_primary_holds_ordering_while_its_worker_builds_instead_of_waiting() {
    let (mut cluster, mut session) = cluster();
    put_until(&mut cluster, &mut session, INTERVAL, 1);
    // The backups' workers built theirs; the primary's took its build and is slow.
    cluster.run_builds(1);
    cluster.run_builds(2);
    cluster.start_builds(0);
    // The checkpoint op one interval on is skipped; at the one after that the primary
    // holds, an interval before executing would wait for the build: it orders every op
    // before it, and no more.
    let wait = 3 * INTERVAL;
    put_until(&mut cluster, &mut session, wait - 1, 2);
    let (_, target, request) = session
        .submit(KvOp::Put(Bytes::from_static(b"held"), Bytes::from_static(b"v")).encode())
        .expect("idle");
    cluster.send_from_client(target, request);
    // Three normal timeouts: the held primary goes on sending heartbeats (commits), so
    // nobody starts a view change, and nothing at or past the wait op is ordered.
    let ticks = 3 * cluster.replicas[0].config().normal_timeout_ticks;
    for _ in 0..ticks {
        cluster.tick();
        cluster.run(100_000);
    }
    for replica in &cluster.replicas {
        assert_eq!(replica.view(), 0, "no view change while the primary holds");
        assert_eq!(replica.op(), wait - 1);
    }
    let primary = &cluster.replicas[0];
    assert_eq!(primary.commit(), wait - 1);
    assert_eq!(primary.stats().checkpoint_build_holds, 1);
    assert_eq!(primary.stats().checkpoint_build_waits, 0, "never waited");
    assert_eq!(primary.checkpoint_building(), Some(INTERVAL));
    assert!(
        cluster.replies.is_empty(),
        "the held request is not answered yet"
    );
    // The build finishes: the primary orders the held request, and takes the
    // checkpoint at the wait op without waiting for anything.
    assert_eq!(cluster.run_builds(0), 1);
    let result = cluster.await_result(&mut session);
    assert_eq!(KvResult::decode(&result), Some(KvResult::Ok));
    let primary = &cluster.replicas[0];
    assert_eq!(primary.commit(), wait);
    assert_eq!(primary.checkpoint_op(), INTERVAL);
    assert_eq!(primary.checkpoint_building(), Some(wait));
    assert_eq!(primary.stats().checkpoint_build_waits, 0);
}

#[test]
fn installing_another_state_abandons_the_build() {
    let (mut cluster, mut session) = cluster();
    put_until(&mut cluster, &mut session, INTERVAL, 1);
    // Replica 2 took its checkpoint and is cut off before its worker built it.
    cluster.down[2] = true;
    for id in 0..2 {
        cluster.run_builds(id);
    }
    for round in 2..=5 {
        put_until(&mut cluster, &mut session, round * INTERVAL, round as u8);
        for id in 0..2 {
            cluster.run_builds(id);
        }
    }
    cluster.down[2] = false;
    let commit = cluster.replicas[0].commit();
    put_until(&mut cluster, &mut session, commit, 9);
    let replica = &cluster.replicas[2];
    assert_eq!(
        replica.stats().checkpoint_transfers,
        1,
        "caught up by a checkpoint"
    );
    assert_eq!(replica.checkpoint_op(), cluster.replicas[0].checkpoint_op());
    assert_eq!(replica.checkpoint_building(), None);
    assert_eq!(
        cluster.run_builds(2),
        0,
        "the build of op {INTERVAL} was abandoned"
    );
    assert!(cluster.replicas[2].service() == cluster.replicas[0].service());
}

/// A kv that counts the times it was told its deferred snapshot was built.
struct Told {
    kv: Kv,
    told: u64,
}

impl vsr::service::StateMachine for Told {
    fn apply(&mut self, op: u64, timestamp: u64, operation: &Bytes) -> Bytes {
        self.kv.apply(op, timestamp, operation)
    }
    fn query(&self, query: &Bytes) -> Bytes {
        self.kv.query(query)
    }
    fn snapshot(&mut self) -> vsr::service::Snapshot {
        self.kv.snapshot()
    }
    fn snapshot_deferred(&mut self) -> vsr::service::Deferred<vsr::service::Snapshot> {
        self.kv.snapshot_deferred()
    }
    fn snapshot_built(&mut self) {
        self.told += 1;
        self.kv.snapshot_built();
    }
    fn restore(
        &mut self,
        snapshot: &vsr::service::Snapshot,
    ) -> Result<(), vsr::service::SnapshotError> {
        self.kv.restore(snapshot)
    }
}

/// The service hears that its build finished at the replica's next input, a tick
/// included, so that an idle replica's kv lets go of the state it kept for the build.
#[test]
fn the_service_is_told_once_its_build_finished() {
    let mut cluster = MemoryCluster::new(&config(), |_| Told {
        kv: Kv::new(),
        told: 0,
    });
    cluster.defer_builds();
    let mut session = ClientSession::new(1, 3, 100);
    cluster.register(&mut session);
    while cluster.replicas[0].commit() < INTERVAL {
        let op = KvOp::Put(Bytes::from("key"), Bytes::from(vec![1; 300]));
        cluster.execute(&mut session, op.encode());
    }
    assert_eq!(cluster.replicas[0].checkpoint_building(), Some(INTERVAL));
    assert_eq!(cluster.replicas[0].service().told, 0);
    assert_eq!(cluster.run_builds(0), 1);
    assert_eq!(cluster.replicas[0].service().told, 1, "told at once");
    cluster.tick();
    cluster.run(10_000);
    assert_eq!(cluster.replicas[0].service().told, 1, "told once");
}
