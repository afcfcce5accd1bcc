//! Witnesses (paper 6.1) in scripted simulator scenarios: members that store the log and
//! vote but never execute, lead, serve reads or keep checkpoints. The checkers run after
//! every step (agreement, durability, linearizability, exactly-once; a witness's service
//! must stay as it started, and `Replica::invariants` asserts it never leads or holds
//! state); each scenario also asserts its own outcome.

use vsr::protocol::{Op, ReplicaIndex, ReplicaSet, Status};
use vsr::service::kv::KvResult;
use vsr::sim::scenario::{get, put, scenario_config};
use vsr::sim::{Cluster, Scenario};
use vsr::Config;

/// Steps to wait for anything that needs a view change or a recovery.
const SLOW: u64 = 4_000;

/// Three replicas, 0 and 1 active, 2 the witness.
fn with_witness(seed: u64) -> Scenario {
    Scenario::with(seed, witness_config(3, ReplicaSet::of(2)), 3)
}

/// `scenario_config(replicas)` with `witnesses` the witnesses.
fn witness_config(replicas: u8, witnesses: ReplicaSet) -> Config {
    let mut config = scenario_config(replicas);
    config.witnesses = witnesses;
    config
}

/// The clients submit until `until` holds; returns once every one is answered.
fn load_until(s: &mut Scenario, what: &str, until: impl FnMut(&Cluster) -> bool) {
    s.load(true);
    s.run_until(what, 30_000, until);
    s.load(false);
    s.run_until("every client is answered", SLOW, |c| c.clients_idle());
}

fn value(s: &str) -> KvResult {
    KvResult::Value(bytes::Bytes::copy_from_slice(s.as_bytes()))
}

/// The scenario: active A dies, writes go on with the witness, A comes back,
/// then B dies: nothing is lost. Then the harder variant: the only log holding the last
/// writes is the witness's, and the new primary fetches them from it.
#[test]
fn an_active_dies_writes_go_on_with_the_witness_and_nothing_is_lost() {
    let mut s = with_witness(1);
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    // A (replica 1) dies: replica 0 and the witness commit without it.
    s.crash(1);
    let during = s.submit(0, put("a", "2"));
    s.wait_completed(0, SLOW);
    s.expect_committed(0, during);
    // A comes back and recovers (4.3) from the primary, then B (replica 0) dies: A leads
    // view 1 with the witness (it never leads itself).
    s.restart(1);
    s.run_until("replica 1 recovered", SLOW, |c| {
        c.replica(1).is_some_and(|r| r.status() == Status::Normal)
    });
    s.crash(0);
    let after = s.submit(1, put("b", "1"));
    s.wait_completed(1, SLOW);
    s.expect_committed(1, after);
    assert_eq!(
        s.cluster().primary(),
        Some(1),
        "the active leads, never the witness"
    );
    s.submit(2, get("a"));
    assert_eq!(s.wait_completed(2, SLOW).1, value("2"));

    // Now A (replica 1, the primary) is cut off from B while B comes back... the other
    // way round: B restarts and recovers, then cannot hear the primary while the primary
    // and the witness commit more. The primary dies: B's view change finds the last
    // writes only in the witness's log.
    s.restart(0);
    s.run_until("replica 0 recovered", SLOW, |c| {
        c.replica(0).is_some_and(|r| r.status() == Status::Normal)
    });
    s.block(1, 0);
    s.block(0, 1);
    let only_at_witness = s.submit(0, put("c", "1"));
    s.wait_completed(0, SLOW);
    let op = s.expect_committed(0, only_at_witness);
    assert!(s.replica(0).op() < op, "replica 0 never heard of the op");
    assert!(s.replica(2).op() >= op, "the witness holds it");
    s.crash(1);
    s.heal();
    s.submit(1, get("c"));
    assert_eq!(s.wait_completed(1, SLOW).1, value("1"));
    assert_eq!(s.cluster().primary(), Some(0));
    s.restart(1);
    s.converge(SLOW);
}

/// While every active answers in time the witness takes no part in the normal case
/// (paper 6.1): the primary sends it no Prepare, it stores nothing, and it hears the
/// primary's Commits often enough never to call for a view change.
#[test]
fn an_uninvolved_witness_stores_nothing_while_the_actives_answer() {
    let mut s = with_witness(4);
    let config = s.cluster().config().clone();
    load_until(&mut s, "two checkpoint intervals commit", |c| {
        c.replica(0).unwrap().commit() > 2 * config.checkpoint_interval_ops
    });
    let primary = s.replica(0);
    assert_eq!(primary.stats().witness_involvements, 0);
    assert!(!primary.involves_witnesses());
    let witness = s.replica(2);
    assert_eq!(witness.op(), 0, "the witness was sent nothing");
    assert_eq!(witness.status(), Status::Normal);
    assert_eq!(witness.view(), 0, "nobody called for a view change");
    assert_eq!(witness.stats().view_changes, 0);
    s.converge(SLOW);
}

