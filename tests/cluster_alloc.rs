//! The steady state allocates nothing per operation (perf/README.md): three
//! in-process replicas serve 64 pipelined sessions, and a counting allocator counts the
//! allocations made on the replica threads (event loop, protocol core and service
//! together) per committed operation once the buffers have warmed up.

mod common;

use bytes::Bytes;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use vsr::client::{ClientOptions, PipelinedClient};
use vsr::runtime::{ReplicaServer, ServerOptions};
use vsr::service::{Snapshot, SnapshotError, StateMachine};

/// Counts allocations on threads that opted in.
struct Counting;

thread_local! {
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn count() {
    if TRACKED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches
// only an atomic and a const-initialised thread-local, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocation count is global: one cluster at a time in this binary, so another test's
/// replicas never count against the one measuring.
static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A service that executes nothing and marks the thread that runs it (a replica's event
/// loop) as counted.
struct Marker;

impl StateMachine for Marker {
    fn apply(&mut self, _op: u64, _timestamp: u64, _operation: &Bytes) -> Bytes {
        TRACKED.with(|tracked| tracked.set(true));
        Bytes::new()
    }
    fn query(&self, _query: &Bytes) -> Bytes {
        Bytes::new()
    }
    fn snapshot(&mut self) -> Snapshot {
        Snapshot::empty()
    }
    fn restore(&mut self, _snapshot: &Snapshot) -> Result<(), SnapshotError> {
        Ok(())
    }
}

/// Runs `ops` 64-byte operations over `client`'s sessions, keeping every session busy.
fn run(client: &mut PipelinedClient, ops: u64) {
    let body = Bytes::from(vec![7u8; 64]);
    let mut completions = Vec::new();
    let (mut submitted, mut done) = (0u64, 0u64);
    for session in 0..client.sessions() {
        client.submit(session, body.clone()).unwrap();
        submitted += 1;
    }
    while done < ops {
        client
            .poll(&mut completions, Duration::from_secs(10))
            .unwrap();
        for completion in completions.drain(..) {
            completion.result.expect("operation completes");
            done += 1;
            if submitted < ops {
                client.submit(completion.session, body.clone()).unwrap();
                submitted += 1;
            }
        }
    }
}

#[test]
fn steady_state_allocations_per_operation() {
    let _alone = ONE_CLUSTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let addresses = common::cluster::free_addresses(3);
    let servers: Vec<ReplicaServer> = (0..3)
        .map(|replica| {
            ReplicaServer::spawn(ServerOptions::new(addresses.clone(), replica, 0), Marker).unwrap()
        })
        .collect();
    let mut client = PipelinedClient::connect(&addresses, ClientOptions::default(), 64, 4).unwrap();
    run(&mut client, 20_000); // Warm up: buffers, tables and histograms reach their sizes.
                              // Prepares sent by whichever replica is primary (the view may have moved at start).
    let prepares = || -> u64 {
        let sent = |address| {
            let json =
                common::cluster::fetch_stats(address, 0, None, Duration::from_secs(5)).unwrap();
            common::json_u64(&json, "prepares_sent").unwrap()
        };
        addresses.iter().copied().map(sent).sum()
    };
    let (before, prepares_before) = (ALLOCATIONS.load(Ordering::Relaxed), prepares());
    let ops = 50_000;
    run(&mut client, ops);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let batches = prepares() - prepares_before;
    let per_op = allocations as f64 / ops as f64;
    let per_batch = allocations as f64 / batches.max(1) as f64;
    eprintln!(
        "replica threads: {allocations} allocations for {ops} operations in {batches} batches: \
         {per_op:.3} per op, {per_batch:.2} per batch"
    );
    drop(servers);
    // Allocation follows batches (a Prepare's entry list, a read buffer refilled while
    // the log still holds slices of the old one), never operations. The stats requests
    // themselves allocate a little; the slack covers them.
    assert!(
        allocations <= 8 * batches + 200,
        "{allocations} allocations for {ops} operations in {batches} batches"
    );
}

/// A client's batch of requests larger than the primary's queue: what the core cannot take
/// waits (on its connection, or for an I/O thread's requests in the loop) and is fed on
/// later iterations, so nothing is dropped (a dropped request would cost its client a
/// retry timeout). With a queue of 2 entries and 64 sessions on one connection, nearly
/// every batch is larger than the queue.
#[test]
fn a_batch_larger_than_the_primary_queue_loses_nothing() {
    let _alone = ONE_CLUSTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for io_threads in [0, 1] {
        check_no_request_dropped(io_threads);
    }
}

fn check_no_request_dropped(io_threads: usize) {
    let addresses = common::cluster::free_addresses(3);
    let servers: Vec<ReplicaServer> = (0..3)
        .map(|replica| {
            let mut options = ServerOptions::new(addresses.clone(), replica, 0);
            options.config.batch_entries_max = 2;
            options.io_threads = io_threads;
            ReplicaServer::spawn(options, Marker).unwrap()
        })
        .collect();
    let mut client = PipelinedClient::connect(&addresses, ClientOptions::default(), 64, 1).unwrap();
    run(&mut client, 1_000);
    let dropped = || -> u64 {
        let dropped_by = |address| {
            let json =
                common::cluster::fetch_stats(address, 0, None, Duration::from_secs(5)).unwrap();
            common::json_u64(&json, "messages_dropped").unwrap()
        };
        addresses.iter().copied().map(dropped_by).sum()
    };
    let before = dropped();
    run(&mut client, 5_000);
    let after = dropped();
    drop(servers);
    assert_eq!(
        after, before,
        "requests dropped with {io_threads} I/O threads"
    );
}
