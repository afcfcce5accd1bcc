//! Scripted simulator scenarios for the nasty cases of view change (paper 4.2), recovery
//! (4.3), client retries (4.1, 4.5) and state transfer (5.1, 5.2). The checkers
//! (agreement, durability, linearizability, exactly-once) run after every step of every
//! scenario; each scenario also asserts its own outcome. Set `VSR_SIM_TRACE=1` for a
//! step-by-step log.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use vsr::protocol::{Body, Operation, Status};
use vsr::service::kv::KvResult;
use vsr::sim::network::{Envelope, Node};
use vsr::sim::scenario::{cas, get, put, scenario_config, small_message_config};
use vsr::sim::Scenario;

/// Steps to wait for anything that needs a view change or a recovery.
const SLOW: u64 = 3_000;

fn value(s: &str) -> KvResult {
    KvResult::Value(bytes::Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn primary_crashes_with_a_full_pipeline() {
    let mut s = Scenario::with(1, scenario_config(3), 8);
    // The backups get every Prepare but the primary never hears their acknowledgements,
    // so nothing commits and the pipeline fills up.
    s.block(1, 0);
    s.block(2, 0);
    let mut requests = Vec::new();
    for client in 0..8 {
        requests.push(s.submit(client, put(&format!("k{client}"), "v")));
        s.run(4);
    }
    let pipeline = s.cluster().config().pipeline_prepares_max as u64;
    s.run_until(
        "the primary has a full pipeline of uncommitted ops",
        200,
        |c| {
            let primary = c.replica(0).unwrap();
            primary.op() >= primary.commit() + pipeline
        },
    );
    s.crash(0);
    s.heal();
    for (client, &request) in requests.iter().enumerate() {
        let (_, result) = s.wait_completed(client, SLOW);
        assert_eq!(result, KvResult::Ok);
        s.expect_committed(client, request);
    }
    assert!(s.view_max() >= 1);
    s.restart(0);
    s.converge(SLOW);
}

#[test]
fn do_view_change_with_different_last_normal_views() {
    let mut s = Scenario::new(5, 2);
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    // Replica 4 misses the change to the next view: its last normal view stays 0.
    s.partition(&[4]);
    s.crash(0);
    s.run_until("a new primary without replicas 0 and 4", SLOW, |c| {
        c.primary().is_some_and(|p| p != 0 && p != 4)
    });
    let request = s.submit(1, put("a", "2"));
    s.wait_completed(1, SLOW);
    let view_first = s.view_max();
    let primary = s.cluster().primary().unwrap();
    // Replica 4 comes back, except that it still cannot talk with the current primary, so
    // it stays in its old view change with last normal view 0. Then the primary dies: with
    // two replicas down, the next view change needs all three remaining DoViewChange
    // messages, replica 4's stale one included.
    s.heal();
    s.block(primary, 4);
    s.block(4, primary);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let watch = seen.clone();
    s.drop_where(move |envelope| {
        if let Body::DoViewChange(d) = &envelope.message.body {
            watch
                .borrow_mut()
                .push((envelope.message.view, d.last_normal_view));
        }
        false
    });
    s.crash(primary);
    s.run_until("a primary in a later view", SLOW, |c| {
        c.primary()
            .is_some_and(|p| c.replica(p).unwrap().view() > view_first)
    });
    let seen = seen.borrow().clone();
    // Every replica but 4 was normal in a view >= 1, so replica 4's DoViewChange with last
    // normal view 0 met ones with later last normal views (the primary's own is not on the
    // network, so it counts as seen when replica 4 was not the primary of that view).
    let mixed = seen.iter().any(|&(view, lnv)| {
        lnv == 0
            && (view % 5 != 4
                || seen
                    .iter()
                    .any(|&(other_view, other_lnv)| other_view == view && other_lnv >= 1))
    });
    assert!(
        mixed,
        "no view change heard DoViewChange with last normal views 0 and >= 1: {seen:?}"
    );
    // The op committed in the intermediate view survived the stale log.
    s.expect_committed(1, request);
    s.submit(2, get("a"));
    assert_eq!(s.wait_completed(2, SLOW).1, value("2"));
    s.heal();
    s.restart(0);
    s.restart(primary);
    s.converge(SLOW);
}

/// A replica restarts while another asks for a view change it cannot get alone: it must
/// not recover until f+1 normal replicas, the latest view's primary among them, answer.
#[test]
fn replica_recovers_while_a_view_change_is_asked_for() {
    let mut s = Scenario::new(3, 3);
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    s.crash(2);
    // Replica 1 loses the primary and asks for a view change that nobody can join: it
    // stays in view 0 (asking changes nothing of its own).
    let asked = Rc::new(Cell::new(false));
    let seen = asked.clone();
    s.drop_where(move |envelope| {
        if envelope.from == Node::Replica(1)
            && matches!(envelope.message.body, Body::StartViewChange(_))
        {
            seen.set(true);
        }
        false
    });
    s.partition(&[0]);
    s.run_until("replica 1 asks for a view change", SLOW, |_| asked.get());
    assert_eq!(
        s.replica(1).view(),
        0,
        "a lone replica never raises its view"
    );
    assert_eq!(s.replica(1).status(), Status::Normal);
    s.restart(2);
    s.run(100);
    assert_eq!(
        s.replica(2).status(),
        Status::Recovering,
        "no normal quorum can answer yet"
    );
    s.heal();
    s.run_until("replica 2 recovers", SLOW, |c| {
        c.replica(2).is_some_and(|r| r.status() == Status::Normal)
    });
    assert!(s.replica(2).stats().recoveries >= 1);
    s.submit(1, get("a"));
    assert_eq!(s.wait_completed(1, SLOW).1, value("1"));
    s.converge(SLOW);
}

#[test]
fn client_retry_after_a_view_change_gets_the_same_reply_executed_once() {
    let mut s = Scenario::new(3, 4);
    // Replies to client 0 are lost: its request commits, but it does not hear so.
    s.drop_where(|envelope| {
        envelope.to == Node::Client(0) && matches!(envelope.message.body, Body::Reply(_))
    });
    let commit_before = s.replica(0).commit();
    // Not idempotent: a second execution would answer cas-fail.
    let request = s.submit(0, cas("k", None, "x"));
    s.run_until("the request commits everywhere", 500, |c| {
        (0..3).all(|i| c.replica(i).unwrap().commit() > commit_before)
    });
    assert!(s.cluster().client(0).session.is_busy());
    s.crash(0);
    s.heal();
    let (op, result) = s.wait_completed(0, SLOW);
    assert_eq!(
        result,
        KvResult::Ok,
        "the retry is answered from the client table"
    );
    assert_eq!(op, s.expect_committed(0, request));
    assert!(
        s.cluster().client(0).session.view() >= 1,
        "the answer came from a later view"
    );
    s.restart(0);
    s.converge(SLOW);
}

#[test]
fn lagging_backup_whose_uncommitted_suffix_is_replaced() {
    let mut s = Scenario::new(5, 5);
    // Only replica 4 hears the primary's Prepares, and the primary never hears it back.
    for backup in 1..4 {
        s.block(0, backup);
    }
    s.block(4, 0);
    let op_before = s.replica(4).op();
    s.submit(0, put("a", "stale"));
    s.run_until("replica 4 holds an uncommitted op", 500, |c| {
        c.replica(4).unwrap().op() > op_before
    });
    let stale_op = s.replica(4).op();
    let stale = s
        .replica(4)
        .entry(stale_op)
        .cloned()
        .expect("replica 4 holds its uncommitted op");
    // Replica 4 falls silent and the primary dies: replicas 1..=3 change views without it.
    s.partition(&[4]);
    s.crash(0);
    s.run_until("a new primary among 1..=3", SLOW, |c| {
        c.primary().is_some_and(|p| (1..=3).contains(&p))
    });
    for client in 1..3 {
        s.submit(client, put("a", "fresh"));
        s.wait_completed(client, SLOW);
    }
    s.wait_completed(0, SLOW);
    s.heal();
    s.restart(0);
    s.converge(SLOW);
    let canonical = s.cluster().checker().canonical(stale_op).cloned();
    assert!(
        canonical.is_some() && canonical != Some(stale),
        "op {stale_op} was replaced in the new view"
    );
    assert_eq!(
        s.replica(4).entry(stale_op).cloned(),
        canonical,
        "replica 4 replaced its stale suffix"
    );
}

#[test]
fn two_view_changes_back_to_back() {
    let mut s = Scenario::new(5, 6);
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    s.crash(0);
    s.run_until("the view change to view 1 starts", SLOW, |c| {
        (1..5).any(|i| c.replica(i).unwrap().status() == Status::ViewChange)
    });
    // The primary-to-be of view 1 dies before it can take over.
    s.crash(1);
    s.run_until("a primary in view 2 or later", SLOW, |c| {
        c.primary().is_some_and(|p| p >= 2)
    });
    assert!(s.view_max() >= 2);
    let request = s.submit(1, cas("a", Some("1"), "2"));
    assert_eq!(s.wait_completed(1, SLOW).1, KvResult::Ok);
    s.expect_committed(1, request);
    s.restart(0);
    s.restart(1);
    s.converge(SLOW);
}

#[test]
fn one_replica_down_for_good_while_the_other_two_keep_committing() {
    let mut s = Scenario::new(3, 7);
    s.load(true);
    s.run(300);
    let committed = s.cluster().checker().committed_max();
    s.crash(0);
    s.run(3_000);
    s.load(false);
    s.run_until("every client is answered", SLOW, |c| c.clients_idle());
    assert!(
        s.cluster().checker().committed_max() >= committed + 100,
        "the two survivors keep committing"
    );
    let (a, b) = (s.replica(1), s.replica(2));
    assert_eq!((a.status(), b.status()), (Status::Normal, Status::Normal));
    assert!(s.cluster_mut().check_final().unwrap() >= 1);
}

#[test]
fn replica_so_far_behind_that_it_needs_a_checkpoint() {
    let mut s = Scenario::new(3, 8);
    s.partition(&[2]);
    s.load(true);
    let config = s.cluster().config().clone();
    let behind = 2 * config.checkpoint_interval_ops + config.log_tail_ops;
    s.run_until("the others commit two checkpoints ahead", 20_000, |c| {
        c.replica(0).unwrap().checkpoint_op() > c.replica(2).unwrap().commit() + behind
    });
    s.load(false);
    let before = s.replica(2).stats().checkpoint_transfers;
    // The primary dies as the partition heals: the far-behind replica must take part in
    // the view change, and it can only catch up through a checkpoint.
    s.heal();
    s.crash(0);
    s.run_until("replica 2 catches up", SLOW, |c| {
        let (r1, r2) = (c.replica(1).unwrap(), c.replica(2).unwrap());
        r2.status() == Status::Normal && r2.commit() == r1.commit() && r1.status() == Status::Normal
    });
    assert!(
        s.replica(2).stats().checkpoint_transfers > before,
        "replica 2 caught up through a checkpoint"
    );
    s.restart(0);
    s.converge(SLOW);
}

/// A backup cut off from a healthy cluster rejoins once the partition heals: alone in its
/// view change for view 1, it must not stay there while the healthy replicas (rightly)
/// ignore its StartViewChange for as long as view 0 lasts (fixed in beaacf0).
#[test]
fn partitioned_backup_rejoins_after_heal() {
    let mut s = Scenario::new(3, 9);
    s.partition(&[2]);
    s.load(true);
    s.run(500);
    s.load(false);
    s.heal();
    s.converge(SLOW);
}

/// A new primary must not answer a registration from a client table that lags its log.
///
/// The new primary starts its view with commit 2 and op 3, where op 3 (client 2's
/// registration) evicted client 0. Before beaacf0, its client table still showed client
/// 0's session 1 with no request, so it answered client 0's new registration with session 1
/// ("a retried registration that already committed"): an op older than a reply client 2
/// already had, which the real-time-order check reports.
#[test]
fn new_primary_does_not_answer_a_registration_from_a_stale_client_table() {
    let mut config = scenario_config(3);
    config.clients_max = 2;
    let mut s = Scenario::manual(10, config, 3);
    s.register(0);
    assert_eq!(s.wait_registered(0, 500), 1);
    s.register(1);
    assert_eq!(s.wait_registered(1, 500), 2);
    // Client 2's registration (op 3) evicts client 0. Both backups get its Prepare, which
    // says commit 2, and then hear nothing more from the primary: they never learn that
    // op 3 committed.
    s.register(2);
    s.run_until("both backups hold op 3", 500, |c| {
        (1..3).all(|i| c.replica(i).unwrap().op() >= 3)
    });
    s.block(0, 1);
    s.block(0, 2);
    assert_eq!(s.wait_registered(2, 500), 3);
    s.submit(0, get("a"));
    s.run_until("client 0 learns it was evicted", 500, |c| {
        !c.client(0).session.is_busy()
    });
    assert!(!s.cluster().client(0).session.is_registered());
    // The primary dies. A backup leads the next view with commit 2 < op 3, and cannot
    // commit op 3 again while the backups' acknowledgements are lost.
    s.drop_where(|envelope| matches!(envelope.message.body, Body::PrepareOk(_)));
    s.crash(0);
    s.run_until("a backup leads a new view", SLOW, |c| c.primary().is_some());
    let primary = s.cluster().primary().unwrap();
    assert!(s.replica(primary).commit() < 3);
    s.register(0);
    s.run(300);
    s.heal();
    let session = s.wait_registered(0, SLOW);
    assert!(session > 3, "a fresh session, registered after op 3");
    s.restart(0);
    s.converge(SLOW);
}

/// A replica that promised itself to a view change that never completed rejoins the
/// healthy view once the failure is over.
///
/// Replica 1, the primary-to-be of view 1, hears replica 2 ask for view 1, starts it and
/// records its own DoViewChange, but replica 2 never hears replica 1, so view 1 cannot
/// start. Replica 2 never left view 0 (it asked, nobody answered); when the old primary is
/// heard again it simply goes on. Replica 1 can never go back to view 0: it asks for view
/// 2 from view 1, and the others follow it.
///
/// (Failed before d08a10f: replica 1 counted the DoViewChange it kept for itself as a
/// promise, moved to view 2 and resent StartViewChange for view 2 forever, which replicas 0
/// and 2 ignored while view 0 was healthy.)
#[test]
fn promised_replica_rejoins_after_a_failed_view_change() {
    let mut s = Scenario::new(3, 11);
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    s.drop_where(|envelope| {
        envelope.from == Node::Replica(1)
            && envelope.to == Node::Replica(2)
            && matches!(envelope.message.body, Body::StartViewChange(_))
    });
    s.partition(&[0]);
    s.run_until("replica 1 starts the view change", SLOW, |c| {
        c.replica(1).unwrap().status() == Status::ViewChange
    });
    s.run(100);
    s.heal();
    s.submit(1, put("a", "2"));
    s.wait_completed(1, SLOW);
    s.converge(SLOW);
}

/// Like `promised_replica_rejoins_after_a_failed_view_change`, with the promise made to
/// another replica: replica 3 sends its DoViewChange for view 1 to replica 1, across a
/// partition, so view 1 never starts; replicas 2 and 4 never heard enough asks to start
/// it. When the partition heals, replica 3 (above everyone's view, which it can never come
/// back to) asks for view 2, the others follow it although view 0 is healthy, and every
/// replica must end up in one view again.
#[test]
fn replica_promised_to_an_unreachable_primary_rejoins() {
    let mut s = Scenario::new(5, 12);
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    // Only replica 3 hears enough StartViewChange messages to send a DoViewChange.
    s.drop_where(|envelope| {
        matches!(envelope.message.body, Body::StartViewChange(_))
            && matches!(envelope.to, Node::Replica(2) | Node::Replica(4))
    });
    s.partition(&[2, 3, 4]);
    // Having heard replicas 2 and 4 ask, replica 3 starts view 1 and sends its
    // DoViewChange, which cannot arrive: replica 3 is now in a view nobody else holds.
    s.run_until("replica 3 is in view 1", SLOW, |c| {
        let r3 = c.replica(3).unwrap();
        r3.view() == 1 && r3.status() == Status::ViewChange
    });
    s.run(200);
    assert_eq!(
        s.replica(3).view(),
        1,
        "alone, replica 3 never raises its view"
    );
    // The partition heals while replica 3's calls still go unheard by replicas 2 and 4.
    s.cluster_mut().heal();
    s.run_until("replicas 2 and 4 are normal again", SLOW, |c| {
        [2, 4]
            .iter()
            .all(|&i| c.replica(i).unwrap().status() == Status::Normal)
    });
    s.heal();
    s.submit(1, put("a", "2"));
    s.wait_completed(1, SLOW);
    s.converge(SLOW);
}

/// Issue 7, bug 2: a DoViewChange sent in a replica's previous life must never start a
/// view without an op that committed after the replica restarted.
///
/// Replica 2 sends its DoViewChange for view 1 to replica 1 and crashes before it arrives;
/// the promise it made (to acknowledge nothing of view 0 again) died with its memory. When
/// replica 1 could go back to view 0 from its lone view change, replica 2 recovered into
/// view 0, `a = 2` committed with replicas 0 and 2 alone, and the old DoViewChange then
/// started view 1 at replica 1 without it. Views never go back now: replica 1 stays in
/// view 1, so replica 2 cannot recover into view 0 (replica 1 does not answer from a view
/// change), and the old DoViewChange is stale whenever it arrives.
#[test]
fn old_do_view_change_cannot_start_a_view_without_a_committed_op() {
    let mut s = Scenario::new(3, 21);
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    let held: Rc<RefCell<Option<Envelope>>> = Rc::new(RefCell::new(None));
    let hold = held.clone();
    s.drop_where(move |envelope| {
        let capture = envelope.from == Node::Replica(2)
            && envelope.to == Node::Replica(1)
            && matches!(envelope.message.body, Body::DoViewChange(_));
        if capture {
            hold.borrow_mut().get_or_insert_with(|| envelope.clone());
        }
        capture
    });
    s.partition(&[0]);
    s.run_until("replica 2 sends a DoViewChange to replica 1", SLOW, |_| {
        held.borrow().is_some()
    });
    let old = held.borrow_mut().take().unwrap();
    let Body::DoViewChange(old_dvc) = &old.message.body else {
        unreachable!()
    };
    let old_op = old_dvc.op;
    s.crash(2);
    s.heal();
    s.restart(2);
    // `a = 2` commits without replica 1 ever holding it.
    s.drop_where(|envelope| {
        envelope.to == Node::Replica(1) && matches!(envelope.message.body, Body::Prepare(_))
    });
    s.submit(1, put("a", "2"));
    let (op, _) = s.wait_completed(1, SLOW);
    assert!(op > old_op);
    // Replica 1 is in a view change again; the old DoViewChange arrives, and replica 2's
    // newer ones (which hold `a = 2`) do not.
    s.drop_where(move |envelope| {
        envelope.from == Node::Replica(2)
            && envelope.to == Node::Replica(1)
            && matches!(&envelope.message.body, Body::DoViewChange(dvc) if dvc.op >= op)
    });
    s.partition(&[0]);
    s.inject(old);
    s.run(300);
    s.heal();
    s.submit(2, get("a"));
    assert_eq!(s.wait_completed(2, SLOW).1, value("2"));
    s.converge(SLOW);
}

/// Issue 7, bug 1: a recovering replica keeps no uncommitted entry from an earlier
/// recovery attempt.
///
/// Replica 4 recovers from the view-0 primary, whose log ends with entries only it holds
/// (its Prepares for them were lost). A NewState carries at most half a message, so the
/// first one ends in the middle of those uncommitted entries; then the primary is cut off
/// and the others start view 1, where the clients' retries take those op numbers. Replica
/// 4's next attempt picks the view-1 primary, whose op is below what replica 4 fetched:
/// keeping the fetched entries, it went normal at once holding entries no view chose.
#[test]
fn recovery_attempt_keeps_no_uncommitted_entry_of_an_earlier_attempt() {
    const CLIENTS: usize = 12;
    let mut config = scenario_config(5);
    config.batch_bytes_max = 512;
    config.pipeline_bytes_max = 2048;
    config.pipeline_prepares_max = 16;
    config.message_bytes_max = (2048 + 512) * 2 + 4096;
    config.checkpoint_interval_ops = 10_000;
    let new_state_bytes_max = config.message_bytes_max as usize / 2;
    let mut s = Scenario::with(31, config, CLIENTS);
    // Fill the log until the entries a first NewState carries end just past the commit
    // number plus a few entries.
    let log_bytes = |s: &Scenario| -> usize {
        let r1 = s.replica(1);
        (1..=r1.commit())
            .map(|op| {
                r1.entry(op)
                    .expect("no checkpoint trims the log")
                    .size_bytes()
            })
            .sum()
    };
    let put_bytes = s.replica(1).entry(1).unwrap().size_bytes() + 11;
    let mut n = 0;
    while log_bytes(&s) + 6 * put_bytes < new_state_bytes_max {
        s.submit(0, put("a", &format!("{}", n % 10)));
        s.wait_completed(0, SLOW);
        n += 1;
    }
    s.run(50);
    let committed = s.replica(0).commit();
    assert_eq!(s.replica(0).op(), committed);
    // Only the primary holds the next entries.
    s.crash(4);
    s.drop_where(|envelope| {
        envelope.from == Node::Replica(0) && matches!(envelope.message.body, Body::Prepare(_))
    });
    for client in 0..CLIENTS {
        s.submit(client, put("b", &format!("{}", client % 10)));
    }
    s.run_until("the primary holds every new request", SLOW, |c| {
        c.replica(0).unwrap().op() == committed + CLIENTS as u64
    });
    // Replica 4 gets the first NewState of its recovery from replica 0, and no other.
    let first: Rc<Cell<Option<(u64, u64)>>> = Rc::new(Cell::new(None));
    let seen = first.clone();
    s.drop_where(move |envelope| match &envelope.message.body {
        Body::Prepare(_) => envelope.from == Node::Replica(0),
        Body::NewState(new_state)
            if envelope.from == Node::Replica(0) && envelope.to == Node::Replica(4) =>
        {
            if seen.get().is_some() {
                return true;
            }
            let last = new_state.op_first + new_state.entries.len() as u64 - 1;
            seen.set(Some((last, new_state.commit)));
            false
        }
        _ => false,
    });
    s.restart(4);
    s.run_until("replica 4 receives its first NewState", SLOW, |_| {
        first.get().is_some()
    });
    let (last, commit) = first.get().unwrap();
    assert!(
        commit <= committed && last > committed && last < committed + CLIENTS as u64,
        "the first NewState must end among the uncommitted entries: last {last}, commit {commit}, committed {committed}"
    );
    // The primary is cut off; the others start view 1 and order the retries there.
    s.partition(&[0]);
    s.run_until("replica 4 recovers", SLOW, |c| {
        c.replica(4).unwrap().status() == Status::Normal
    });
    assert!(s.replica(4).view() >= 1);
    s.run_until("every client is answered", SLOW, |c| c.clients_idle());
    s.heal();
    s.converge(SLOW);
}

/// Issue 7, bug 3: what a new primary fetches during a view change stops at the log the
/// DoViewChanges define.
///
/// Replica 1 becomes the primary of view 1 with a log that lags (commit 0, op 3); the best
/// DoViewChange (replica 2's: op 6, commit 6) carries no entries, so replica 1 fetches
/// committed entries from replica 2. By the time replica 2 answers it has moved on to view
/// 2 and committed ops 7 to 9 there. Taking the answer up to the responder's commit put
/// ops of view 2 into view 1's log (and tripped `assert_eq!(log.op(), best.op)`).
///
/// This one drives a single replica directly: in a whole cluster the responder must move
/// on between two ticks of the new primary, which no script can time reliably. The random
/// seeds cover the same ground with timing drawn from the seed.
#[test]
fn new_primary_fetch_stops_at_the_log_the_do_view_changes_define() {
    use vsr::protocol::{
        DoViewChange, Effect, Entry, GetState, Message, NewState, Operation, Prepare, Replica,
        Start,
    };
    use vsr::service::Kv;
    let entry = |op: u64, client: u64| Entry {
        client,
        session: 0,
        request: 0,
        timestamp: 1_000 + op,
        operation: Operation::Register,
        body: bytes::Bytes::new(),
    };
    let config = scenario_config(3);
    let message = |view, replica, body| Message {
        epoch: 0,
        view,
        replica,
        body,
    };
    let mut replica = Replica::new(config, 1, Kv::new(), Start::Fresh);
    let mut effects = Vec::new();
    let prepare = Prepare {
        op_first: 1,
        commit: 0,
        actives_commit: 0,
        stamp: 0,
        entries: (1..=3).map(|op| entry(op, op)).collect(),
    };
    replica.on_message(message(0, 0, Body::Prepare(prepare)), &mut effects);
    replica.complete_writes_in_memory(&mut effects);
    assert_eq!((replica.op(), replica.commit()), (3, 0));
    // Replica 2's DoViewChange for view 1: the best log, ops 1..=6 all committed.
    let dvc = DoViewChange {
        last_normal_view: 0,
        op: 6,
        commit: 6,
        actives_commit: 0,
        entries: Vec::new(),
    };
    effects.clear();
    replica.on_message(message(1, 2, Body::DoViewChange(dvc)), &mut effects);
    replica.complete_writes_in_memory(&mut effects);
    let asked = effects.iter().any(|effect| {
        matches!(effect, Effect::Send { to: 2, message }
            if matches!(message.body, Body::GetState(GetState { op: 0, .. })))
    });
    assert!(
        asked,
        "the new primary fetches the committed entries it lacks"
    );
    // Replica 2 answers from view 2, where ops 7..=9 (other clients) committed since.
    let new_state = NewState {
        sender: 2,
        commit: 9,
        op: 9,
        vouches: true,
        checkpoint: None,
        op_first: 1,
        entries: (1..=9)
            .map(|op| entry(op, if op <= 6 { op } else { 100 + op }))
            .collect(),
    };
    replica.on_message(message(2, 2, Body::NewState(new_state)), &mut effects);
    replica.invariants();
    assert!(replica.is_primary() && replica.view() == 1);
    assert_eq!(replica.op(), 6, "view 1's log is the best DoViewChange's");
    assert_eq!(replica.entry(6), Some(&entry(6, 6)));
    assert_eq!(replica.entry(7), None);
}

/// A brand-new cluster whose replicas all start by recovering (as `vsr replica` does), and
/// one whose answers go missing: replica 0 hears everyone say "empty" and goes normal as
/// the primary of view 0, the others do not hear it, and a client's registration reaches
/// replica 0 first. Replica 0 must not order it before the others joined (once, it did:
/// replicas 1 and 2 then saw one normal replica holding entries where recovery needs f+1,
/// and waited forever; with disks, a power loss there stalls the cluster). When the
/// answers get through, the others start too, and the registration is ordered.
#[test]
fn a_new_clusters_primary_orders_nothing_until_everyone_joined() {
    let mut s = Scenario::manual(51, scenario_config(3), 1);
    for replica in 0..3 {
        s.crash(replica);
    }
    s.drop_where(|envelope| {
        envelope.from == Node::Replica(0)
            && matches!(
                envelope.message.body,
                Body::RecoveryResponse(_) | Body::Prepare(_) | Body::Commit(_)
            )
    });
    for replica in 0..3 {
        s.restart(replica);
    }
    s.run_until("replica 0 starts the cluster", SLOW, |c| {
        c.replica(0).unwrap().status() == Status::Normal
    });
    s.register(0);
    s.run(500);
    assert_eq!(s.replica(0).op(), 0, "ordered before everyone joined");
    assert_eq!(s.replica(1).status(), Status::Recovering);
    assert_eq!(s.replica(2).status(), Status::Recovering);
    s.heal();
    s.wait_registered(0, SLOW);
    s.converge(SLOW);
}

/// The first-start rule holds only in view 0: a new cluster's primary that crashes before
/// ordering anything is replaced by a view change, and the new primary orders at once,
/// though the old one stays down (it does not wait for every replica to join again).
#[test]
fn after_a_view_change_a_new_clusters_next_primary_orders_without_the_one_that_is_down() {
    let mut s = Scenario::manual(52, scenario_config(3), 1);
    for replica in 0..3 {
        s.crash(replica);
    }
    for replica in 0..3 {
        s.restart(replica);
    }
    s.run_until("every replica starts the new cluster", SLOW, |c| {
        (0..3).all(|i| c.replica(i).unwrap().status() == Status::Normal)
    });
    s.crash(0);
    s.run_until("a view change without replica 0", SLOW, |c| {
        c.replica(1).unwrap().view() > 0 && c.replica(1).unwrap().status() == Status::Normal
    });
    s.register(0);
    s.wait_registered(0, SLOW);
}

/// A replica that has lost its memory must not take backups that hold entries, but have
/// not heard of a commit yet, for empty replicas. Replica 0 commits client 0's registration
/// (both backups acknowledged it) and crashes before any backup hears the commit number.
/// Taking their answers for "empty", it would start a new, empty cluster and order another
/// registration at op 1. (Kills a mutant of the "empty" answer in `on_recovery`.)
#[test]
fn backups_holding_uncommitted_entries_are_not_empty_to_a_recovering_primary() {
    let mut s = Scenario::manual(61, scenario_config(3), 2);
    s.drop_where(|envelope| {
        envelope.from == Node::Replica(0)
            && match &envelope.message.body {
                Body::Commit(_) => true,
                Body::Prepare(prepare) => prepare.commit > 0,
                _ => false,
            }
    });
    s.register(0);
    let session = s.wait_registered(0, SLOW);
    assert_eq!(session, 1);
    assert_eq!(
        s.replica(1).commit(),
        0,
        "the backups never heard of the commit"
    );
    s.crash(0);
    s.restart(0);
    s.register(1);
    s.run(400);
    s.heal();
    assert!(s.wait_registered(1, SLOW) > 1);
    s.converge(SLOW);
}

/// A backup that takes part in a view change enters the new view straight from the new
/// primary's StartView: it asks nobody for state. (Kills a mutant that dropped StartView
/// messages for the view a replica is changing to, which the replica then joined only
/// by fetching the view's log.)
#[test]
fn a_backup_in_the_view_change_enters_the_new_view_from_start_view() {
    let mut s = Scenario::new(3, 71);
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    s.converge(SLOW);
    let asked: Rc<RefCell<Vec<Node>>> = Rc::new(RefCell::new(Vec::new()));
    let seen = asked.clone();
    s.drop_where(move |envelope| {
        if matches!(envelope.message.body, Body::GetState(_)) {
            seen.borrow_mut().push(envelope.from);
        }
        // The backups hold the next entry, uncommitted: the new log goes past its commit.
        envelope.to == Node::Replica(0) && matches!(envelope.message.body, Body::PrepareOk(_))
    });
    s.submit(1, put("b", "2"));
    s.run_until("both backups hold the new entry", SLOW, |c| {
        (1..3).all(|i| c.replica(i).unwrap().op() > c.replica(i).unwrap().commit())
    });
    s.crash(0);
    s.run_until("a backup leads a new view", SLOW, |c| {
        c.primary().is_some_and(|p| p != 0)
    });
    let primary = s.cluster().primary().unwrap();
    let backup = 3 - primary;
    s.run_until("the other backup is normal in the new view", SLOW, |c| {
        let r = c.replica(backup).unwrap();
        r.status() == Status::Normal && r.view() >= 1
    });
    assert!(
        !asked.borrow().contains(&Node::Replica(backup)),
        "the StartView carried the new log: {:?}",
        asked.borrow()
    );
    s.heal();
    s.wait_completed(1, SLOW);
}

/// A new primary whose StartView must be cut to half a message (one of the DoViewChanges
/// it used came from a backup far behind, and the entries from the lowest commit number on
/// do not fit) leaves out the oldest committed entries: the backups that hold them enter
/// the view straight from the StartView, and only the lagging one fetches what it lacks.
/// (Kills a mutant that cut the entries without moving `op_first`: every backup dropped
/// the StartView as malformed and joined the view by state transfer.)
#[test]
fn backups_enter_the_view_from_a_start_view_cut_for_a_lagging_peer() {
    let mut s = Scenario::with(81, small_message_config(5), 3);
    // Replica 4 hears nothing from the primary and falls far behind (its asks for a view
    // change go unanswered: the others hear the primary).
    s.block(0, 4);
    let lagging = s.replica(4).commit();
    s.load(true);
    let half_message = s.cluster().config().message_bytes_max as usize / 2;
    s.run_until(
        "more than a StartView holds commits without replica 4",
        SLOW,
        |c| {
            let r1 = c.replica(1).unwrap();
            let bytes: usize = (lagging + 1..=r1.commit())
                .filter_map(|op| r1.entry(op))
                .map(|entry| entry.size_bytes())
                .sum();
            bytes > 2 * half_message
        },
    );
    s.load(false);
    s.run_until("the others are idle at one commit", SLOW, |c| {
        let commit = c.replica(0).unwrap().commit();
        c.clients_idle()
            && (0..4).all(|i| {
                let r = c.replica(i).unwrap();
                r.op() == commit && r.commit() == commit
            })
    });
    assert_eq!(s.replica(4).commit(), lagging);
    let fetched: Rc<RefCell<Vec<Node>>> = Rc::new(RefCell::new(Vec::new()));
    let cut = Rc::new(Cell::new(false));
    let (fetches, cuts) = (fetched.clone(), cut.clone());
    s.drop_where(move |envelope| match &envelope.message.body {
        Body::GetState(_) => {
            fetches.borrow_mut().push(envelope.from);
            false
        }
        Body::StartView(sv) => {
            // Entries from the lagging replica's commit on would not fit.
            cuts.set(cuts.get() || (sv.entries.len() as u64) < sv.op - lagging);
            false
        }
        // The new primary uses the lagging replica's DoViewChange.
        Body::DoViewChange(_) => envelope.from == Node::Replica(2),
        _ => false,
    });
    s.crash(0);
    s.run_until("every live replica is normal in a new view", SLOW, |c| {
        (1..5).all(|i| {
            let r = c.replica(i).unwrap();
            r.status() == Status::Normal && r.view() >= 1
        })
    });
    assert!(cut.get(), "the StartView had to be cut");
    let fetched = fetched.borrow().clone();
    assert!(
        !fetched.contains(&Node::Replica(2)) && !fetched.contains(&Node::Replica(3)),
        "replicas 2 and 3 held every entry the cut StartView left out: {fetched:?}"
    );
    assert!(fetched.contains(&Node::Replica(4)), "{fetched:?}");
    s.heal();
    s.restart(0);
    s.converge(SLOW);
}

/// A backup whose DoViewChange reaches the new primary only after the view started, and
/// which missed the StartView, is sent the StartView again in answer and enters the view
/// from it, without fetching the view's log. (Kills a mutant that ignored the late
/// DoViewChange: the backup waited in its view change until the view's Prepares or Commits
/// reached it, and then joined by state transfer.)
#[test]
fn a_late_do_view_change_is_answered_with_the_start_view() {
    let mut s = Scenario::new(5, 91);
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    s.converge(SLOW);
    let held: Rc<RefCell<Option<Envelope>>> = Rc::new(RefCell::new(None));
    let fetched: Rc<RefCell<Vec<Node>>> = Rc::new(RefCell::new(Vec::new()));
    let start_views_lost = Rc::new(Cell::new(0));
    let (hold, fetches, lost) = (held.clone(), fetched.clone(), start_views_lost.clone());
    s.drop_where(move |envelope| {
        let (from_2, to_2) = (
            envelope.from == Node::Replica(2),
            envelope.to == Node::Replica(2),
        );
        match &envelope.message.body {
            Body::GetState(_) => {
                fetches.borrow_mut().push(envelope.from);
                false
            }
            // The first one is held back (and injected later).
            Body::DoViewChange(_) if from_2 && lost.get() == 0 => {
                hold.borrow_mut().get_or_insert_with(|| envelope.clone());
                true
            }
            Body::StartView(_) if to_2 && lost.get() == 0 => {
                lost.set(1);
                true
            }
            // Replica 2 learns of the new view only from a StartView.
            Body::Prepare(_) | Body::Commit(_) => to_2,
            _ => false,
        }
    });
    s.crash(0);
    s.run_until(
        "a new view starts without replica 2's DoViewChange",
        SLOW,
        |c| c.primary().is_some_and(|p| p != 0),
    );
    let primary = s.cluster().primary().unwrap();
    let view = s.replica(primary).view();
    s.run_until("replica 2 missed the StartView", SLOW, |_| {
        start_views_lost.get() == 1
    });
    let late = held
        .borrow_mut()
        .take()
        .expect("replica 2 sent a DoViewChange");
    assert_eq!(late.message.view, view);
    assert_eq!(s.replica(2).status(), Status::ViewChange);
    s.inject(late);
    // Two message delays (at most 3 steps each) and a margin for the replicas' handling.
    s.run_until("replica 2 enters the view", 50, |c| {
        let r2 = c.replica(2).unwrap();
        r2.status() == Status::Normal && r2.view() == view
    });
    assert!(
        !fetched.borrow().contains(&Node::Replica(2)),
        "replica 2 entered from the StartView: {:?}",
        fetched.borrow()
    );
    s.heal();
    s.restart(0);
    s.converge(SLOW);
}

/// A replica stuck above the others' view (replica 3, alone in view 1, as in
/// `replica_promised_to_an_unreachable_primary_rejoins`) is followed even when the others
/// hear it at different times, while their own view stays healthy and its primary never
/// hears replica 3: the network heals link by link. Replica 1 hears replica 3 first and
/// joins its ask; replica 2 hears it only later, when replica 1 no longer does, and can
/// count replica 1's ask only if replica 1 kept it across its primary's Commits and
/// repeats it on its own clock. Replica 3 must then be normal again within a few
/// view-change timeouts. (Kills two mutants: one that forgot such an ask at the primary's
/// next Commit, one that never repeated an ask; with either, replica 3 stayed out until
/// every link healed.)
#[test]
fn a_replica_stuck_above_is_followed_by_backups_that_hear_it_at_different_times() {
    let mut s = Scenario::new(5, 12);
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    s.drop_where(|envelope| {
        matches!(envelope.message.body, Body::StartViewChange(_))
            && matches!(envelope.to, Node::Replica(2) | Node::Replica(4))
    });
    s.partition(&[2, 3, 4]);
    s.run_until("replica 3 is alone in view 1", SLOW, |c| {
        let r3 = c.replica(3).unwrap();
        r3.view() == 1 && r3.status() == Status::ViewChange
    });
    // Replica 3's DoViewChange for view 1 is lost in the partition.
    s.run(20);
    // Only replica 1 hears replica 3 (which does not hear replica 1 back). Replicas 2
    // and 4, which asked for view 1 while cut off, still hear no asks: they forget their
    // own on hearing their primary.
    s.cluster_mut().heal();
    let stuck_links = [(3, 0), (3, 4), (1, 3)];
    for (from, to) in stuck_links.into_iter().chain([(3, 2)]) {
        s.block(from, to);
    }
    let asked = Rc::new(Cell::new(false));
    let seen = asked.clone();
    s.drop_where(move |envelope| {
        let ask = matches!(envelope.message.body, Body::StartViewChange(_));
        if ask && envelope.from == Node::Replica(1) && envelope.message.view == 2 {
            seen.set(true);
        }
        ask && matches!(envelope.to, Node::Replica(2) | Node::Replica(4))
    });
    s.run_until("replica 1 joins replica 3's ask for view 2", SLOW, |_| {
        asked.get()
    });
    // Replica 1 hears its primary's Commits (every 2 ticks) for a while.
    s.run(100);
    assert_eq!(
        (s.replica(1).status(), s.replica(1).view()),
        (Status::Normal, 0)
    );
    assert_eq!(s.replica(3).view(), 1);
    // Now only replica 2 hears replica 3. Replica 1 cannot hear replica 2 (so it cannot
    // start view 2 on replica 2's ask), and replica 3 does not hear replica 1: replica 2
    // must count replica 1's ask, from the repeats of an ask replica 1 kept.
    s.heal();
    for (from, to) in stuck_links.into_iter().chain([(3, 1), (2, 1)]) {
        s.block(from, to);
    }
    let config = s.cluster().config();
    // Replica 3's ask reaches replica 2 within one view-change timeout of replica 3, replica
    // 1's repeat within one of replica 1; the view change itself takes a few message delays.
    // A tick is at most 6 steps in scenarios.
    let bound = 4 * config.view_change_timeout_ticks * 6;
    let steps = s.run_until("replica 3 is normal again", bound, |c| {
        c.replica(3).unwrap().status() == Status::Normal
    });
    println!("replica 3 followed in {steps} steps (bound {bound})");
    assert!(s.replica(3).view() >= 2);
    s.heal();
    s.converge(SLOW);
}

/// A recovering replica takes no RecoveryResponse addressed to a previous life of its
/// process, not even one answering a later attempt of that life (paper 4.3: the nonce).
/// Such an answer may describe the primary's log as it was before this replica
/// acknowledged more of it: recovering to that op, a replica whose NewState is cut by size
/// would go normal without ops it acknowledged and that may have committed with its help.
/// Every life draws its first nonce afresh and derives the next ones from it, so no nonce
/// is shared across lives. Here replica 2's previous life had the answers to its first
/// attempt lost and those to its second held back; they arrive during the second attempt
/// of its next life, while every live answer is lost. (Kills mutants that made the nonces
/// after the first a constant: the replica then recovered from the stale answers.)
#[test]
fn a_recovery_takes_no_answer_addressed_to_a_previous_life() {
    let mut s = Scenario::with(101, small_message_config(3), 3);
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    // Recovery messages replica 0 received from replica 2 (one per attempt), and the
    // answers to replica 2's second attempt.
    let attempts = Rc::new(Cell::new(0));
    let held: Rc<RefCell<Vec<Envelope>>> = Rc::new(RefCell::new(Vec::new()));
    let (attempt, hold) = (attempts.clone(), held.clone());
    s.drop_where(move |envelope| match &envelope.message.body {
        Body::Recovery(_) if envelope.to == Node::Replica(0) => {
            attempt.set(attempt.get() + 1);
            false
        }
        Body::RecoveryResponse(_) => match attempt.get() {
            1 => true,
            2 => {
                hold.borrow_mut().push(envelope.clone());
                true
            }
            _ => false,
        },
        _ => false,
    });
    s.crash(2);
    s.restart(2);
    s.run_until("replica 2 recovers in its third attempt", SLOW, |c| {
        c.replica(2).unwrap().status() == Status::Normal
    });
    assert_eq!(attempts.get(), 3);
    let stale = held.borrow().clone();
    assert_eq!(stale.len(), 2, "both others answered the second attempt");
    // Replica 2 acknowledges far more than a NewState holds; replica 1 hears none of it.
    s.heal();
    s.block(0, 1);
    s.load(true);
    let half_message = s.cluster().config().message_bytes_max as usize / 2;
    s.run_until("more than two NewStates' worth commits", SLOW, |c| {
        let r0 = c.replica(0).unwrap();
        let bytes: usize = (1..=r0.commit())
            .filter_map(|op| r0.entry(op))
            .map(|entry| entry.size_bytes())
            .sum();
        bytes > 2 * half_message
    });
    s.load(false);
    s.run_until("every client is answered", SLOW, |c| c.clients_idle());
    // The next life: every live answer is lost; the previous life's answers to its second
    // attempt arrive during this life's second attempt.
    let answers: Vec<_> = stale
        .iter()
        .map(|envelope| match &envelope.message.body {
            Body::RecoveryResponse(r) => (envelope.from, envelope.message.view, *r),
            _ => unreachable!(),
        })
        .collect();
    attempts.set(0);
    let attempt = attempts.clone();
    s.drop_where(move |envelope| match &envelope.message.body {
        Body::Recovery(_) if envelope.to == Node::Replica(0) => {
            attempt.set(attempt.get() + 1);
            false
        }
        Body::RecoveryResponse(r) => !answers.contains(&(envelope.from, envelope.message.view, *r)),
        _ => false,
    });
    s.crash(2);
    s.restart(2);
    s.run_until("replica 2's second attempt", SLOW, |_| attempts.get() == 2);
    for envelope in stale {
        s.inject(envelope);
    }
    let config = s.cluster().config();
    s.run(4 * config.recovery_timeout_ticks * 6);
    assert_eq!(
        s.replica(2).status(),
        Status::Recovering,
        "answers to a previous life count for nothing"
    );
    s.heal();
    s.converge(SLOW);
    assert!(s.replica(2).stats().recoveries >= 1);
}

/// Two of five replicas restart at once, one of them the primary of view 0. The other one
/// hears every normal replica answer from view 0 and the primary of view 0 answer that it
/// holds nothing (it is recovering too): that answer is not the primary's log, so it waits
/// until the others have moved to view 1 and recovers from that view's primary, holding
/// every op committed before. (Kills a mutant that took any answer from the latest view's
/// primary: replica 4 went normal at once with an empty log, which the simulator's
/// recovery check reports.)
#[test]
fn a_recovery_waits_while_the_latest_views_primary_recovers_too() {
    let mut s = Scenario::new(5, 111);
    s.load(true);
    s.run(300);
    s.load(false);
    s.run_until("every client is answered", SLOW, |c| c.clients_idle());
    let committed = s.cluster().checker().committed_max();
    assert!(committed > 10);
    s.crash(0);
    s.crash(4);
    s.restart(0);
    s.restart(4);
    s.run_until("replica 4 recovers", SLOW, |c| {
        c.replica(4).unwrap().status() == Status::Normal
    });
    assert!(s.replica(4).view() >= 1, "from the primary of a later view");
    assert!(s.replica(4).op() >= committed);
    s.converge(SLOW);
}

/// Seed 2441136 (found by the long simulator run): asks were counted as the view's
/// StartViewChanges. A replica raised to view 1 on asks alone, sent its DoViewChange,
/// crashed, recovered into view 0 (nobody else had raised) and acknowledged ops there;
/// its DoViewChange, arriving late, started view 1 without them. A DoViewChange must mean
/// that f+1 replicas raised their view: an ask binds its sender to nothing, so it is no
/// call. Driven on one replica: replica 2 raises on replica 1's ask and must send its
/// DoViewChange only once replica 1 says it raised too.
#[test]
fn a_do_view_change_waits_for_calls_from_replicas_that_raised_their_view() {
    use vsr::protocol::{Effect, Message, Replica, Start, StartViewChange};
    use vsr::service::Kv;
    let config = scenario_config(3);
    let message = |view, replica, body| Message {
        epoch: 0,
        view,
        replica,
        body,
    };
    let ask = |sender_view| Body::StartViewChange(StartViewChange { sender_view });
    let sent_do_view_change = |effects: &[Effect]| {
        effects.iter().any(|effect| {
            matches!(effect, Effect::Send { to: 1, message }
                if matches!(message.body, Body::DoViewChange(_)))
        })
    };
    let mut replica = Replica::new(config.clone(), 2, Kv::new(), Start::Fresh);
    let mut effects = Vec::new();
    // Replica 2's primary goes silent: it asks for view 1 ...
    for _ in 0..config.normal_timeout_ticks {
        replica.on_tick(&mut effects);
        replica.complete_writes_in_memory(&mut effects);
    }
    // ... and replica 1 asks too, from view 0: with f = 1 other, replica 2 raises.
    effects.clear();
    replica.on_message(message(1, 1, ask(0)), &mut effects);
    replica.complete_writes_in_memory(&mut effects);
    assert_eq!((replica.view(), replica.status()), (1, Status::ViewChange));
    assert!(
        !sent_do_view_change(&effects),
        "a DoViewChange on asks alone: replica 1 has not raised its view"
    );
    // Replica 1 asks again (it repeats its ask): still no call.
    effects.clear();
    replica.on_message(message(1, 1, ask(0)), &mut effects);
    replica.complete_writes_in_memory(&mut effects);
    assert!(!sent_do_view_change(&effects));
    // Replica 1 raised: its StartViewChange is sent from view 1. Now f+1 replicas are in
    // view 1, and replica 2 sends its DoViewChange to view 1's primary.
    effects.clear();
    replica.on_message(message(1, 1, ask(1)), &mut effects);
    replica.complete_writes_in_memory(&mut effects);
    assert!(sent_do_view_change(&effects));
}

// Reconfiguration (paper 7): the administrator asks for a new configuration while the
// clients keep writing; the checkers hold across epochs (agreement, durability,
// linearizability, and no op executed by the old group after its RECONFIGURATION).

/// Every RECONFIGURATION in the committed log (the checkers' canonical log), by op.
fn reconfigurations(s: &Scenario) -> Vec<u64> {
    let checker = s.cluster().checker();
    (1..=checker.committed_max())
        .filter(|&op| {
            checker
                .canonical(op)
                .is_some_and(|entry| entry.operation == Operation::Reconfigure)
        })
        .collect()
}

/// The RECONFIGURATION reached the backups' logs but no commit number covers it yet.
fn holds_uncommitted_reconfiguration(replica: &vsr::Replica<vsr::service::Kv>) -> bool {
    (replica.commit() + 1..=replica.op()).any(|op| {
        replica
            .entry(op)
            .is_some_and(|entry| entry.operation == Operation::Reconfigure)
    })
}

#[test]
fn the_old_primary_crashes_right_after_the_reconfiguration_commits() {
    let mut s = Scenario::with(21, scenario_config(3), 3);
    s.load(true);
    s.run(300);
    let next = s.reconfigure(&[0, 1, 2], 2, 100); // 3 → 5
    s.run_until("the primary executes the RECONFIGURATION", SLOW, |c| {
        (0..3).any(|i| c.replica(i).is_some_and(|r| r.epoch() == 1))
    });
    let primary = (0..3)
        .find(|&i| s.cluster().replica(i).is_some_and(|r| r.epoch() == 1))
        .expect("found above");
    // Its Commit to the old group and its StartEpochs are lost with it: the backups hold
    // the RECONFIGURATION uncommitted, and must finish it with a view change (7.2).
    s.crash(primary);
    s.drop_where(move |e| {
        e.from == Node::Replica(primary)
            && matches!(e.message.body, Body::Commit(_) | Body::StartEpoch(_))
    });
    s.run(500);
    s.heal();
    s.restart(primary);
    s.wait_epoch(&next, SLOW);
    s.load(false);
    s.converge(SLOW);
    assert_eq!(reconfigurations(&s).len(), 1);
    assert_eq!(s.cluster().newest_configuration(), &next);
}

#[test]
fn every_start_epoch_is_lost() {
    let mut s = Scenario::with(22, scenario_config(3), 3);
    let lost = Rc::new(Cell::new(0u64));
    let counted = lost.clone();
    s.drop_where(move |e| {
        let start_epoch = matches!(e.message.body, Body::StartEpoch(_));
        counted.set(counted.get() + start_epoch as u64);
        start_epoch
    });
    s.load(true);
    s.run(200);
    // Replace the primary: the new member warms up as a learner and executes the
    // RECONFIGURATION that adds it (7.5); the members of both epochs move by executing
    // it, and their EpochStarted lets the replaced one retire.
    let next = s.reconfigure(&[1, 2], 1, 150);
    s.wait_epoch(&next, SLOW);
    s.load(false);
    s.converge(SLOW);
    assert!(s.cluster().is_gone(0), "the replaced replica retired");
    assert_eq!(s.replica(3).status(), Status::Normal);
    assert!(lost.get() > 0, "StartEpochs were sent, and lost");
}

#[test]
fn a_view_change_in_the_old_group_reruns_the_reconfiguration() {
    let mut s = Scenario::with(23, scenario_config(3), 3);
    s.load(true);
    s.run(200);
    s.load(false);
    s.run_until("the clients are idle", SLOW, |c| c.clients_idle());
    let next = s.reconfigure(&[0, 1, 2], 2, 0);
    s.run_until("the administrator registers", SLOW, |c| {
        c.admin().session() != 0
    });
    // The primary orders the RECONFIGURATION but never hears an acknowledgement.
    s.block(1, 0);
    s.block(2, 0);
    s.run_until("both backups hold the RECONFIGURATION", SLOW, |c| {
        [1, 2]
            .iter()
            .all(|&i| c.replica(i).is_some_and(holds_uncommitted_reconfiguration))
    });
    let views_started = s.cluster().stats().views_started;
    s.crash(0);
    s.heal();
    // A new primary whose log ends in an uncommitted RECONFIGURATION commits it and
    // orders nothing after it in the old epoch (7.2); the epoch then starts.
    s.wait_epoch(&next, SLOW);
    assert!(
        s.cluster().stats().views_started > views_started,
        "a new primary of the old epoch committed it"
    );
    s.restart(0);
    s.load(true);
    s.run(300);
    s.load(false);
    s.converge(SLOW);
    assert_eq!(reconfigurations(&s).len(), 1);
}

#[test]
fn f_new_members_crash_during_their_state_transfer() {
    let mut s = Scenario::with(24, small_message_config(3), 3);
    s.load(true);
    s.run(600);
    // No warm-up: the new members get the whole state once the epoch starts, in many
    // NewStates (small messages).
    s.drop_where(|e| matches!(&e.message.body, Body::GetState(g) if g.learner.is_some()));
    let next = s.reconfigure(&[0, 1, 2], 2, 0); // 3 → 5: f' = 2
    for new in [3, 4] {
        s.run_until("a new member transitions", SLOW, |c| {
            c.replica(new)
                .is_some_and(|r| r.status() == Status::Transitioning)
        });
        s.crash(new);
    }
    s.run(300);
    s.restart(3);
    s.restart(4);
    s.heal();
    s.wait_epoch(&next, SLOW);
    s.load(false);
    s.converge(SLOW);
    assert_eq!(s.replica(3).epoch(), 1);
    assert_eq!(s.replica(4).epoch(), 1);
}

#[test]
fn a_replaced_replica_recovers_in_the_middle() {
    let mut s = Scenario::with_disks(25, scenario_config(5), 3);
    s.load(true);
    s.run(200);
    // 5 → 3: replicas 3 and 4 leave. Replica 4 hears no EpochStarted, so it keeps
    // serving the epoch's start (Retiring) until it crashes and comes back from its disk.
    s.drop_where(|e| e.to == Node::Replica(4) && matches!(e.message.body, Body::EpochStarted));
    let next = s.reconfigure(&[0, 1, 2], 0, 0);
    s.run_until("replica 4 is retiring, and its disk says so", SLOW, |c| {
        c.replica(4).is_some_and(|r| r.status() == Status::Retiring) && c.writes_pending(4) == 0
    });
    s.crash(4);
    s.run(100);
    s.restart(4);
    assert_eq!(
        s.replica(4).status(),
        Status::Retiring,
        "its disk says it was replaced"
    );
    s.heal();
    s.wait_epoch(&next, SLOW);
    s.load(false);
    s.converge(SLOW);
    assert!(
        s.cluster().is_gone(3) && s.cluster().is_gone(4),
        "both retired"
    );
}

#[test]
fn a_duplicate_admin_request_reconfigures_once() {
    let mut s = Scenario::with(26, scenario_config(3), 3);
    let requests: Rc<RefCell<Vec<Envelope>>> = Rc::default();
    let seen = requests.clone();
    s.drop_where(move |e| {
        if e.from == Node::Client(usize::MAX) && matches!(e.message.body, Body::Request(_)) {
            seen.borrow_mut().push(e.clone());
        }
        false
    });
    s.load(true);
    s.run(200);
    let next = s.reconfigure(&[0, 1, 2], 2, 50);
    let duplicated = Cell::new(false);
    s.run_until("the RECONFIGURATION is in flight", SLOW, |c| {
        c.admin().proposed().is_some()
    });
    s.run(3);
    // Copies of the request arrive again while it is being ordered...
    for envelope in requests.borrow().clone() {
        s.inject(envelope);
        duplicated.set(true);
    }
    s.wait_epoch(&next, SLOW);
    // ...and after the epoch started, at old and new members alike.
    for envelope in requests.borrow().clone() {
        for to in 0..5 {
            s.inject(Envelope {
                to: Node::Replica(to),
                ..envelope.clone()
            });
        }
    }
    s.run(300);
    s.load(false);
    s.converge(SLOW);
    assert!(duplicated.get());
    assert_eq!(reconfigurations(&s).len(), 1);
    assert_eq!(s.cluster().newest_configuration().epoch(), 1);
}

#[test]
fn a_stale_primary_that_fetches_the_reconfiguration_sends_its_old_view_no_commit() {
    // Bug (seed 676 of the random runs): a primary of a view that a view change replaced
    // fetched the RECONFIGURATION from the new epoch (its pending epoch) and, executing
    // it, sent its old view's backups a Commit up to it (paper 7.1 step 3, which is the
    // step of the primary that committed it): a backup still in that view committed the
    // stale primary's own entry at an op the new view had filled differently.
    let mut s = Scenario::with(27, scenario_config(5), 2);
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    s.run_until("every replica executed it", SLOW, |c| {
        (0..5).all(|i| {
            c.replica(i)
                .is_some_and(|r| r.commit() == c.checker().committed_max())
        })
    });
    // Replica 0, the primary, and replica 1 are cut off: 0 prepares an entry that only
    // 1 receives; the others move to a later view and fill that op differently.
    s.partition(&[0, 1]);
    s.submit(0, put("b", "stale"));
    s.run_until("replica 1 holds the stale entry", SLOW, |c| {
        c.replica(1).is_some_and(|r| r.op() > r.commit())
    });
    s.submit(1, put("b", "new"));
    s.run_until("the others start a later view", SLOW, |c| {
        (2..5).all(|i| {
            c.replica(i)
                .is_some_and(|r| r.view() > 0 && r.status() == Status::Normal)
        })
    });
    // 5 → 3: replicas 0 and 1 leave.
    let next = s.reconfigure(&[2, 3, 4], 0, 0);
    s.run_until("the new epoch runs", SLOW, |c| {
        (2..5).all(|i| {
            c.replica(i)
                .is_some_and(|r| r.epoch() == 1 && r.status() == Status::Normal)
        })
    });
    // Replica 0 hears of it and fetches its start; replica 1 still hears only 0.
    s.heal();
    for other in 2..5 {
        s.block(1, other);
        s.block(other, 1);
    }
    s.run_until("replica 0 executed the RECONFIGURATION", SLOW, |c| {
        c.replica(0).is_none_or(|r| r.epoch() == 1)
    });
    s.run(200);
    s.heal();
    s.wait_epoch(&next, SLOW);
    s.converge(SLOW);
    assert!(s.cluster().is_gone(0) && s.cluster().is_gone(1));
}

#[test]
fn a_replaced_replica_retires_after_its_epochs_members_moved_on() {
    // Bug (seeds 1001230 and others of the long run): a replaced replica of epoch 1 that
    // heard no EpochStarted before epoch 2 began reminded epoch 1's members, which
    // dropped a StartEpoch of an earlier epoch unanswered: it served forever.
    let mut s = Scenario::with(28, scenario_config(5), 2);
    s.drop_where(|e| e.to == Node::Replica(4) && matches!(e.message.body, Body::EpochStarted));
    s.load(true);
    s.run(100);
    let first = s.reconfigure(&[0, 1, 2], 0, 0); // 5 → 3: 3 and 4 leave.
    s.wait_epoch(&first, SLOW);
    assert_eq!(s.replica(4).status(), Status::Retiring);
    let second = s.reconfigure(&[1, 2], 1, 50); // 0 is replaced by 5.
    s.wait_epoch(&second, SLOW);
    // It hears no EpochStarted yet: it is still serving, in epoch 1 (or in epoch 2,
    // once a member of epoch 1 answered its reminder with where the cluster went).
    assert_eq!(s.replica(4).status(), Status::Retiring);
    s.heal();
    s.load(false);
    s.converge(SLOW);
    assert!((0..5)
        .filter(|&i| i != 1 && i != 2)
        .all(|i| s.cluster().is_gone(i)));
}

#[test]
fn a_reconfiguration_refused_as_evicted_leaves_its_primary_ordering() {
    // Bug (seed 26 of the random runs): a registration ordered just before the
    // RECONFIGURATION evicted the administrator's session, so the RECONFIGURATION
    // executed as refused and the epoch went on; but its primary still held it as the
    // epoch's last op and dropped every request until a view change that never came.
    let mut config = scenario_config(3);
    config.clients_max = 3;
    let mut s = Scenario::manual(29, config, 3);
    for client in 0..2 {
        s.register(client);
        s.wait_registered(client, 500);
    }
    s.cluster_mut().register_admin();
    s.run_until("the administrator registers", 500, |c| {
        c.admin().session() != 0
    });
    // The administrator's session becomes the oldest (by latest op) of a full table.
    for client in 0..2 {
        s.submit(client, put("a", "1"));
        s.wait_completed(client, 500);
    }
    // Nothing commits while client 2 registers and the RECONFIGURATION is ordered after
    // it: executing the registration evicts the administrator.
    s.block(1, 0);
    s.block(2, 0);
    s.register(2);
    s.run_until("the primary ordered the registration", 500, |c| {
        c.replica(0).is_some_and(|r| r.op() > r.commit())
    });
    let next = s.reconfigure(&[0, 1, 2], 2, 0);
    s.run_until(
        "the primary ordered the RECONFIGURATION after it",
        500,
        |c| c.replica(0).is_some_and(holds_uncommitted_reconfiguration),
    );
    s.heal();
    s.wait_epoch(&next, SLOW);
    assert_eq!(reconfigurations(&s).len(), 2, "refused once, then executed");
    s.converge(SLOW);
}

#[test]
fn a_replica_two_epochs_behind_moves_straight_to_the_later_one() {
    // Bug (seed 627 of the random runs): a replica of epoch 0 told of epoch 2 fetched its
    // start as the next epoch's, got a checkpoint past epoch 1's RECONFIGURATION, never
    // executed that one, and stayed in epoch 0 holding ops of epochs 1 and 2.
    let mut s = Scenario::with(30, scenario_config(5), 3);
    s.partition(&[4]);
    s.load(true);
    s.run(100);
    let runs = |epoch: u32, members: &'static [u8]| {
        move |c: &vsr::sim::Cluster| {
            c.reconfigurations_done()
                && members.iter().all(|&i| {
                    c.replica(i)
                        .is_some_and(|r| r.epoch() == epoch && r.status() == Status::Normal)
                })
        }
    };
    s.reconfigure(&[0, 1, 2, 4], 1, 50); // 3 is replaced by 5.
    s.run_until(
        "epoch 1 runs without replica 4",
        SLOW,
        runs(1, &[0, 1, 2, 5]),
    );
    let start = s.replica(0).epoch_start();
    s.run_until("epoch 1 checkpointed past its start", SLOW, |c| {
        c.checker().committed_max() > start + 64
    });
    s.load(false);
    s.run_until("the clients are idle", SLOW, |c| c.clients_idle());
    s.reconfigure(&[0, 1, 4, 5], 1, 50); // 2 is replaced by 6.
    s.run_until(
        "epoch 2 runs without replica 4",
        SLOW,
        runs(2, &[0, 1, 5, 6]),
    );
    assert_eq!(s.replica(4).epoch(), 0, "replica 4 heard of neither change");
    s.heal();
    s.converge(SLOW);
    assert_eq!(s.replica(4).epoch(), 2);
}

#[test]
fn a_replaced_replica_left_behind_retires_after_every_member_restarted_from_disk() {
    // Replicas restarted from their disks keep only their current configuration; a
    // replica replaced while it was cut off, still in the epoch before, must still learn
    // where the cluster went and retire. (Seeds 1000800 and 1007946 of the long run once
    // stalled so, before a rebase changed their runs; this script does not reach that
    // exact path, see `tell_every_other_replica`.)
    let mut s = Scenario::with_disks(31, scenario_config(5), 2);
    s.load(true);
    s.run(100);
    let first = s.reconfigure(&[0, 1, 2, 3, 4], 2, 50); // 5 → 7
    s.wait_epoch(&first, SLOW);
    s.partition(&[4]);
    s.run(50);
    s.reconfigure(&[0, 1, 2, 5, 6], 0, 0); // 7 → 5: 3 and 4 leave.
    s.run_until("epoch 2 runs without replica 4", SLOW, |c| {
        c.reconfigurations_done()
            && [0, 1, 2, 5, 6].iter().all(|&i| {
                c.replica(i)
                    .is_some_and(|r| r.epoch() == 2 && r.status() == Status::Normal)
            })
    });
    // Every member restarts from its disk, one at a time: none remembers epoch 1.
    for member in [0, 1, 2, 5, 6] {
        s.run_until("the member's writes are durable", SLOW, |c| {
            c.writes_pending(member) == 0
        });
        s.crash(member);
        s.restart(member);
        s.run(50);
    }
    assert_eq!(s.replica(4).epoch(), 1, "replica 4 heard of nothing");
    s.heal();
    s.load(false);
    s.converge(SLOW);
    assert!(
        s.cluster().is_gone(3) && s.cluster().is_gone(4),
        "both retired"
    );
}
