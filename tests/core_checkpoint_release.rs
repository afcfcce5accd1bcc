//! The latest checkpoint's pages while the next one builds (`replica/serve_checkpoint.rs`):
//! released unless a transfer is reading it, so that the state is not held twice at every
//! checkpoint. Through the in-memory cluster with builds deferred, as a busy worker
//! thread defers them:
//! - a fetch that arrives while every source builds is answered `Unavailable` (the
//!   sources serve no page of the checkpoint they released) and completes with the newer
//!   checkpoint once it is built;
//! - a source that a transfer is reading keeps serving it while it builds the next one;
//! - a store still gets the checkpoint's pages: they are captured from the replica before
//!   they are released.

mod checkpoint_setup;

use checkpoint_setup::{assert_same_state, config, put_all, settle, INTERVAL};
use std::cell::RefCell;
use std::rc::Rc;
use vsr::client::ClientSession;
use vsr::protocol::{Body, CheckpointContent, Message};
use vsr::service::kv::Kv;
use vsr::testing::MemoryCluster;
use vsr::Config;

/// Puts (key 0, over and over) until replica 0 has executed `op`.
fn put_until(cluster: &mut MemoryCluster<Kv>, session: &mut ClientSession, op: u64) {
    while cluster.replicas[0].commit() < op {
        put_all(cluster, session, 0..1, 9);
    }
}

/// [`checkpoint_setup::lagging`], the stores kept (they must get every checkpoint's
/// pages).
fn lagging_cluster(config: Config) -> (MemoryCluster<Kv>, ClientSession) {
    let mut cluster = MemoryCluster::new(&config, |_| Kv::new());
    cluster.keep_stores();
    checkpoint_setup::lagging(cluster, &config)
}

/// The next checkpoint op after replica 0's commit number.
fn next_checkpoint_op(cluster: &MemoryCluster<Kv>) -> u64 {
    (cluster.replicas[0].commit() / INTERVAL + 1) * INTERVAL
}

/// What a drop filter saw sent to the fetching replica.
#[derive(Default)]
struct Seen {
    /// The checkpoint ops NewStates named.
    named: Vec<u64>,
    /// Answers `Unavailable`, and answers with a manifest run or pages.
    unavailable: u32,
    parts: u32,
}

fn pages_served(cluster: &MemoryCluster<Kv>, replica: usize) -> u64 {
    cluster.replicas[replica].stats().checkpoint_pages_served
}

/// Both sources take a checkpoint whose build is deferred: the latest one (which the
/// NewState names) has no pages while it builds, every request for it is answered
/// `Unavailable`, and the transfer completes with the newer checkpoint once built.
/// Without the release, the sources would serve the old one's pages during the build.
#[test]
fn a_fetch_while_every_source_builds_is_unavailable_and_completes_with_the_newer_one() {
    let (mut cluster, mut session) = lagging_cluster(config());
    let named = cluster.replicas[0].checkpoint_op();
    let next = next_checkpoint_op(&cluster);
    cluster.defer_builds();
    put_until(&mut cluster, &mut session, next);
    settle(&mut cluster, next);
    for source in 0..2 {
        assert_eq!(cluster.replicas[source].checkpoint_building(), Some(next));
        assert_eq!(cluster.replicas[source].checkpoint_op(), named);
        assert!(
            cluster.replicas[source].checkpoint().is_none(),
            "replica {source}: pages released while the next checkpoint builds"
        );
        // The store captured them first.
        let id = cluster.replicas[source]
            .checkpoint_id()
            .expect("its name stays");
        let stored = cluster.stores.as_ref().expect("kept")[source]
            .checkpoint
            .as_ref()
            .expect("a checkpoint in the store");
        assert_eq!(stored.op, named);
        assert_eq!(stored.pages().count() as u64, id.pages());
    }
    let served = [pages_served(&cluster, 0), pages_served(&cluster, 1)];
    // What replica 2 is told: the checkpoints NewStates name, and the answers for parts.
    let seen: Rc<RefCell<Seen>> = Rc::default();
    let seeing = seen.clone();
    cluster.drop_filter = Some(Box::new(move |_, to, message: &Message| {
        let mut seen = seeing.borrow_mut();
        match &message.body {
            Body::NewState(new_state) if to == 2 => {
                seen.named.extend(new_state.checkpoint.map(|id| id.op))
            }
            Body::CheckpointPart(part) if to == 2 => match part.content {
                CheckpointContent::Unavailable => seen.unavailable += 1,
                _ => seen.parts += 1,
            },
            _ => {}
        }
        false
    }));
    cluster.down[2] = false;
    for _ in 0..100 {
        cluster.tick();
        cluster.run(100_000);
    }
    {
        let seen = seen.borrow();
        assert!(!seen.named.is_empty() && seen.named.iter().all(|&op| op == named));
        assert!(seen.unavailable >= 2, "both sources answered Unavailable");
        assert_eq!(seen.parts, 0, "no part of a released checkpoint is served");
    }
    // Given up each time no replica holds it, and asked for again.
    assert!(cluster.replicas[2].stats().checkpoint_fetches > 1);
    assert_eq!(
        [pages_served(&cluster, 0), pages_served(&cluster, 1)],
        served,
        "no page of a released checkpoint is served"
    );
    assert_eq!(cluster.replicas[2].stats().checkpoint_fetches_completed, 0);
    // The builds finish: the next NewState names the new checkpoint, which is fetched.
    cluster.drop_filter = None;
    assert_eq!(cluster.run_builds(0), 1);
    assert_eq!(cluster.run_builds(1), 1);
    assert_eq!(cluster.replicas[0].checkpoint_op(), next);
    assert!(cluster.replicas[0].checkpoint().is_some());
    let commit = cluster.replicas[0].commit();
    settle(&mut cluster, commit);
    assert_eq!(cluster.replicas[2].checkpoint_op(), next);
    assert_eq!(cluster.replicas[2].stats().checkpoint_fetches_completed, 1);
    for replica in &cluster.replicas {
        replica.invariants();
    }
    assert_same_state(&cluster);
}

