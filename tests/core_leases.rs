//! Leases in the protocol core (paper 6.3.1), three replicas on perfect links
//! (`testing::MemoryCluster`) with one clock the test moves by hand: a primary answers a
//! lease read from its state only while f backups' leases, counted from the stamps they
//! echoed, hold; otherwise the read goes through the log; a new primary waits out the
//! leases of earlier primaries; a backup takes part in no view change while the lease
//! it granted runs, nor does a replica that restarted before a full lease has passed.

use bytes::Bytes;
use vsr::client::{ClientSession, Outcome, ReadMode, Target};
use vsr::protocol::client_table::RouteToken;
use vsr::protocol::{
    Body, DoViewChange, Effect, Message, Operation, Replica, ReplicaIndex, ReplyStatus, Request,
    Start, Status,
};
use vsr::service::kv::{KvOp, KvResult};
use vsr::service::Kv;
use vsr::testing::MemoryCluster;
use vsr::Config;

/// One tick of the default configuration: 10 ms.
const TICK_NS: u64 = 10_000_000;

/// Three replicas with the default lease (50 ticks: 500 ms) and drift bound (1%), and
/// the time every replica's clock reads.
struct Leases {
    cluster: MemoryCluster<Kv>,
    now_ns: u64,
    session: ClientSession,
    reads: u32,
}

fn config() -> Config {
    Config::new(1, 3)
}

impl Leases {
    /// A registered session and `k = old` written, everyone's clock at 1 s.
    fn new() -> Leases {
        let mut leases = Leases {
            cluster: MemoryCluster::new(&config(), |_| Kv::new()),
            now_ns: 1_000_000_000,
            session: ClientSession::new(77, 3, 25),
            reads: 0,
        };
        leases.set_clocks();
        leases.cluster.register(&mut leases.session);
        leases.cluster.execute(&mut leases.session, put("k", "old"));
        leases
    }

    fn set_clocks(&mut self) {
        for replica in &mut self.cluster.replicas {
            replica.set_monotonic_ns(self.now_ns);
        }
    }

    /// Moves every clock on by `ticks` ticks, ticking the replicas as it goes, and
    /// delivers what they send.
    fn tick(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.now_ns += TICK_NS;
            self.set_clocks();
            self.cluster.tick();
            self.cluster.run(10_000);
        }
    }

    fn primary(&self) -> &Replica<Kv> {
        self.cluster
            .replicas
            .iter()
            .find(|replica| replica.is_primary())
            .expect("a primary")
    }

    /// A lease read of `k` sent straight to replica `to`: its reply's status and result.
    fn lease_read(&mut self, to: ReplicaIndex) -> (ReplyStatus, Bytes) {
        self.reads += 1;
        let read = Message {
            epoch: 0,
            view: self.cluster.replicas[to as usize].view(),
            replica: 0,
            body: Body::Request(Request {
                client: self.session.client(),
                session: self.session.session(),
                request: 1000 + self.reads,
                operation: Operation::LeaseRead,
                body: Request::read_body(0, &get("k")),
            }),
        };
        self.cluster.replies.clear();
        self.cluster.deliver(to as u64, read);
        let (_, reply) = self.cluster.replies.pop_front().expect("an answer");
        let Body::Reply(reply) = reply.body else {
            panic!("not a reply")
        };
        (reply.status, reply.result)
    }

    /// Backups' acknowledgements never reach the primary (or do again).
    fn cut_acknowledgements(&mut self, cut: bool) {
        self.cluster.drop_filter = match cut {
            true => Some(Box::new(|_, _, message: &Message| {
                matches!(message.body, Body::PrepareOk(_))
            })),
            false => None,
        };
    }
}

fn put(key: &str, value: &str) -> Bytes {
    KvOp::Put(
        Bytes::copy_from_slice(key.as_bytes()),
        Bytes::copy_from_slice(value.as_bytes()),
    )
    .encode()
}

fn get(key: &str) -> Bytes {
    KvOp::Get(Bytes::copy_from_slice(key.as_bytes())).encode()
}

fn value(text: &str) -> Bytes {
    KvResult::Value(Bytes::copy_from_slice(text.as_bytes())).encode()
}

