//! Scripted scenarios for the simulator's newer faults and checks: state transfers split
//! over several NewStates, replays of old messages, and the checks of evictions and
//! checkpoints against the reference model. Each asserts that the fault or check it is
//! about actually happened, so that the random seeds' reliance on them is grounded.

use vsr::sim::scenario::{scenario_config, small_message_config as small_messages};
use vsr::sim::Scenario;

/// Steps to wait for anything that needs a view change or a recovery.
const SLOW: u64 = 5_000;

#[test]
fn a_recovery_takes_several_new_states_when_messages_are_small() {
    let mut s = Scenario::with(21, small_messages(5), 3);
    s.load(true);
    s.run(1_500);
    s.crash(3);
    s.restart(3);
    s.run(200);
    s.load(false);
    s.converge(SLOW);
    let transfers = s.cluster().transfers();
    assert!(
        transfers.multi_part >= 1 && transfers.new_states_cut >= 1,
        "{transfers:?}"
    );
    assert!(s.replica(3).stats().recoveries >= 1);
}

#[test]
fn replayed_old_messages_after_a_restart_change_nothing_committed() {
    let mut s = Scenario::new(5, 22);
    s.replay(0, 5_000); // Keep messages from now on.
    s.load(true);
    s.run(300);
    s.crash(0);
    s.run_until("a new primary", SLOW, |c| {
        c.primary().is_some_and(|p| p != 0)
    });
    s.restart(0);
    s.run(300);
    // Messages from before the crash (the old primary's Prepares and Commits, the view
    // change's StartViewChanges and DoViewChanges) arrive again, long after.
    for _ in 0..20 {
        s.replay(5, 5_000);
        s.run(20);
    }
    s.load(false);
    s.converge(SLOW);
    assert!(s.cluster().network().counts.replayed >= 50);
}

#[test]
fn evictions_and_checkpoints_are_checked_against_the_model() {
    let mut config = scenario_config(3);
    config.clients_max = 2;
    let mut s = Scenario::manual(23, config, 3);
    s.cluster_mut().register = true;
    s.load(true);
    s.run(2_000);
    s.load(false);
    s.converge(SLOW);
    let checks = s.cluster().checker().counts;
    assert!(s.cluster().checker().model().evictions > 0);
    assert!(checks.evicted_checked > 0, "{checks:?}");
    assert!(checks.checkpoints_checked >= 2, "{checks:?}");
}
