//! Checkpoint transfer in parts (paper 5.1) through the in-memory cluster: a replica that
//! missed more than the log keeps fetches only the pages that differ from what it holds,
//! verifies each against the Merkle root its NewState named, and asks again for what is
//! lost or corrupt.

mod checkpoint_setup;

use bytes::Bytes;
use checkpoint_setup::{assert_same_state, config, put_all, settle, KEYS};
use std::cell::RefCell;
use std::rc::Rc;
use vsr::client::ClientSession;
use vsr::protocol::{
    Body, CheckpointContent, GetState, Message, Replica, ReplicaId, Start, Status, Stored,
};
use vsr::service::kv::Kv;
use vsr::testing::MemoryCluster;
use vsr::Config;

/// [`checkpoint_setup::lagging`] with the shared config.
fn lagging_cluster() -> (MemoryCluster<Kv>, ClientSession) {
    lagging_cluster_with(config())
}

/// [`checkpoint_setup::lagging`] with `config`; replica 2 held a checkpoint before it was
/// cut off.
fn lagging_cluster_with(config: Config) -> (MemoryCluster<Kv>, ClientSession) {
    let cluster = MemoryCluster::new(&config, |_| Kv::new());
    let (cluster, session) = checkpoint_setup::lagging(cluster, &config);
    assert!(cluster.replicas[2].checkpoint_op() > 0);
    (cluster, session)
}

/// The pages of a replica's latest checkpoint that the primary's latest does not hold
/// (by digest): what a transfer between them must move.
fn differing_pages(cluster: &MemoryCluster<Kv>, from: usize, to: usize) -> u64 {
    let held: std::collections::HashSet<_> = cluster.replicas[to]
        .checkpoint()
        .expect("a checkpoint")
        .pages()
        .map(|page| page.digest())
        .collect();
    cluster.replicas[from]
        .checkpoint()
        .expect("a checkpoint")
        .pages()
        .filter(|page| !held.contains(&page.digest()))
        .count() as u64
}

#[test]
fn a_lagging_replica_fetches_only_the_pages_that_differ() {
    let (mut cluster, _session) = lagging_cluster();
    let differ = differing_pages(&cluster, 0, 2);
    let total = cluster.replicas[0].checkpoint().unwrap().pages().count() as u64;
    assert!(differ < total / 2, "{differ} of {total} pages differ");
    cluster.down[2] = false;
    let commit = cluster.replicas[0].commit();
    settle(&mut cluster, commit);
    let stats = cluster.replicas[2].stats();
    assert_eq!(stats.checkpoint_fetches_completed, 1);
    assert_eq!(
        stats.checkpoint_pages_fetched, differ,
        "exactly the differing pages travel (no loss here)"
    );
    assert_eq!(stats.checkpoint_pages_reused, total - differ);
    assert_eq!(stats.checkpoint_pages_refetched, 0);
    let served: u64 = (0..2)
        .map(|r| cluster.replicas[r].stats().checkpoint_pages_served)
        .sum();
    assert_eq!(served, differ, "nothing served twice");
    for replica in &cluster.replicas {
        replica.invariants();
    }
    assert_same_state(&cluster);
}

#[test]
fn a_source_sends_at_most_its_budget_and_a_page_per_tick() {
    let mut config = config();
    config.checkpoint_serve_bytes_per_tick = 6000;
    config.checkpoint_request_pages_max = 8;
    let (mut cluster, _session) = lagging_cluster_with(config);
    cluster.down[2] = false;
    let commit = cluster.replicas[0].commit();
    let served =
        |cluster: &MemoryCluster<Kv>, r: usize| cluster.replicas[r].stats().checkpoint_bytes_served;
    let mut busiest = 0;
    for _ in 0..2_000 {
        let before = [served(&cluster, 0), served(&cluster, 1)];
        cluster.tick();
        cluster.run(100_000);
        for (r, before) in before.into_iter().enumerate() {
            let sent = served(&cluster, r) - before;
            busiest = busiest.max(sent);
            assert!(
                sent <= 6000 + 4096,
                "replica {r} sent {sent} bytes in a tick"
            );
        }
        if cluster.replicas[2].commit() >= commit {
            break;
        }
    }
    assert!(
        cluster.replicas[2].commit() >= commit,
        "the transfer completed"
    );
    assert!(busiest > 4096, "the budget was used: {busiest}");
    assert_same_state(&cluster);
}