/// The lease held after the acknowledgements of a write: (held, then counted down).
#[test]
fn the_lease_is_held_only_with_f_fresh_acknowledgements() {
    let mut leases = Leases::new();
    // The write's Prepare was stamped and acknowledged: held.
    assert!(leases.primary().holds_lease());
    assert_eq!(leases.lease_read(0), (ReplyStatus::Read, value("old")));
    // No acknowledgement arrives any more: heartbeats go out, nothing comes back, and
    // the lease runs out within the lease less the drift margin (500 ms × 0.98).
    leases.cut_acknowledgements(true);
    leases.tick(48);
    assert!(
        leases.primary().holds_lease(),
        "counted from the last echoed send"
    );
    leases.tick(2);
    assert!(!leases.primary().holds_lease(), "no fresh acknowledgement");
    assert_eq!(leases.lease_read(0).0, ReplyStatus::Behind);
    // Acknowledgements again: the next heartbeat's echoes renew it.
    leases.cut_acknowledgements(false);
    leases.tick(config().commit_interval_ticks);
    assert!(leases.primary().holds_lease());
    let stats = leases.primary().stats();
    assert_eq!(
        (stats.lease_reads_answered, stats.lease_reads_fallen_back),
        (1, 1)
    );
}

/// A lease read at a primary without a lease comes back `Behind`, and the session sends
/// the query again as a strict read: ordered through the log, it sees every write.
#[test]
fn a_read_at_a_primary_whose_lease_ran_out_goes_through_the_log() {
    let mut leases = Leases::new();
    leases.cut_acknowledgements(true);
    leases.tick(60);
    leases.cut_acknowledgements(false);
    assert!(!leases.primary().holds_lease());
    let op_before = leases.primary().op();
    let session = &mut leases.session;
    let (_, target, message) = session
        .submit_operation(ReadMode::Lease.operation(), get("k"))
        .expect("idle");
    assert_eq!(
        target,
        Target::Replica(0),
        "a lease read goes to the primary"
    );
    let message = message.clone();
    leases.cluster.replies.clear();
    leases.cluster.deliver(0, message);
    let (_, reply) = leases.cluster.replies.pop_front().expect("an answer");
    assert_eq!(
        leases.session.on_message(&reply),
        None,
        "Behind: not an answer"
    );
    // The session now holds a strict read, sent at its next tick.
    let (_, retry) = leases.session.on_tick().expect("sent at once");
    let Body::Request(request) = &retry.body else {
        panic!("a request")
    };
    assert_eq!(request.operation, Operation::Query);
    leases.cluster.deliver(0, retry);
    leases.cluster.flush();
    leases.cluster.run(10_000);
    let answer = loop {
        let (_, reply) = leases
            .cluster
            .replies
            .pop_front()
            .expect("the strict read's answer");
        if let Some(Outcome::Completed { op, result, .. }) = leases.session.on_message(&reply) {
            break (op, result);
        }
    };
    assert_eq!(answer.1, value("old"));
    assert_eq!(answer.0, op_before + 1, "ordered: the read took an op");
    assert_eq!(
        leases
            .primary()
            .entry(answer.0)
            .expect("in the log")
            .operation,
        Operation::Query
    );
}

/// After a view change, the new primary answers no lease read before a full lease
/// (stretched by the drift bound) has passed on its clock since it started the view,
/// however many fresh acknowledgements it holds.
#[test]
fn a_new_primary_waits_out_the_leases_of_earlier_primaries() {
    let mut leases = Leases::new();
    // The primary stops; the backups' leases run out, then they change views.
    leases.cluster.down[0] = true;
    let mut ticks = 0;
    while !leases.cluster.replicas[1].is_primary() {
        leases.tick(1);
        ticks += 1;
        assert!(ticks < 1_000, "no view change");
    }
    let started_ns = leases.now_ns;
    let wait_ns = vsr::protocol::lease_wait_ns(config().lease_ns(), config().clock_drift_ppm);
    assert!(wait_ns > config().lease_ns());
    let mut held_at = None;
    while held_at.is_none() {
        leases.tick(1);
        if leases.cluster.replicas[1].holds_lease() {
            held_at = Some(leases.now_ns);
        }
        assert!(leases.now_ns < started_ns + 2 * wait_ns, "never held");
    }
    let held_at = held_at.expect("held");
    assert!(
        held_at >= started_ns + wait_ns,
        "held {} ns after the view started",
        held_at - started_ns
    );
    assert_eq!(leases.lease_read(1), (ReplyStatus::Read, value("old")));
}