/// An active that stops answering brings the witness in: the primary's prepare timeout
/// involves it, the writes commit with its acknowledgements, and once the active is
/// back and has acknowledged the log as it stood, the witness steps back and stores
/// nothing more.
#[test]
fn the_witness_steps_in_while_an_active_is_cut_off_and_back_out_after() {
    let mut s = with_witness(5);
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    assert_eq!(s.replica(2).op(), 0);
    // Replica 1 hears nothing from the primary (a partition of one direction keeps the
    // primary from learning anything else).
    s.block(0, 1);
    let during = s.submit(0, put("a", "2"));
    s.wait_completed(0, SLOW);
    let op = s.expect_committed(0, during);
    assert!(
        s.replica(1).op() < op,
        "the cut-off active holds none of it"
    );
    assert!(s.replica(2).op() >= op, "the witness acknowledged it");
    assert!(s.replica(0).involves_witnesses());
    assert_eq!(s.replica(0).stats().witness_involvements, 1);
    s.heal();
    s.run_until("the witness steps back", SLOW, |c| {
        !c.replica(0).unwrap().involves_witnesses()
    });
    let witness_op = s.replica(2).op();
    for round in 0..20 {
        s.submit(0, put("b", &round.to_string()));
        s.wait_completed(0, SLOW);
    }
    assert_eq!(s.replica(2).op(), witness_op, "the witness stepped back");
    assert_eq!(s.replica(0).view(), 0, "no view change");
    s.submit(1, get("a"));
    assert_eq!(s.wait_completed(1, SLOW).1, value("2"));
    s.converge(SLOW);
}

/// A witness's log stays bounded: the primary tells it how far the actives executed,
/// and it trims below that (keeping the tail), whether or not it is involved now.
#[test]
fn a_witness_trims_its_log_as_the_actives_execute() {
    let mut s = with_witness(2);
    let config = s.cluster().config().clone();
    s.load(true);
    // The active 1 is cut off now and then: the witness takes part meanwhile.
    for _ in 0..8 {
        s.block(0, 1);
        s.run(1_000);
        s.heal();
        s.run(1_000);
    }
    s.run_until("several checkpoint intervals commit", 30_000, |c| {
        c.replica(0).unwrap().commit() > 8 * config.checkpoint_interval_ops
    });
    s.load(false);
    s.run_until("every client is answered", SLOW, |c| c.clients_idle());
    s.run(200);
    assert!(s.replica(0).stats().witness_involvements > 0);
    let witness = s.replica(2);
    assert!(witness.is_witness());
    assert!(witness.checkpoint().is_none() && witness.stats().checkpoints == 0);
    let held = witness.op() - witness.log_base();
    assert!(
        witness.op() > config.log_tail_ops
            && witness.log_base() > 0
            && held <= config.log_tail_ops + 4 * config.checkpoint_interval_ops,
        "the witness holds {held} entries from {}",
        witness.log_base()
    );
    s.converge(SLOW);
}

/// Active 1 is cut off while the primary commits with the witness past two checkpoints
/// and the log tail, then a last write ("z" = "last"); returns that write's op.
fn commit_past_a_lagging_active(s: &mut Scenario) -> Op {
    let config = s.cluster().config().clone();
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    s.block(0, 1);
    let lagging = s.replica(1).commit();
    let past_the_tail = lagging + 2 * config.checkpoint_interval_ops + config.log_tail_ops;
    load_until(s, "the primary checkpoints past the lagging active", |c| {
        c.replica(0).unwrap().commit() > past_the_tail
    });
    let last = s.submit(0, put("z", "last"));
    s.wait_completed(0, SLOW);
    s.expect_committed(0, last)
}

/// A witness that loses its memory gets back its copies of the entries an active lacks
/// (seed 1011175 found this). Active 1 is cut off while the primary commits with the
/// witness past a checkpoint and its log tail: the witness's log is then the second copy
/// of those ops. The witness crashes and recovers: the primary must still hold them in
/// its log (no replica trims what not every active executed) and hand them to the
/// witness, or the primary failing next leaves active 1 nowhere to find them.
#[test]
fn a_witness_that_lost_its_memory_recovers_the_entries_an_active_lacks() {
    let mut s = with_witness(6);
    let config = s.cluster().config().clone();
    let op = commit_past_a_lagging_active(&mut s);
    let lagging = s.replica(1).commit();
    assert!(s.replica(0).checkpoint_op() > lagging + config.log_tail_ops);
    assert!(
        s.replica(0).log_base() <= lagging,
        "the primary keeps what active 1 lacks"
    );

    s.crash(2);
    s.restart(2);
    s.run_until("the witness recovered", SLOW, |c| {
        c.replica(2).is_some_and(|r| r.status() == Status::Normal)
    });
    let witness = s.replica(2);
    assert!(witness.op() >= op, "the witness holds the last write again");
    assert!(
        witness.log_base() <= s.replica(1).commit(),
        "the witness's log reaches down to what active 1 lacks"
    );

    // The primary fails: active 1 leads with the witness, whose log alone holds the ops.
    s.crash(0);
    s.heal();
    s.submit(1, get("z"));
    assert_eq!(s.wait_completed(1, SLOW).1, value("last"));
    assert_eq!(s.cluster().primary(), Some(1));
    s.restart(0);
    s.converge(SLOW);
}

