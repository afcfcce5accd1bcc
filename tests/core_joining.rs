//! Who answers a replica joining a started view (paper 5.2), one replica driven by hand.
//!
//! A replica that learns of a view it did not help start fetches the view's log and
//! installs it as its own (`join_started_view`). It asks the view's primary first, then
//! the other members in turn. A member still in its view change, or recovering, can only
//! vouch for its commit number: its entries above it may or may not be in the new view's
//! log. Such an answer, installed as the view's log, would drop ops committed before the
//! view started, and the joiner, now normal in the view, would then carry that short log
//! into the next view change with the newest last-normal view. So only a replica normal
//! in the asker's view answers a joiner; the new primary's own fetch of committed entries
//! (`view_change_fetch_source`) is the one question a replica in its view change answers.

use bytes::Bytes;
use vsr::protocol::{
    Body, Effect, Entry, GetState, Message, Op, Operation, Prepare, Replica, ReplicaIndex,
    StartViewChange, Status, View,
};
use vsr::service::kv::KvOp;
use vsr::service::Kv;
use vsr::Config;

const CLIENT: u64 = 7;
const SESSION: u64 = 1;
/// Replica 2 is the primary of view 2 in a cluster of 3 (views rotate over the members).
const NEW_VIEW: View = 2;
const NEW_PRIMARY: ReplicaIndex = 2;
/// The replica that joins view 2 late: neither its primary nor the replica asked.
const JOINER: ReplicaIndex = 0;

fn message(view: View, replica: ReplicaIndex, body: Body) -> Message {
    Message {
        epoch: 0,
        view,
        replica,
        body,
    }
}

fn put(request: u32, value: &str) -> Entry {
    Entry {
        client: CLIENT,
        session: SESSION,
        request,
        timestamp: 10 + u64::from(request),
        operation: Operation::Apply,
        body: KvOp::Put(
            Bytes::from_static(b"a"),
            Bytes::copy_from_slice(value.as_bytes()),
        )
        .encode(),
    }
}

/// Ops 1..=3 of view 0: the client's registration, `put a 1`, `put a 2`.
fn history() -> Vec<Entry> {
    let mut register = put(0, "");
    register.session = 0;
    register.request = 1;
    register.operation = Operation::Register;
    register.body = Bytes::new();
    vec![register, put(1, "1"), put(2, "2")]
}

/// Feeds `input`, completes every write it issued, and returns what the replica sent as
/// (destination, message): a broadcast as one entry per other member.
fn run(
    replica: &mut Replica<Kv>,
    input: impl FnOnce(&mut Replica<Kv>, &mut Vec<Effect>),
) -> Vec<(ReplicaIndex, Message)> {
    let mut effects = Vec::new();
    input(replica, &mut effects);
    let mut sent = Vec::new();
    while !effects.is_empty() {
        for effect in std::mem::take(&mut effects) {
            match effect {
                Effect::Write { id, .. } => replica.on_persisted(id, &mut effects),
                Effect::Send { to, message } => {
                    let to = replica.configuration().index_of(to).expect("a member");
                    sent.push((to, message));
                }
                Effect::Broadcast { message, audience } => {
                    let members: Vec<_> = replica.configuration().audience(audience).collect();
                    for id in members {
                        let to = replica.configuration().index_of(id).expect("a member");
                        if to != replica.replica() {
                            sent.push((to, message.clone()));
                        }
                    }
                }
                Effect::BuildCheckpoint { build, .. } => {
                    if build.run() {
                        replica.on_checkpoint_built(&mut effects);
                    }
                }
                Effect::Reply { .. } | Effect::KeepPages(_) => {}
            }
        }
    }
    replica.invariants();
    sent
}

/// Replica 1, a backup of view 0 holding ops 1..=3 of which only op 1 is known to it as
/// committed (the primary may well have committed all three).
fn backup_with_uncommitted_tail() -> Replica<Kv> {
    let mut backup = Replica::new(Config::new(1, 3), 1, Kv::new(), vsr::protocol::Start::Fresh);
    let prepare = Prepare {
        op_first: 1,
        commit: 1,
        actives_commit: 0,
        stamp: 0,
        entries: history(),
    };
    run(&mut backup, |r, e| {
        r.on_message(message(0, 0, Body::Prepare(prepare)), e)
    });
    assert_eq!((backup.op(), backup.commit()), (3, 1));
    backup
}

fn get_state(view: View, from: ReplicaIndex, op: Op) -> Message {
    message(view, from, Body::GetState(GetState { op, learner: None }))
}

/// The NewStates `sent` holds for `to`, as (the op vouched for, the last entry's op).
fn new_states_to(sent: &[(ReplicaIndex, Message)], to: ReplicaIndex) -> Vec<(Op, Op)> {
    sent.iter()
        .filter(|(destination, _)| *destination == to)
        .filter_map(|(_, message)| match &message.body {
            Body::NewState(new_state) => Some((
                new_state.op,
                new_state.op_first + new_state.entries.len() as Op - 1,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_replica_in_its_view_change_does_not_answer_a_joiner_of_that_view() {
    let mut backup = backup_with_uncommitted_tail();
    // The new primary's and the joiner's calls for view 2 reach it: it is in view 2's
    // view change, its log unchanged, its last normal view 0.
    for from in [NEW_PRIMARY, JOINER] {
        let call = StartViewChange {
            sender_view: NEW_VIEW,
        };
        run(&mut backup, |r, e| {
            r.on_message(message(NEW_VIEW, from, Body::StartViewChange(call)), e)
        });
    }
    assert_eq!(
        (backup.status(), backup.view()),
        (Status::ViewChange, NEW_VIEW)
    );
    assert_eq!((backup.op(), backup.commit()), (3, 1));

    // A joiner of view 2 asks it for the view's log. All it could vouch for is op 1; the
    // view's log may hold ops 2 and 3, committed in view 0. It stays silent, and the
    // joiner asks the next member.
    let dropped_before = backup.stats().messages_dropped;
    let sent = run(&mut backup, |r, e| {
        r.on_message(get_state(NEW_VIEW, JOINER, 0), e)
    });
    assert_eq!(new_states_to(&sent, JOINER), vec![]);
    assert!(
        backup.stats().messages_dropped > dropped_before,
        "the refusal is counted as a dropped message"
    );

    // The new primary, fetching committed entries it lacks (paper 5.3), is answered:
    // it takes the entries up to the commit number as committed, not as its log.
    let sent = run(&mut backup, |r, e| {
        r.on_message(get_state(NEW_VIEW, NEW_PRIMARY, 0), e)
    });
    assert_eq!(new_states_to(&sent, NEW_PRIMARY), vec![(1, 1)]);
}

#[test]
fn a_normal_replica_answers_a_joiner_with_its_whole_log() {
    // Normal in view 0, the backup vouches for all of view 0's log, committed or not:
    // a joiner of view 0 takes ops 1..=3.
    let mut backup = backup_with_uncommitted_tail();
    assert_eq!(backup.status(), Status::Normal);
    let sent = run(&mut backup, |r, e| r.on_message(get_state(0, 2, 0), e));
    assert_eq!(new_states_to(&sent, 2), vec![(3, 3)]);
}