/// A backup that granted its primary a lease neither votes in a later view (a
/// DoViewChange for the view it would lead) nor asks for one until the lease ran out on
/// its own clock; then it does.
#[test]
fn a_backup_takes_part_in_no_view_change_while_its_granted_lease_runs() {
    let mut leases = Leases::new();
    assert!(leases.cluster.replicas[1].lease_promised());
    let dvc = |replica: &Replica<Kv>| Message {
        epoch: 0,
        view: 1,
        replica: 2,
        body: Body::DoViewChange(DoViewChange {
            last_normal_view: 0,
            op: replica.op(),
            commit: replica.op(),
            actives_commit: 0,
            entries: Vec::new(),
        }),
    };
    let message = dvc(&leases.cluster.replicas[1]);
    leases.cluster.deliver(1, message);
    let backup = &leases.cluster.replicas[1];
    assert_eq!((backup.view(), backup.status()), (0, Status::Normal));
    assert_eq!(backup.stats().view_changes_held_by_lease, 1);
    // Its primary falls silent: no more grants; once the lease ran out, it votes.
    leases.cluster.down[0] = true;
    leases.now_ns += config().lease_ns();
    leases.set_clocks();
    assert!(!leases.cluster.replicas[1].lease_promised());
    let message = dvc(&leases.cluster.replicas[1]);
    leases.cluster.deliver(1, message);
    assert_eq!(
        leases.cluster.replicas[1].view(),
        1,
        "it started view 1's change"
    );
}

/// A replica that restarts cannot remember what it promised: it takes part in no view
/// change until a full lease, stretched by the drift bound, has passed since its first
/// clock reading. A first start of a new cluster promised nothing.
#[test]
fn a_restarted_replica_waits_out_a_lease_it_may_have_granted() {
    let restarted = Replica::new(config(), 1, Kv::new(), Start::Recover { nonce: 5 });
    let mut restarted = restarted;
    restarted.set_monotonic_ns(1_000);
    assert!(restarted.lease_promised());
    let wait_ns = vsr::protocol::lease_wait_ns(config().lease_ns(), config().clock_drift_ppm);
    restarted.set_monotonic_ns(1_000 + wait_ns - 1);
    assert!(restarted.lease_promised());
    restarted.set_monotonic_ns(1_000 + wait_ns);
    assert!(!restarted.lease_promised());
    let mut fresh = Replica::new(config(), 1, Kv::new(), Start::Fresh);
    fresh.set_monotonic_ns(1_000);
    assert!(!fresh.lease_promised());
}

/// A driver that never passes a clock gets no leases: nothing is granted or held, and
/// every lease read goes through the log.
#[test]
fn without_a_clock_there_is_no_lease() {
    let mut cluster = MemoryCluster::new(&config(), |_| Kv::new());
    let mut session = ClientSession::new(78, 3, 25);
    cluster.register(&mut session);
    cluster.execute(&mut session, put("k", "v"));
    assert!(!cluster.replicas[0].holds_lease());
    assert!(!cluster.replicas[1].lease_promised());
}

/// A lease read of `k` from the test's session, numbered `number`, having seen `seen`, in
/// `epoch`.
fn lease_read_message(leases: &Leases, number: u32, seen: u64, epoch: u32) -> Message {
    Message {
        epoch,
        view: leases.primary().view(),
        replica: 0,
        body: Body::Request(Request {
            client: leases.session.client(),
            session: leases.session.session(),
            request: number,
            operation: Operation::LeaseRead,
            body: Request::read_body(seen, &get("k")),
        }),
    }
}