/// A witness is never primary, whichever replicas fail: with five replicas and two
/// witnesses, view changes skip them.
#[test]
fn witnesses_never_lead() {
    let config = witness_config(5, ReplicaSet::from_low_bits(0b00110));
    let mut s = Scenario::with(3, config, 3);
    for round in 0..3u8 {
        let primary = s.cluster().primary().expect("a primary");
        assert!(![1, 2].contains(&primary), "witness {primary} leads");
        s.crash(primary);
        let request = s.submit(0, put("k", &round.to_string()));
        s.wait_completed(0, SLOW);
        s.expect_committed(0, request);
        s.restart(primary);
        s.run_until("the crashed primary recovered", SLOW, |c| {
            c.replica(primary)
                .is_some_and(|r| r.status() == Status::Normal)
        });
    }
    for witness in [1, 2] as [ReplicaIndex; 2] {
        assert!(s.replica(witness).is_witness());
    }
    s.converge(SLOW);
}

/// A witness the primary never needed holds nothing, and answers a recovery as empty;
/// it is normal all the same, and counts toward the f+1 normal answers a recovery needs
/// (paper 4.3). Five replicas, the witness never involved (the cluster is idle), two
/// actives lose their memory: the primary, the other active and the witness are the
/// three answers each needs. They used to wait for a write to involve the witness.
#[test]
fn two_actives_recover_in_an_idle_cluster_whose_witness_holds_nothing() {
    let mut s = Scenario::with(7, witness_config(5, ReplicaSet::of(4)), 2);
    s.run(200);
    assert_eq!(s.replica(4).op(), 0, "the witness was sent nothing");
    s.crash(1);
    s.crash(2);
    s.restart(1);
    s.restart(2);
    s.run_until("both recovered without a write", SLOW, |c| {
        [1, 2]
            .iter()
            .all(|&i| c.replica(i).is_some_and(|r| r.status() == Status::Normal))
    });
    s.submit(0, put("a", "1"));
    s.wait_completed(0, SLOW);
    s.converge(SLOW);
}

/// A new primary that lacks committed entries asks the best log's sender first; when that
/// is a witness that trimmed them (it has no checkpoint to offer), it turns to the other
/// senders in turn (`view_change_fetch_source`). Five replicas, witness 4: active 1 lags
/// far behind while the others commit and the witness trims; the last op reaches only the
/// witness; the primary fails, and active 1 leads the next view.
#[test]
fn a_new_primary_fetches_what_a_witness_trimmed_from_another_sender() {
    let mut config = witness_config(5, ReplicaSet::of(4));
    // Time for the fetch to time out at the witness and go on elsewhere, within the view.
    config.view_change_timeout_ticks = 10 * config.state_transfer_timeout_ticks;
    let mut s = Scenario::with(8, config, 3);
    let config = s.cluster().config().clone();
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    // Active 2 late too for a moment: the primary involves the witness, and keeps it
    // involved while active 1 stays cut off.
    s.block(0, 1);
    s.block(0, 2);
    s.submit(0, put("a", "2"));
    s.wait_completed(0, SLOW);
    assert!(s.replica(0).involves_witnesses());
    s.heal();
    s.block(0, 1);
    let lagging = s.replica(1).commit();
    load_until(&mut s, "the witness trims past the lagging active", |c| {
        c.replica(4).unwrap().log_base() > lagging + config.log_tail_ops
    });
    // The last op reaches the witness alone.
    s.block(0, 2);
    s.block(0, 3);
    s.run(8); // What was on its way arrives (well within a normal timeout).
    s.submit(0, put("z", "last"));
    s.run_until("the witness holds the last op", SLOW, |c| {
        let op = |i| c.replica(i).unwrap().op();
        op(4) > op(2).max(op(3))
    });
    s.crash(0);
    s.heal();
    s.run_until("a view with a primary", SLOW, |c| c.primary().is_some());
    assert_eq!(s.cluster().primary(), Some(1), "the lagging active leads");
    assert_eq!(
        s.replica(1).view(),
        1,
        "in the first view after the failure"
    );
    s.submit(1, get("z"));
    assert_eq!(s.wait_completed(1, SLOW).1, value("last"));
    s.restart(0);
    s.converge(SLOW);
}

/// Five replicas, witnesses 3 and 4. Active 2 lags while the others commit past a
/// checkpoint; active 1 then loses its memory and recovers by that checkpoint, so its log
/// starts above ops that active 2 lacks and that only active 0's state, active 1's state
/// and the witnesses' logs hold. Active 0 fails and active 1 leads. A witness that loses
/// its memory now must not recover from active 1's log by skipping those ops (the
/// witnesses would no longer hold them): active 1 answers it only once the actives'
/// commit reaches its log (active 0 back, or active 2 caught up).
#[test]
fn witnesses_do_not_recover_from_a_log_that_starts_above_the_actives_commit() {
    let config = witness_config(5, ReplicaSet::from_low_bits(0b11000));
    let mut s = Scenario::with(9, config, 3);
    let config = s.cluster().config().clone();
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    s.block(0, 2);
    let lagging = s.replica(2).commit();
    s.submit(0, put("x", "1"));
    s.wait_completed(0, SLOW);
    load_until(&mut s, "the primary checkpoints past its log tail", |c| {
        c.replica(0).unwrap().checkpoint_op() > lagging + 2 * config.log_tail_ops
    });
    s.crash(1);
    s.restart(1);
    s.run_until("active 1 recovered by a checkpoint", SLOW, |c| {
        let r = c.replica(1).unwrap();
        r.status() == Status::Normal && r.log_base() > lagging
    });
    // Active 0 fails; active 2, cut off, stays behind in view 0 while active 1 and the
    // witnesses start view 1. Then it hears witness 3 alone: it answers its recovery.
    s.crash(0);
    s.partition(&[2]);
    s.run_until("active 1 leads with both witnesses", SLOW, |c| {
        c.primary() == Some(1)
            && [3, 4]
                .iter()
                .all(|&w| c.replica(w).is_some_and(|r| r.status() == Status::Normal))
    });
    s.heal();
    for other in [1, 4] {
        s.block(other, 2);
        s.block(2, other);
    }
    s.crash(3);
    s.restart(3);
    s.run(SLOW);
    let witness = s.replica(3);
    assert!(
        witness.status() == Status::Recovering || witness.log_base() <= lagging,
        "witness 3 recovered from a log that starts at {} above active 2's commit {lagging}",
        witness.log_base()
    );
    s.heal();
    s.restart(0);
    s.run_until("witness 3 recovered", SLOW, |c| {
        c.replica(3).is_some_and(|r| r.status() == Status::Normal)
    });
    s.submit(2, get("x"));
    assert_eq!(s.wait_completed(2, SLOW).1, value("1"));
    s.converge(SLOW);
}

