//! Persistence is an effect: every change a replica must remember is a `Write`, and no
//! message that vouches for written state leaves before the write completed
//! (`Replica::on_persisted`). One replica at a time, driven by hand.

use bytes::Bytes;
use vsr::protocol::{
    Body, DurableState, Effect, Entry, Message, Operation, Prepare, PrepareOk, Replica,
    ReplicaIndex, Request, Start, StartViewChange, Write,
};
use vsr::service::Null;
use vsr::Config;

fn config() -> Config {
    Config::new(1, 3)
}

fn replica(index: ReplicaIndex) -> Replica<Null> {
    Replica::new(config(), index, Null, Start::Fresh)
}

fn message(view: u32, replica: ReplicaIndex, body: Body) -> Message {
    Message {
        epoch: 0,
        view,
        replica,
        body,
    }
}

fn entry(request: u32, timestamp: u64) -> Entry {
    Entry {
        client: 7,
        session: 1,
        request,
        timestamp,
        operation: Operation::Apply,
        body: Bytes::from_static(b"x"),
    }
}

fn writes(effects: &[Effect]) -> Vec<(u64, Write)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Write { id, write } => Some((*id, *write)),
            _ => None,
        })
        .collect()
}

fn messages(effects: &[Effect]) -> Vec<&'static str> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Send { message, .. }
            | Effect::Broadcast { message, .. }
            | Effect::Reply { message, .. } => Some(message.body.name()),
            Effect::Write { .. } | Effect::BuildCheckpoint { .. } | Effect::KeepPages(_) => None,
        })
        .collect()
}

#[test]
fn a_backup_acknowledges_a_prepare_only_once_its_append_is_durable() {
    let mut backup = replica(1);
    let mut effects = Vec::new();
    let prepare = Prepare {
        op_first: 1,
        commit: 0,
        actives_commit: 0,
        stamp: 0,
        entries: vec![entry(1, 10), entry(2, 11)],
    };
    backup.on_message(message(0, 0, Body::Prepare(prepare)), &mut effects);
    assert_eq!(writes(&effects), [(1, Write::LogAppend { from: 1, to: 2 })]);
    assert!(
        messages(&effects).is_empty(),
        "PrepareOk before the append is durable"
    );
    assert!(backup.writes_pending());

    effects.clear();
    backup.on_persisted(1, &mut effects);
    assert_eq!(
        effects,
        [Effect::Send {
            to: 0,
            message: message(
                0,
                1,
                Body::PrepareOk(PrepareOk {
                    op: 2,
                    commit: 0,
                    stamp: 0
                })
            )
        }]
    );
    assert!(!backup.writes_pending());
    // A completion reported twice changes nothing.
    effects.clear();
    backup.on_persisted(1, &mut effects);
    assert!(effects.is_empty());
}

#[test]
fn a_primary_counts_its_own_acknowledgement_only_after_its_own_write() {
    let mut primary = replica(0);
    let mut effects = Vec::new();
    primary.set_clock(1_000);
    // Registration (session 0) is ordered like any request.
    let register = Request {
        client: 7,
        session: 0,
        request: 1,
        operation: Operation::Register,
        body: Bytes::new(),
    };
    primary.on_message(message(0, 7, Body::Request(register)), &mut effects);
    primary.flush(&mut effects);
    // The Prepare leaves at once: the primary writes and sends in parallel.
    assert_eq!(messages(&effects), ["prepare"]);
    assert_eq!(writes(&effects), [(1, Write::LogAppend { from: 1, to: 1 })]);

    // One backup's acknowledgement is f = 1 of the f + 1 needed: not enough without the
    // primary's own, which waits for its write.
    effects.clear();
    let ok = message(
        0,
        1,
        Body::PrepareOk(PrepareOk {
            op: 1,
            commit: 0,
            stamp: 0,
        }),
    );
    primary.on_message(ok, &mut effects);
    assert_eq!(
        primary.commit(),
        0,
        "committed before its own write completed"
    );
    assert!(effects.is_empty());

    primary.on_persisted(1, &mut effects);
    assert_eq!(primary.commit(), 1);
    assert_eq!(messages(&effects), ["reply"]);
}

