//! Scripted scenarios for replicas with disks (`ClusterOptions::disks`): a restart
//! resumes from what the replica's completed writes made durable, and no fault of the
//! disks loses an acknowledged write as long as at most f replicas lose or corrupt theirs.
//! The checkers run after every step as in every scenario; `converge` then compares every
//! replica with the reference model, which holds every write a client was told committed.

use vsr::protocol::Status;
use vsr::sim::scenario::{put, scenario_config};
use vsr::sim::Scenario;

/// Steps to wait for anything that needs a view change or a recovery.
const SLOW: u64 = 5_000;

/// Every client that got a reply keeps it: the model holds each acknowledged write, and
/// `converge` compares the replicas' state with it.
fn acknowledged(s: &Scenario) -> u64 {
    s.cluster().checker().counts.replies_checked
}

#[test]
fn a_power_loss_mid_pipeline_loses_no_acknowledged_write() {
    let mut s = Scenario::with_disks(31, scenario_config(3), 3);
    s.load(true);
    s.run(600);
    // Cut while writes are in flight: some batches are lost with the power.
    s.run_until("writes in flight on every replica", 500, |c| {
        (0..3).all(|index| c.writes_pending(index) > 0)
    });
    let before = acknowledged(&s);
    assert!(before > 20, "only {before} replies before the power loss");
    s.power_loss();
    s.run(50);
    for index in 0..3 {
        s.restart(index);
        // Resumed from its disk: nobody recovers through the protocol.
        assert_ne!(s.replica(index).status(), Status::Recovering);
        assert!(s.replica(index).op() > 0, "r{index} read nothing back");
    }
    s.run(500);
    s.load(false);
    s.converge(SLOW);
    assert!(
        acknowledged(&s) > before,
        "no progress after the power loss"
    );
    for index in 0..3 {
        assert_eq!(s.replica(index).stats().recoveries, 0, "r{index} recovered");
    }
}

#[test]
fn a_torn_write_at_the_tail_loses_only_what_nobody_relied_on() {
    let mut s = Scenario::with_disks(32, scenario_config(3), 3);
    s.load(true);
    s.run(400);
    // A backup crashes with its last batch half written: the batch is lost whole.
    s.run_until("a backup with writes in flight", 500, |c| {
        c.writes_pending(1) > 0 && c.primary() == Some(0)
    });
    let op_before = s.replica(1).op();
    s.crash(1);
    s.restart(1);
    assert_eq!(s.replica(1).status(), Status::Normal, "a backup resumes");
    assert!(s.replica(1).op() < op_before, "the torn batch held entries");
    s.run(300);
    s.load(false);
    s.converge(SLOW);
    assert_eq!(s.replica(1).stats().recoveries, 0);
}

#[test]
fn a_restarted_primary_starts_the_next_view_instead_of_resuming_its_own() {
    let mut s = Scenario::with_disks(33, scenario_config(3), 3);
    s.load(true);
    s.run(400);
    let view = s.replica(0).view();
    s.crash(0);
    s.restart(0);
    // Its pipeline is gone and its disk may lack entries it sent in Prepares: ordering
    // new requests at those ops in the same view would give one op two meanings.
    assert_eq!(s.replica(0).status(), Status::ViewChange);
    assert_eq!(s.replica(0).view(), view + 1);
    s.run(300);
    s.load(false);
    s.converge(SLOW);
    assert!(s.view_max() > view);
}

#[test]
fn a_corrupted_committed_entry_waits_for_the_replica_that_is_down() {
    let mut s = Scenario::with_disks(34, scenario_config(3), 3);
    s.load(true);
    s.run(600);
    s.load(false);
    s.run_until("writes settle", SLOW, |c| c.clients_idle());
    let committed = s.replica(0).commit();
    assert!(committed > 20);
    // Replica 2 is down (its disk intact); replica 1's disk rots in the middle of what
    // committed. With f = 1 it cannot recover from replica 0 alone: its f+1 answers
    // need replica 2, and it must neither use nor deny the entries it lost meanwhile.
    s.crash(2);
    s.crash(1);
    s.cluster_mut().damage_disk_at(1, committed / 2);
    s.restart(1);
    assert_eq!(s.replica(1).status(), Status::Recovering);
    s.run(1_000);
    assert_eq!(
        s.replica(1).status(),
        Status::Recovering,
        "recovered without f+1 answers"
    );
    s.restart(2);
    s.run_until("replica 1 recovers", SLOW, |c| {
        c.replica(1).is_some_and(|r| r.status() == Status::Normal)
    });
    assert!(s.replica(1).op() >= committed);
    s.submit(0, put("a", "after"));
    s.wait_completed(0, SLOW);
    s.converge(SLOW);
}

#[test]
fn a_replica_whose_disk_held_data_never_starts_an_empty_cluster() {
    let mut s = Scenario::with_disks(35, scenario_config(3), 3);
    s.load(true);
    s.run(400);
    s.load(false);
    s.power_loss();
    // More than f replicas lost their data: replica 0's disk is damaged, the other two
    // are new machines. The data is gone; that must stay loud, never become an empty
    // cluster that answers as if nothing had been written.
    s.cluster_mut().damage_disk_at(0, 1);
    s.cluster_mut().wipe_disk(1);
    s.cluster_mut().wipe_disk(2);
    for index in 0..3 {
        s.restart(index);
    }
    s.run(2_000);
    for index in 0..3 {
        assert_eq!(s.replica(index).status(), Status::Recovering, "r{index}");
        assert_eq!(s.replica(index).stats().empty_cluster_starts, 0, "r{index}");
    }
}

#[test]
fn a_power_loss_during_a_new_clusters_first_start_stalls_nothing() {
    use vsr::protocol::Body;
    use vsr::sim::network::Node;
    let mut s = Scenario::new_cluster_with_disks(35, scenario_config(3), 1);
    // Only replica 0 hears the others' answers: it starts the cluster as view 0's primary,
    // while the two backups stay in recovery, never having joined.
    s.drop_where(|e| {
        matches!(e.message.body, Body::RecoveryResponse(_)) && e.to != Node::Replica(0)
    });
    s.run_until("replica 0 starts the new cluster", 2_000, |c| {
        c.replica(0).is_some_and(|r| r.status() == Status::Normal)
    });
    assert_eq!(s.replica(1).status(), Status::Recovering);
    // A client's registration reaches the primary, which must not order it alone: were
    // it in its log, the power loss below would leave it restarting into a view change
    // that needs backups which, never having joined, wait in recovery for normal answers.
    s.register(0);
    s.run(200);
    assert_eq!(
        s.replica(0).op(),
        0,
        "the primary ordered before everyone joined"
    );
    s.power_loss();
    s.heal();
    for index in 0..3 {
        s.restart(index);
    }
    s.wait_registered(0, SLOW);
    s.submit(0, put("k", "v"));
    s.wait_completed(0, SLOW);
    s.converge(SLOW);
}