/// A transfer is reading replica 0's checkpoint when replica 0 takes the next one (its
/// build deferred): the pages stay, are served during the build, and the transfer
/// completes with the checkpoint it started on, before the build finishes.
#[test]
fn a_source_keeps_serving_a_checkpoint_being_read_while_it_builds_the_next() {
    let mut config = config();
    // A page a tick: the transfer is still under way when the next checkpoint is taken.
    config.checkpoint_serve_bytes_per_tick = 4096;
    let (mut cluster, mut session) = lagging_cluster(config);
    let named = cluster.replicas[0].checkpoint_op();
    // Replica 1 answers nothing: every page comes from replica 0.
    cluster.drop_filter = Some(Box::new(|from, _, message: &Message| {
        from == 1 && matches!(message.body, Body::CheckpointPart(_))
    }));
    cluster.down[2] = false;
    for _ in 0..100 {
        cluster.tick();
        cluster.run(100_000);
        if cluster.replicas[2].checkpoint_fetch_progress().is_some() {
            break;
        }
    }
    let (fetching, _, _) = cluster.replicas[2]
        .checkpoint_fetch_progress()
        .expect("a transfer under way");
    assert_eq!(fetching, named);
    cluster.defer_builds();
    let next = next_checkpoint_op(&cluster);
    put_until(&mut cluster, &mut session, next);
    assert_eq!(cluster.replicas[0].checkpoint_building(), Some(next));
    assert_eq!(cluster.replicas[0].checkpoint_op(), named);
    assert!(
        cluster.replicas[0].checkpoint().is_some(),
        "a checkpoint being read keeps its pages"
    );
    assert_eq!(cluster.replicas[2].stats().checkpoint_fetches_completed, 0);
    let served = pages_served(&cluster, 0);
    for _ in 0..500 {
        cluster.tick();
        cluster.run(100_000);
        if cluster.replicas[2].stats().checkpoint_fetches_completed > 0 {
            break;
        }
    }
    assert_eq!(cluster.replicas[2].stats().checkpoint_fetches_completed, 1);
    assert_eq!(cluster.replicas[2].checkpoint_op(), named);
    assert!(
        pages_served(&cluster, 0) > served,
        "served during the build"
    );
    assert_eq!(
        cluster.replicas[0].checkpoint_building(),
        Some(next),
        "completed during the build"
    );
    cluster.run_builds(0);
    cluster.run_builds(1);
    cluster.drop_filter = None;
    let commit = cluster.replicas[0].commit();
    settle(&mut cluster, commit);
    assert_same_state(&cluster);
}