/// Every answer with pages from replica 0 to replica 2 is lost, and the first answer from
/// replica 1 arrives with one byte of a page changed: the pages are asked for again
/// (from the other replica, after the request's timeout) and the transfer completes with
/// the right state, each corrupt page counted.
#[test]
fn lost_and_corrupt_pages_are_asked_for_again() {
    let (mut cluster, _session) = lagging_cluster();
    let differ = differing_pages(&cluster, 0, 2);
    let corrupted: Rc<RefCell<Option<Message>>> = Rc::default();
    let seen = corrupted.clone();
    cluster.drop_filter = Some(Box::new(move |from: ReplicaId, to, message: &Message| {
        let Body::CheckpointPart(part) = &message.body else {
            return false;
        };
        if to != 2 || !matches!(part.content, CheckpointContent::Pages(_)) {
            return false;
        }
        if from == 0 {
            return true;
        }
        let mut seen = seen.borrow_mut();
        if seen.is_some() {
            return false;
        }
        // Kept (and lost here): delivered below with a page changed.
        *seen = Some(message.clone());
        true
    }));
    cluster.down[2] = false;
    for _ in 0..200 {
        cluster.tick();
        cluster.run(100_000);
        if corrupted.borrow().is_some() {
            break;
        }
    }
    let mut message = corrupted
        .borrow_mut()
        .take()
        .expect("replica 1 answered with pages");
    let Body::CheckpointPart(part) = &mut message.body else {
        unreachable!()
    };
    let CheckpointContent::Pages(pages) = &mut part.content else {
        unreachable!()
    };
    let mut bytes = pages[0].1.to_vec();
    bytes[0] ^= 0x40;
    pages[0].1 = Bytes::from(bytes);
    cluster.deliver(2, message);
    let commit = cluster.replicas[0].commit();
    settle(&mut cluster, commit);
    let stats = cluster.replicas[2].stats();
    assert_eq!(stats.checkpoint_parts_corrupt, 1);
    assert!(stats.checkpoint_pages_refetched > 0);
    assert_eq!(stats.checkpoint_fetches_completed, 1);
    assert_eq!(stats.checkpoint_pages_fetched, differ);
    assert_same_state(&cluster);
}

/// The sources checkpoint twice more while the transfer is under way (every answer to
/// replica 2 is lost meanwhile, and so is any newer NewState that could re-target it):
/// they keep the checkpoint being read, and the transfer completes from it; then the log
/// after it follows.
#[test]
fn sources_keep_a_checkpoint_being_read_while_they_move_on() {
    let (mut cluster, mut session) = lagging_cluster();
    let hold: Rc<RefCell<bool>> = Rc::new(RefCell::new(false));
    let holding = hold.clone();
    let started: Rc<RefCell<bool>> = Rc::new(RefCell::new(false));
    let fetch_started = started.clone();
    cluster.drop_filter = Some(Box::new(move |_, to, message: &Message| {
        if to != 2 {
            return false;
        }
        match &message.body {
            // The first NewState passes (it starts the transfer); later ones are lost.
            Body::NewState(new_state) if new_state.checkpoint.is_some() => {
                std::mem::replace(&mut *fetch_started.borrow_mut(), true)
            }
            Body::CheckpointPart(_) => *holding.borrow(),
            _ => false,
        }
    }));
    *hold.borrow_mut() = true;
    cluster.down[2] = false;
    let mut fetching = None;
    for _ in 0..100 {
        cluster.tick();
        cluster.run(100_000);
        fetching = cluster.replicas[2].checkpoint_fetch_progress();
        if fetching.is_some() {
            break;
        }
    }
    let (fetching_op, _, _) = fetching.expect("a transfer under way");
    for version in 3..6 {
        put_all(&mut cluster, &mut session, (0..KEYS).step_by(10), version);
    }
    assert!(
        cluster.replicas[0].checkpoint_op() >= fetching_op + 2 * config().checkpoint_interval_ops
    );
    *hold.borrow_mut() = false;
    for _ in 0..500 {
        cluster.tick();
        cluster.run(100_000);
        if cluster.replicas[2].checkpoint_op() >= fetching_op {
            break;
        }
    }
    let stats = cluster.replicas[2].stats();
    assert_eq!(stats.checkpoint_fetches_completed, 1);
    assert_eq!(stats.checkpoint_fetches_retargeted, 0);
    assert_eq!(cluster.replicas[2].checkpoint_op(), fetching_op);
    // The log after it follows once NewStates pass again.
    cluster.drop_filter = None;
    let commit = cluster.replicas[0].commit();
    settle(&mut cluster, commit);
    for replica in &cluster.replicas {
        replica.invariants();
    }
    assert_same_state(&cluster);
}

/// [`lagging_cluster`] with builds deferred, replica 2 back up and run until it asked its
/// worker to prepare the install of the checkpoint it fetched (every page in hand), or
/// panics.
fn until_the_install_is_prepared() -> MemoryCluster<Kv> {
    let (mut cluster, _session) = lagging_cluster();
    cluster.defer_builds();
    cluster.down[2] = false;
    for _ in 0..500 {
        cluster.tick();
        cluster.run(100_000);
        let builds = cluster.builds.as_ref().expect("builds are deferred");
        if builds
            .iter()
            .any(|(of, build)| *of == 2 && build.is_install())
        {
            return cluster;
        }
    }
    panic!("replica 2 never fetched the whole checkpoint");
}