/// The replies among `effects`: (request number, status, result, route).
fn replies_of(effects: &[Effect]) -> Vec<(u32, ReplyStatus, Bytes, Option<RouteToken>)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Reply { route, message, .. } => match &message.body {
                Body::Reply(reply) => {
                    Some((reply.request, reply.status, reply.result.clone(), *route))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The lease reads of a run of one connection's batch, handed over at once
/// (`Replica::on_lease_reads`), are answered as each would be alone: under the lease
/// from the state, `Behind` for a session that saw more than was committed, a request
/// of another kind or of another epoch the long way (a write queued, a later epoch's
/// dropped), a body without its seen op dropped; every reply with the run's route token;
/// and once the lease ran out, `Behind` for all.
#[test]
fn a_run_of_lease_reads_is_answered_as_each_alone() {
    let mut leases = Leases::new();
    let route = Some(RouteToken(0xfeed));
    let commit = leases.primary().commit();
    let (_, _, write) = leases
        .session
        .submit_operation(Operation::Apply, put("k", "new"))
        .expect("idle");
    let write = write.clone();
    let mut short = lease_read_message(&leases, 5, 0, 0);
    if let Body::Request(request) = &mut short.body {
        request.body = Bytes::from_static(b"\x01\x02");
    }
    let run = vec![
        lease_read_message(&leases, 1, 0, 0),
        lease_read_message(&leases, 2, commit + 1, 0),
        write,
        lease_read_message(&leases, 3, commit, 0),
        lease_read_message(&leases, 4, 0, 1),
        short,
        lease_read_message(&leases, 6, 0, 0),
    ];
    let op = leases.primary().op();
    let mut effects = Vec::new();
    leases.cluster.replicas[0].on_lease_reads(run.clone().into_iter(), route, &mut effects);
    let old = value("old");
    assert_eq!(
        replies_of(&effects),
        [
            (1, ReplyStatus::Read, old.clone(), route),
            (2, ReplyStatus::Behind, Bytes::new(), route),
            (3, ReplyStatus::Read, old.clone(), route),
            (6, ReplyStatus::Read, old, route),
        ]
    );
    let primary = &leases.cluster.replicas[0];
    assert_eq!(primary.op(), op, "the write is queued, not ordered yet");
    assert!(primary.accepting_requests());
    let stats = primary.stats();
    assert_eq!(
        (stats.lease_reads_answered, stats.lease_reads_fallen_back),
        (3, 1)
    );
    // No acknowledgement for a lease: every read of a run comes back `Behind`.
    leases.cut_acknowledgements(true);
    leases.tick(60);
    assert!(!leases.primary().holds_lease());
    let reads = [7, 8].map(|number| lease_read_message(&leases, number, 0, 0));
    let mut effects = Vec::new();
    leases.cluster.replicas[0].on_lease_reads(reads.into_iter(), route, &mut effects);
    assert_eq!(
        replies_of(&effects),
        [
            (7, ReplyStatus::Behind, Bytes::new(), route),
            (8, ReplyStatus::Behind, Bytes::new(), route),
        ]
    );
}

/// A measurement more than a check (`VSR_MEASURE=1 cargo test --release --test
/// core_leases cost -- --nocapture`; without it, a few rounds): the core's time per lease
/// read handed over one by one (`on_client_request`, as the runtime did before) and as
/// runs of a batch (`on_lease_reads`), at a primary holding the lease, alternating,
/// medians of five; both paths answer every read under the lease.
#[test]
fn cost_of_a_lease_read_alone_and_in_a_run() {
    use std::time::Instant;
    let mut leases = Leases::new();
    assert!(leases.primary().holds_lease());
    let route = Some(RouteToken(1));
    let reads: Vec<Message> = (0..64)
        .map(|number| lease_read_message(&leases, number, 0, 0))
        .collect();
    let primary = &mut leases.cluster.replicas[0];
    let mut effects = Vec::with_capacity(256);
    let rounds = match std::env::var_os("VSR_MEASURE") {
        Some(_) => 20_000u32,
        None => 10,
    };
    let (mut alone, mut run) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..rounds {
            for read in &reads {
                primary.on_client_request(read.clone(), route, &mut effects);
            }
            effects.clear();
        }
        alone.push(start.elapsed().as_nanos() as f64 / f64::from(rounds * 64));
        let start = Instant::now();
        for _ in 0..rounds {
            primary.on_lease_reads(reads.iter().cloned(), route, &mut effects);
            effects.clear();
        }
        run.push(start.elapsed().as_nanos() as f64 / f64::from(rounds * 64));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "ns per lease read: one by one {:.0} (runs {:.0?}), in runs of 64 {:.0} (runs {:.0?})",
        median(alone.clone()),
        alone,
        median(run.clone()),
        run
    );
    assert_eq!(
        primary.stats().lease_reads_answered,
        2 * 5 * u64::from(rounds) * 64
    );
}