#[test]
fn a_view_change_is_announced_only_once_the_new_view_is_durable() {
    let mut backup = replica(1);
    let mut effects = Vec::new();
    // The primary of view 0 went silent: replica 1 asks (from view 0) for view 1 ...
    for _ in 0..config().normal_timeout_ticks {
        backup.on_tick(&mut effects);
    }
    assert!(messages(&effects).contains(&"start_view_change"));
    assert!(
        writes(&effects).is_empty(),
        "an ask changes nothing durable"
    );
    // ... and replica 2 asks too: with f = 1 other, replica 1 raises its view.
    effects.clear();
    let ask = message(
        1,
        2,
        Body::StartViewChange(StartViewChange { sender_view: 0 }),
    );
    backup.on_message(ask, &mut effects);
    assert_eq!(backup.view(), 1);
    let state = DurableState {
        epoch: 0,
        view: 1,
        last_normal_view: 0,
        recovering: false,
        joined: true,
    };
    assert_eq!(writes(&effects), [(1, Write::State(state))]);
    assert!(
        messages(&effects).is_empty(),
        "StartViewChange or DoViewChange before the view is durable"
    );

    effects.clear();
    backup.on_persisted(1, &mut effects);
    // In the order produced: the view's StartViewChange, then the DoViewChange to the
    // new primary (replica 1 is view 1's primary: it keeps its own).
    assert_eq!(messages(&effects), ["start_view_change"]);
}

#[test]
fn held_messages_keep_their_order_and_independent_ones_do_not_wait() {
    let mut backup = replica(1);
    let mut effects = Vec::new();
    let prepare = |op: u64| Prepare {
        op_first: op,
        commit: 0,
        actives_commit: 0,
        stamp: 0,
        entries: vec![entry(op as u32, 10 + op)],
    };
    backup.on_message(message(0, 0, Body::Prepare(prepare(1))), &mut effects);
    backup.on_message(message(0, 0, Body::Prepare(prepare(2))), &mut effects);
    // A gap: the backup asks for state (GetState relies on nothing) while its two
    // PrepareOks wait for their appends.
    backup.on_message(message(0, 0, Body::Prepare(prepare(4))), &mut effects);
    assert_eq!(messages(&effects), ["get_state"]);
    assert_eq!(
        writes(&effects),
        [
            (1, Write::LogAppend { from: 1, to: 1 }),
            (2, Write::LogAppend { from: 2, to: 2 })
        ]
    );

    effects.clear();
    backup.on_persisted(1, &mut effects);
    assert_eq!(
        effects,
        [Effect::Send {
            to: 0,
            message: message(
                0,
                1,
                Body::PrepareOk(PrepareOk {
                    op: 1,
                    commit: 0,
                    stamp: 0
                })
            )
        }],
        "only what write 1 covers leaves"
    );
    effects.clear();
    backup.on_persisted(2, &mut effects);
    let oks: Vec<_> = effects
        .iter()
        .map(|effect| match effect {
            Effect::Send { message, .. } => match &message.body {
                Body::PrepareOk(ok) => ok.op,
                other => panic!("unexpected {}", other.name()),
            },
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        oks,
        [2, 2],
        "the Prepare after the gap is answered too, in order"
    );
}

#[test]
fn writes_describe_truncation_before_the_new_suffix() {
    // A backup holding uncommitted ops 1..=3 of view 0 takes view 1's log, which keeps
    // only op 1: the store must drop 2..=3 before appending the new 2.
    let mut backup = replica(2);
    let mut effects = Vec::new();
    let prepare = Prepare {
        op_first: 1,
        commit: 0,
        actives_commit: 0,
        stamp: 0,
        entries: vec![entry(1, 10), entry(2, 11), entry(3, 12)],
    };
    backup.on_message(message(0, 0, Body::Prepare(prepare)), &mut effects);
    backup.complete_writes_in_memory(&mut effects);
    effects.clear();
    let start_view = vsr::protocol::StartView {
        op: 2,
        commit: 0,
        op_first: 1,
        entries: vec![entry(1, 10), entry(9, 20)],
    };
    backup.on_message(message(1, 1, Body::StartView(start_view)), &mut effects);
    let state = DurableState {
        epoch: 0,
        view: 1,
        last_normal_view: 1,
        recovering: false,
        joined: true,
    };
    assert_eq!(
        writes(&effects),
        [
            (2, Write::LogTruncate { after: 0 }),
            (3, Write::LogAppend { from: 1, to: 2 }),
            (4, Write::State(state)),
        ]
    );
    assert!(messages(&effects).is_empty());
    effects.clear();
    backup.on_persisted(3, &mut effects);
    assert!(
        effects.is_empty(),
        "the PrepareOk of view 1 waits for the state that says view 1"
    );
    backup.on_persisted(4, &mut effects);
    assert_eq!(messages(&effects), ["prepare_ok"]);
    assert_eq!(backup.durable_state(), state);
}