/// The install of a fetched checkpoint is prepared off the loop (the service reads the
/// pages into a new state on a worker): while a worker has it, the replica does not
/// install, and counts the transfer as progressing (it neither gives it up nor starts
/// another); once it ran, the replica installs it and catches up.
#[test]
fn a_fetched_checkpoint_is_installed_once_a_worker_prepared_it() {
    let mut cluster = until_the_install_is_prepared();
    cluster.start_builds(2);
    let before = cluster.replicas[2].commit();
    // Longer than a transfer may stall (`STALL_TIMEOUTS` state-transfer timeouts).
    let ticks = 10 * config().state_transfer_timeout_ticks;
    for _ in 0..ticks {
        cluster.tick();
        cluster.run(100_000);
    }
    let stats = cluster.replicas[2].stats();
    assert_eq!(cluster.replicas[2].commit(), before, "not installed yet");
    assert_eq!(stats.checkpoint_fetches_completed, 0);
    assert_eq!(stats.checkpoint_fetches, 1, "the transfer was not given up");
    assert_eq!(cluster.run_builds(2), 1, "the preparation is still wanted");
    let commit = cluster.replicas[0].commit();
    settle(&mut cluster, commit);
    let stats = cluster.replicas[2].stats();
    assert_eq!(stats.checkpoint_fetches_completed, 1);
    assert_eq!(stats.checkpoint_transfers, 1, "installed");
    for replica in &cluster.replicas {
        replica.invariants();
    }
    assert_same_state(&cluster);
}

/// A preparation no worker took (a driver without one, or a worker busy elsewhere) is run
/// by the replica itself at its next tick.
#[test]
fn an_install_no_worker_took_is_prepared_at_the_next_tick() {
    let mut cluster = until_the_install_is_prepared();
    let commit = cluster.replicas[0].commit();
    settle(&mut cluster, commit);
    assert_eq!(cluster.replicas[2].stats().checkpoint_transfers, 1);
    assert_same_state(&cluster);
}

/// A recovering replica speaks for no log (paper 4.3), but the checkpoint it restored is
/// committed state: it names that checkpoint, and only that, to a replica that lacks it,
/// and serves its pages. Replica 1 restarts on a damaged store that kept its checkpoint;
/// the primary is down, so replica 1 stays recovering; lagging replica 2 asks it for state
/// and installs its checkpoint. (Seed 124000968 of the random runs: a member fetching its
/// epoch's start waited for good on the one active holding it, which was recovering.)
#[test]
fn a_recovering_replica_serves_its_checkpoint_and_no_log() {
    let (mut cluster, _session) = lagging_cluster();
    let config = config();
    let checkpoint = cluster.replicas[1]
        .checkpoint()
        .expect("a checkpoint")
        .clone();
    let checkpoint_op = checkpoint.op;
    assert!(checkpoint_op > cluster.replicas[2].commit());
    let stored = Stored {
        checkpoint: Some(checkpoint),
        log_base: checkpoint_op,
        commit: checkpoint_op,
        damage: Some("a corrupt entry after the checkpoint".into()),
        ..Stored::default()
    };
    cluster.replicas[1] = Replica::new(
        config.clone(),
        1,
        Kv::new(),
        Start::Restart {
            stored: Box::new(stored),
            nonce: 11,
        },
    );
    assert_eq!(cluster.replicas[1].status(), Status::Recovering);
    cluster.down[0] = true;
    cluster.down[2] = false;
    let sent = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&sent);
    cluster.drop_filter = Some(Box::new(move |from, _, message: &Message| {
        if let (1, Body::NewState(new_state)) = (from, &message.body) {
            seen.borrow_mut().push(new_state.clone());
        }
        false
    }));
    let ask = |op| Message {
        epoch: 0,
        view: 0,
        replica: 2,
        body: Body::GetState(GetState { op, learner: None }),
    };
    cluster.deliver(1, ask(checkpoint_op));
    cluster.run(100_000);
    assert!(sent.borrow().is_empty(), "nothing after its checkpoint");
    cluster.deliver(1, ask(cluster.replicas[2].commit()));
    for _ in 0..10 * config.state_transfer_timeout_ticks {
        cluster.tick();
        cluster.run(100_000);
        if cluster.replicas[2].commit() >= checkpoint_op {
            break;
        }
    }
    let answers = sent.borrow();
    let answer = answers.first().expect("an answer");
    assert_eq!(answer.checkpoint.map(|id| id.op), Some(checkpoint_op));
    assert!(
        answer.entries.is_empty(),
        "a recovering replica sends no log"
    );
    assert!(!answer.vouches);
    assert_eq!(answer.commit, checkpoint_op);
    assert_eq!(cluster.replicas[2].commit(), checkpoint_op, "installed");
    assert!(cluster.replicas[2].service() == cluster.replicas[1].service());
    cluster.replicas[2].invariants();
}