// Witnesses with disks (`ClusterOptions::disks`): a witness keeps its log in its journal,
// trimmed by its log starts (it keeps no checkpoint), and every replica keeps what it
// heard of the actives' commit (ARCHITECTURE.md, "Witnesses" and "Restarting from disk").

/// Three replicas with disks, 0 and 1 active, 2 the witness.
fn with_witness_and_disks(seed: u64) -> Scenario {
    Scenario::with_disks(seed, witness_config(3, ReplicaSet::of(2)), 3)
}

/// Every client that got a reply keeps it: the model holds each acknowledged write, and
/// `converge` compares the replicas' state with it.
fn acknowledged(s: &Scenario) -> u64 {
    s.cluster().checker().counts.replies_checked
}

/// Load while active 1 is cut off now and then, so that the witness takes part, holds
/// entries and trims its log as the actives' commit moves.
fn load_with_the_witness_involved(s: &mut Scenario, rounds: usize) {
    s.load(true);
    for _ in 0..rounds {
        s.block(0, 1);
        s.run(600);
        s.heal();
        s.run(600);
    }
}

/// The whole cluster, witness included, loses power while writes are in flight at the
/// primary and the witness (active 1 is cut off, so the witness is involved). Each restarts from its disk (the witness from a log that starts after a
/// base it trimmed to, without a checkpoint) and no acknowledged write is lost.
#[test]
fn a_power_loss_of_every_machine_with_a_witness_loses_no_acknowledged_write() {
    let mut s = with_witness_and_disks(41);
    let config = s.cluster().config().clone();
    load_with_the_witness_involved(&mut s, 6);
    s.run_until("the witness trimmed its log", 30_000, |c| {
        c.replica(2).unwrap().log_base() > config.log_tail_ops
    });
    s.block(0, 1); // The witness takes part in what is in flight.
    s.run(300);
    s.run_until(
        "writes in flight on the primary and the witness",
        2_000,
        |c| c.writes_pending(0) > 0 && c.writes_pending(2) > 0,
    );
    let before = acknowledged(&s);
    assert!(before > 50, "only {before} replies before the power loss");
    let witness_base = s.replica(2).log_base();
    s.power_loss();
    s.heal();
    s.run(50);
    for index in 0..3 {
        s.restart(index);
        assert_ne!(s.replica(index).status(), Status::Recovering, "r{index}");
        assert!(s.replica(index).op() > 0, "r{index} read nothing back");
    }
    let witness = s.replica(2);
    assert!(witness.checkpoint().is_none());
    assert!(
        witness.log_base() > 0 && witness.log_base() <= witness_base,
        "the witness's log starts after {} (it had trimmed to {witness_base})",
        witness.log_base()
    );
    assert!(witness.commit() >= witness.log_base());
    s.run(1_000);
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

/// A witness whose journal is damaged (a corrupt sector in its log) may have lost entries
/// it acknowledged: it restarts recovering (paper 4.3), never as empty, from the base its
/// journal still names, and is normal again once the protocol gave it the log.
#[test]
fn a_witness_whose_journal_is_damaged_recovers_through_the_protocol() {
    let mut s = with_witness_and_disks(42);
    let config = s.cluster().config().clone();
    load_with_the_witness_involved(&mut s, 6);
    s.run_until("the witness trimmed its log", 30_000, |c| {
        let witness = c.replica(2).unwrap();
        witness.log_base() > config.log_tail_ops && witness.op() > witness.log_base() + 4
    });
    s.load(false);
    s.run_until("every client is answered", SLOW, |c| c.clients_idle());
    let witness = s.replica(2);
    let (base, op) = (witness.log_base(), witness.op());
    s.crash(2);
    s.cluster_mut().damage_disk_at(2, base + (op - base) / 2);
    s.restart(2);
    let witness = s.replica(2);
    assert_eq!(witness.status(), Status::Recovering);
    assert_eq!(witness.commit(), base, "ops up to its base are committed");
    s.run_until("the witness recovered", SLOW, |c| {
        c.replica(2).is_some_and(|r| r.status() == Status::Normal)
    });
    assert_eq!(s.replica(2).stats().empty_cluster_starts, 0);
    s.submit(0, put("a", "after"));
    s.wait_completed(0, SLOW);
    s.converge(SLOW);
}

/// The disk variant of `a_witness_that_lost_its_memory_recovers_the_entries_an_active_lacks`:
/// active 1 is cut off while the primary commits with the witness past a checkpoint and
/// the log tail, so the witness's log is the second copy of those ops. The witness
/// restarts from its disk (it trimmed, but never above the actives' commit) and still
/// holds them: the primary failing next, active 1 leads with the witness and finds every
/// op there.
#[test]
fn a_witness_restarted_from_disk_still_holds_what_a_lagging_active_lacks() {
    let mut s = with_witness_and_disks(43);
    let op = commit_past_a_lagging_active(&mut s);
    s.run(100);

    s.crash(2);
    s.restart(2);
    let witness = s.replica(2);
    assert_eq!(witness.status(), Status::Normal, "resumed from its disk");
    assert!(witness.op() >= op, "the witness holds the last write");
    assert!(
        witness.log_base() <= s.replica(1).commit(),
        "the witness's log reaches down to what active 1 lacks"
    );

    // The primary fails: active 1 leads with the witness, whose log alone holds the ops.
    s.crash(0);
    s.heal();
    s.submit(1, get("z"));
    assert_eq!(s.wait_completed(1, SLOW).1, value("last"));
    assert_eq!(s.cluster().primary(), Some(1));
    s.restart(0);
    s.converge(SLOW);
}

/// Seed 3000661 of the witness sweep with disks, scripted. The witness is never involved
/// (it holds nothing) while the actives commit past a checkpoint; the power fails, and
/// active 1's disk is damaged. Active 0 restarts from its disk with a log that starts at
/// its checkpoint; to lead it needs the witness in its view, and active 1's recovery
/// needs the witness normal. The witness may skip to active 0's log only below the
/// actives' commit: what active 0 heard of it before the power loss, which its journal
/// keeps (`Write::ActivesCommit`). Forgotten, active 0 refused the witness, the witness
/// never joined the view, and active 1 never recovered.
#[test]
fn a_power_loss_leaves_a_witness_that_held_nothing_and_a_damaged_active_and_all_recover() {
    let mut s = with_witness_and_disks(44);
    let config = s.cluster().config().clone();
    load_until(&mut s, "the actives commit past a checkpoint", |c| {
        c.replica(0).unwrap().commit() > 2 * config.checkpoint_interval_ops + 4
    });
    s.run(200);
    assert_eq!(s.replica(2).op(), 0, "the witness was never involved");
    let committed = s.replica(0).commit();
    s.power_loss();
    s.cluster_mut().damage_disk_at(1, 1);
    for index in 0..3 {
        s.restart(index);
    }
    assert_eq!(s.replica(1).status(), Status::Recovering);
    assert!(
        s.replica(0).log_base() > 0,
        "active 0's log starts at its checkpoint"
    );
    s.run_until("every replica is normal again", 3 * SLOW, |c| {
        (0..3).all(|index| c.replica(index).unwrap().status() == Status::Normal)
    });
    assert!(s.replica(1).commit() >= committed);
    s.submit(0, put("a", "after"));
    s.wait_completed(0, SLOW);
    s.converge(SLOW);
}

/// With witnesses an active's journal keeps the entries above the actives' commit, as
/// its log does, not only those above its checkpoint. Active 1 is cut off while the
/// primary commits with the witness past a checkpoint and the log tail; the power fails
/// and every replica restarts from its disk: the primary's log still reaches down to
/// what active 1 lacks (a witness that lost its copies could get them back from it), and
/// nothing acknowledged is lost.
#[test]
fn an_active_restarted_from_disk_keeps_the_entries_above_the_actives_commit() {
    let mut s = with_witness_and_disks(45);
    let config = s.cluster().config().clone();
    commit_past_a_lagging_active(&mut s);
    s.run(100);
    let lagging = s.replica(1).commit();
    assert!(s.replica(0).checkpoint_op() > lagging + config.log_tail_ops);

    s.power_loss();
    for index in 0..3 {
        s.restart(index);
        assert_ne!(s.replica(index).status(), Status::Recovering, "r{index}");
    }
    let primary = s.replica(0);
    assert!(
        primary.log_base() <= lagging && primary.log_base() < primary.checkpoint_op(),
        "active 0's log starts after {} (checkpoint {}), active 1 lacks everything after {lagging}",
        primary.log_base(),
        primary.checkpoint_op()
    );
    s.heal();
    s.submit(1, get("z"));
    assert_eq!(s.wait_completed(1, SLOW).1, value("last"));
    s.converge(SLOW);
}

/// Starts a reconfiguration (paper 7) that keeps `kept`, adds `added` members after them
/// and names `witnesses` (indexes in the new configuration: paper 6.1), asked for at once
/// once the clients are idle; returns once every member that is up runs the new epoch.
fn reconfigure_with_witnesses(
    s: &mut Scenario,
    kept: &[u64],
    added: usize,
    witnesses: ReplicaSet,
) -> vsr::protocol::Configuration {
    s.run_until("every client is answered", SLOW, |c| c.clients_idle());
    let next = s
        .cluster_mut()
        .start_change_with_witnesses(kept, added, 0, witnesses);
    s.wait_epoch(&next, SLOW);
    assert_eq!(s.cluster().newest_configuration(), &next);
    next
}

/// A key-value service as every simulated replica starts it.
fn fresh_kv() -> vsr::service::Kv {
    <vsr::service::Kv as vsr::sim::SimService>::fresh()
}

/// Paper 6.1 and 7 together: the witness (replica 2) becomes active and active 0 a
/// witness, on the same three members. The former witness held no state: it fetches the
/// state at the start before it counts as started, never executing on its empty
/// service. Then active 1, the only other replica that held the state, fails: the
/// former witness leads and serves what was written before the change (the checkers
/// compare its state with the model's at every commit), and the new witness, which
/// dropped its state, never executes.
#[test]
fn a_witness_that_becomes_active_holds_the_state_when_the_others_fail() {
    let mut s = with_witness(60);
    load_until(&mut s, "a checkpoint was taken", |c| {
        c.replica(0).is_some_and(|r| r.checkpoint_op() > 0)
    });
    s.submit(0, put("before-key", "before"));
    s.wait_completed(0, SLOW);
    assert_eq!(s.replica(2).service(), &fresh_kv());
    let next = reconfigure_with_witnesses(&mut s, &[0, 1, 2], 0, ReplicaSet::of(0));
    assert!(next.is_witness(0) && !next.is_witness(2));
    let start = s.replica(1).commit();
    assert!(s.replica(2).holds_service_state() && s.replica(2).commit() >= start);
    assert_ne!(s.replica(2).service(), &fresh_kv());
    // The new witness keeps the start's state until both actives executed it.
    assert!(!s.replica(0).holds_service_state() && s.replica(0).hands_over_state());
    load_until(&mut s, "the new witness dropped the start's state", |c| {
        c.replica(0).is_some_and(|r| !r.hands_over_state())
    });
    assert_eq!(s.replica(0).service(), &fresh_kv());
    assert_eq!(s.replica(0).checkpoint_op(), 0);

    s.crash(1);
    s.submit(1, get("before-key"));
    assert_eq!(s.wait_completed(1, SLOW).1, value("before"));
    let after = s.submit(1, put("b", "after"));
    s.wait_completed(1, SLOW);
    s.expect_committed(1, after);
    assert_eq!(s.cluster().primary(), Some(2), "the only active leads");
    s.restart(1);
    s.converge(SLOW);
    s.submit(2, get("b"));
    assert_eq!(s.wait_completed(2, SLOW).1, value("after"));
}

/// An active becomes a witness (paper 6.1 in a new epoch, 7): it drops its service state
/// and keeps its log. The cluster had no witnesses; after the change active 0 fails and
/// the last active leads with the new witness's acknowledgements: nothing is lost.
#[test]
fn an_active_that_becomes_a_witness_drops_its_state_and_still_carries_commits() {
    let mut s = Scenario::with(61, scenario_config(3), 3);
    load_until(&mut s, "a checkpoint was taken", |c| {
        c.replica(1).is_some_and(|r| r.checkpoint_op() > 0)
    });
    s.submit(0, put("kept-key", "kept"));
    s.wait_completed(0, SLOW);
    let next = reconfigure_with_witnesses(&mut s, &[0, 1, 2], 0, ReplicaSet::of(1));
    assert!(next.is_witness(1));
    load_until(&mut s, "the new witness dropped the start's state", |c| {
        c.replica(1).is_some_and(|r| !r.hands_over_state())
    });
    let witness = s.replica(1);
    assert!(!witness.holds_service_state() && witness.is_witness());
    assert_eq!(witness.checkpoint_op(), 0);
    assert_eq!(witness.service(), &fresh_kv());

    s.crash(0);
    let after = s.submit(2, put("kept-key", "later"));
    s.wait_completed(2, SLOW);
    s.expect_committed(2, after);
    assert_eq!(s.cluster().primary(), Some(2));
    s.submit(1, get("kept-key"));
    assert_eq!(s.wait_completed(1, SLOW).1, value("later"));
    s.restart(0);
    s.converge(SLOW);
}

/// A change asked for while an active is down: the witness's acknowledgements commit the
/// RECONFIGURATION with the primary's (paper 6.1). It replaces the active that is down
/// with a new member; the witness stays one. The new active holds nothing: it must get
/// the state at the start from the only active that holds it (7.2), never from the
/// witness. Then that active fails too: the new one leads with the witness, and nothing
/// written before the change is lost.
#[test]
fn a_change_while_an_active_is_down_commits_with_the_witness() {
    let mut s = with_witness(62);
    load_until(&mut s, "a checkpoint was taken", |c| {
        c.replica(0).is_some_and(|r| r.checkpoint_op() > 0)
    });
    s.crash(1);
    s.submit(0, put("a", "while 1 is down"));
    s.wait_completed(0, SLOW);
    // Members 0, 2 (still the witness, index 1 now) and the new 3.
    let next = reconfigure_with_witnesses(&mut s, &[0, 2], 1, ReplicaSet::of(1));
    assert!(next.is_witness(1) && next.id_of(1) == 2);
    let start = s.replica(0).commit();
    assert!(s.replica(3).holds_service_state() && s.replica(3).commit() >= start);
    assert!(!s.replica(2).holds_service_state());
    s.crash(0);
    s.submit(1, get("a"));
    assert_eq!(s.wait_completed(1, SLOW).1, value("while 1 is down"));
    assert_eq!(s.cluster().primary(), Some(3));
    let after = s.submit(1, put("a", "after"));
    s.wait_completed(1, SLOW);
    s.expect_committed(1, after);
}

/// Every active of the old epoch becomes a witness (paper 6.1, 7): the new epoch's actives
/// are the old witnesses and new members, none of which holds the state at the start.
/// The old actives keep it and serve it until the new actives executed it (the actives'
/// commit reaches the start), and only then drop it. (Seed 7001827 found it: they dropped
/// it at once, and the new actives could fetch it from nobody.)
#[test]
fn when_every_active_becomes_a_witness_they_hand_the_start_over() {
    let mut s = Scenario::with(63, witness_config(5, ReplicaSet::from_low_bits(0b01100)), 3);
    load_until(&mut s, "a checkpoint was taken", |c| {
        c.replica(0).is_some_and(|r| r.checkpoint_op() > 0)
    });
    s.submit(0, put("start-key", "at the start"));
    s.wait_completed(0, SLOW);
    // Seven members: 0, 1 and 4 (the actives) witnesses; 2, 3 (the witnesses) and the
    // new 5 and 6 active.
    let witnesses = ReplicaSet::from_low_bits(0b0010011);
    let next = reconfigure_with_witnesses(&mut s, &[0, 1, 2, 3, 4], 2, witnesses);
    for index in [2, 3, 5, 6] {
        assert!(!next.is_witness(index) && s.replica(index).holds_service_state());
    }
    load_until(&mut s, "the old actives dropped the start's state", |c| {
        [0, 1, 4].iter().all(|&i| {
            c.replica(i)
                .is_some_and(|r| r.is_witness() && !r.hands_over_state())
        })
    });
    // f' = 3: three of the new actives fail, the fourth holds everything.
    for index in [2, 3, 5] {
        s.crash(index);
    }
    s.submit(1, get("start-key"));
    assert_eq!(s.wait_completed(1, SLOW).1, value("at the start"));
    assert_eq!(s.cluster().primary(), Some(6));
}

/// Drops the state sent to replica 2 (the witness), from `from` or from anyone: it gets
/// none until the filter goes (`heal`).
fn drop_state_to_witness_2(s: &mut Scenario, from: Option<ReplicaIndex>) {
    s.drop_where(move |e| {
        from.is_none_or(|from| e.from == vsr::sim::network::Node::Replica(from))
            && e.to == vsr::sim::network::Node::Replica(2)
            && matches!(
                e.message.body,
                vsr::protocol::Body::NewState(_) | vsr::protocol::Body::CheckpointPart(_)
            )
    });
}

/// Makes witness 2 active (no witnesses in the next epoch) while it gets no state from
/// the primary; once it moved, the primary loses its memory and comes back: returns once
/// the new epoch runs.
fn activate_the_witness_and_crash_the_primary(s: &mut Scenario) {
    drop_state_to_witness_2(s, Some(0));
    let next = s
        .cluster_mut()
        .start_change_with_witnesses(&[0, 1, 2], 0, 0, ReplicaSet::default());
    s.run_until("the former witness moved to the new epoch", SLOW, |c| {
        c.replica(2).is_some_and(|r| r.epoch() == next.epoch())
    });
    s.crash(0);
    s.heal();
    s.restart(0);
    s.wait_epoch(&next, 3 * SLOW);
}

/// Paper 7.3 with a witness that becomes active: its acknowledgements counted towards
/// the last ops of the old epoch, the RECONFIGURATION among them, so its log may be
/// one of the f+1 copies of them. Active 1 is cut off while the primary commits with the
/// witness, then the witness becomes active. Before it holds the start's state, the
/// primary (the other copy) loses its memory: the former witness's log is the one left,
/// and must not have been dropped.
#[test]
fn a_witness_that_becomes_active_keeps_the_copies_it_acknowledged() {
    let mut s = with_witness(63);
    s.submit(0, put("a", "1"));
    s.wait_completed(0, 500);
    s.block(0, 1);
    let lagging = s.replica(1).commit();
    load_until(&mut s, "the primary commits past the cut-off active", |c| {
        c.replica(0).unwrap().commit() > lagging + 10
    });
    activate_the_witness_and_crash_the_primary(&mut s);
    s.converge(3 * SLOW);
}

/// The actives checkpoint past the log tail, then active 1 is cut off while the primary
/// commits with the witness, whose log starts past op 0 by then; the last write is `z`
/// = `last`.
fn commit_with_the_witness_past_its_trimmed_log(s: &mut Scenario) {
    let config = s.cluster().config().clone();
    load_until(s, "the actives checkpoint past the log tail", |c| {
        c.replica(0).unwrap().commit() > config.checkpoint_interval_ops + config.log_tail_ops
    });
    s.block(0, 1);
    let lagging = s.replica(1).commit();
    load_until(s, "the primary commits with the witness", |c| {
        c.replica(0).unwrap().commit() > lagging + 10
    });
    let last = s.submit(0, put("z", "last"));
    s.wait_completed(0, SLOW);
    s.expect_committed(0, last);
    assert!(
        s.replica(2).log_base() > 0,
        "the witness's log starts past op 0"
    );
}

/// `a_witness_that_becomes_active_keeps_the_copies_it_acknowledged` past checkpoints:
/// the witness's log starts above op 0, so it needs a checkpoint before it can execute
/// what it kept, and the only other replica left, the cut-off active, needs the kept
/// entries before it can give one. The former witness serves them.
#[test]
fn a_former_witness_with_a_trimmed_log_serves_the_copies_it_kept() {
    let mut s = with_witness(64);
    commit_with_the_witness_past_its_trimmed_log(&mut s);
    activate_the_witness_and_crash_the_primary(&mut s);
    s.submit(1, get("z"));
    assert_eq!(s.wait_completed(1, 3 * SLOW).1, value("last"));
    s.converge(3 * SLOW);
}

/// `a_former_witness_with_a_trimmed_log_serves_the_copies_it_kept` with disks: the
/// former witness keeps its copies on its disk as well (`Write::FormerWitnessLog`). It
/// loses its memory while it waits for a checkpoint to reach its kept entries' base, and
/// the primary, the other copy, comes back on an empty disk (a new machine): what the
/// former witness's disk kept is what is left of the ops the cut-off active missed.
#[test]
fn a_former_witness_keeps_the_copies_it_acknowledged_on_its_disk() {
    let mut s = with_witness_and_disks(65);
    commit_with_the_witness_past_its_trimmed_log(&mut s);
    // The former witness gets no state until it restarted.
    drop_state_to_witness_2(&mut s, None);
    let next = s
        .cluster_mut()
        .start_change_with_witnesses(&[0, 1, 2], 0, 0, ReplicaSet::default());
    s.run_until(
        "the former witness moved to the new epoch, on its disk",
        SLOW,
        |c| {
            c.replica(2)
                .is_some_and(|r| r.epoch() == next.epoch() && r.former_witness_log().is_some())
                && c.writes_pending(2) == 0
        },
    );
    s.crash(2);
    s.crash(0);
    s.cluster_mut().wipe_disk(0);
    s.heal();
    s.restart(2);
    assert!(
        s.replica(2).former_witness_log().is_some(),
        "the kept entries read back from the disk"
    );
    s.restart(0);
    s.wait_epoch(&next, 3 * SLOW);
    s.submit(1, get("z"));
    assert_eq!(s.wait_completed(1, 3 * SLOW).1, value("last"));
    s.converge(3 * SLOW);
    assert_eq!(
        s.cluster().disks().image(2).former_witness_log,
        None,
        "its disk forgets them once its log holds them"
    );
}

/// A new primary learns the actives' commit its voters know (`DoViewChange::
/// actives_commit`) and reports it, though its own view counts the actives afresh (the
/// other active has not answered: 0). Without it, a primary restored from a checkpoint
/// never heard the number and refused the witnesses the log after its checkpoint for
/// good (seeds 114005309, 131013887 of the random runs). Drives replica 1 directly: the
/// other active (0) is silent, the witness (2) votes.
#[test]
fn a_new_primary_reports_the_actives_commit_its_voters_heard() {
    use vsr::protocol::{Body, Commit, DoViewChange, Effect, Entry, Message, Operation, Prepare};
    use vsr::protocol::{Replica, Start};
    use vsr::service::Kv;
    let entry = |op: u64| Entry {
        client: op,
        session: 0,
        request: 0,
        timestamp: 1_000 + op,
        operation: Operation::Register,
        body: bytes::Bytes::new(),
    };
    let message = |view, replica, body| Message {
        epoch: 0,
        view,
        replica,
        body,
    };
    let config = witness_config(3, ReplicaSet::of(2));
    let mut replica = Replica::new(config, 1, Kv::new(), Start::Fresh);
    let mut effects = Vec::new();
    let prepare = Prepare {
        op_first: 1,
        commit: 0,
        actives_commit: 0,
        stamp: 0,
        entries: (1..=3).map(entry).collect(),
    };
    replica.on_message(message(0, 0, Body::Prepare(prepare)), &mut effects);
    let commit = Commit {
        commit: 3,
        actives_commit: 0,
        stamp: 0,
    };
    replica.on_message(message(0, 0, Body::Commit(commit)), &mut effects);
    replica.complete_writes_in_memory(&mut effects);
    assert_eq!(replica.commit(), 3);
    // The witness's vote for view 1: it heard (from primary 0) that both actives
    // executed up to op 3.
    let dvc = DoViewChange {
        last_normal_view: 0,
        op: 3,
        commit: 3,
        actives_commit: 3,
        entries: Vec::new(),
    };
    replica.on_message(message(1, 2, Body::DoViewChange(dvc)), &mut effects);
    replica.complete_writes_in_memory(&mut effects);
    assert!(replica.is_primary() && replica.view() == 1);
    let reported = |effects: &[Effect]| {
        effects.iter().find_map(|effect| match effect {
            Effect::Send { to: 2, message } => match &message.body {
                Body::Commit(commit) => Some(commit.actives_commit),
                Body::Prepare(prepare) => Some(prepare.actives_commit),
                _ => None,
            },
            _ => None,
        })
    };
    for _ in 0..20 {
        effects.clear();
        replica.on_tick(&mut effects);
        replica.complete_writes_in_memory(&mut effects);
        if let Some(actives_commit) = reported(&effects) {
            assert_eq!(
                actives_commit, 3,
                "what the witness heard, not the view's 0"
            );
            replica.invariants();
            return;
        }
    }
    panic!("the new primary told the witness nothing");
}
