//! `Start::Restart` on images no correct store holds: the replica trusts none of it and
//! recovers through the protocol (paper 4.3), never resumes. One replica, driven by hand.

use bytes::Bytes;
use vsr::protocol::{DurableState, Entry, Operation, Replica, Start, Status, Stored};
use vsr::service::Null;
use vsr::Config;

fn restart(stored: Stored) -> Replica<Null> {
    Replica::new(
        Config::new(1, 3),
        1,
        Null,
        Start::Restart {
            stored: Box::new(stored),
            nonce: 7,
        },
    )
}

fn entry(timestamp: u64) -> Entry {
    Entry {
        client: 7,
        session: 1,
        request: 1,
        timestamp,
        operation: Operation::Apply,
        body: Bytes::from_static(b"x"),
    }
}

/// A backup normal in view 2 with three entries, two committed.
fn backup_in_view_2() -> Stored {
    Stored {
        state: DurableState {
            view: 2,
            last_normal_view: 2,
            joined: true,
            ..DurableState::default()
        },
        entries: vec![entry(1), entry(2), entry(3)],
        commit: 2,
        ..Stored::default()
    }
}

#[test]
fn an_intact_backup_resumes_where_it_was() {
    let replica = restart(backup_in_view_2());
    assert_eq!(replica.status(), Status::Normal);
    assert_eq!((replica.view(), replica.op(), replica.commit()), (2, 3, 2));
}

#[test]
fn a_last_normal_view_above_the_view_is_damage() {
    let mut stored = backup_in_view_2();
    stored.state.last_normal_view = 3;
    let replica = restart(stored);
    assert_eq!(replica.status(), Status::Recovering);
    assert_eq!(
        replica.commit(),
        0,
        "nothing of a damaged store is executed"
    );
}

#[test]
fn a_log_that_starts_above_its_checkpoint_is_damage() {
    let mut stored = backup_in_view_2();
    stored.log_base = 5; // No checkpoint covers ops 1..=5.
    let replica = restart(stored);
    assert_eq!(replica.status(), Status::Recovering);
    assert_eq!(replica.op(), 0);
}

#[test]
fn a_store_of_another_epoch_is_damage() {
    let mut stored = backup_in_view_2();
    stored.state.epoch = 1;
    assert_eq!(restart(stored).status(), Status::Recovering);
}
