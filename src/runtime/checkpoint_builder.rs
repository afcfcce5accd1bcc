//! The checkpoint builder: a worker thread that builds the replica's checkpoints off the
//! event loop (`Effect::BuildCheckpoint`, paper 5.1's copy-on-write).
//!
//! Building a checkpoint folds the service's changes into pages and hashes them, which
//! for a large state takes far longer than a loop iteration may (a backup that stalls for
//! its normal timeout starts a view change). The core captures what the build reads and
//! goes on; this thread runs the build and wakes the loop, which tells the core
//! (`Replica::on_checkpoint_built`). The core asks for one build at a time, so the channel
//! holds at most one. A build the core abandoned is skipped (it holds builds weakly).

use crate::protocol::{CheckpointBuild, Op};
use crossbeam_channel::{Receiver, Sender};
use mio::Waker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tracing::info;

/// The loop's side of the checkpoint builder thread.
pub(super) struct CheckpointBuilder {
    /// `None` once stopped.
    to_worker: Option<Sender<(Op, CheckpointBuild)>>,
    /// Set by the worker when a build finished, taken by the loop.
    built: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CheckpointBuilder {
    /// Starts the thread; it wakes `waker` after every build.
    pub fn spawn(replica: u8, waker: Arc<Waker>) -> std::io::Result<CheckpointBuilder> {
        let (to_worker, from_loop) = crossbeam_channel::unbounded();
        let built = Arc::new(AtomicBool::new(false));
        let flag = built.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vsr-checkpoint-{replica}"))
            .spawn(move || run(&from_loop, &flag, &waker))?;
        Ok(CheckpointBuilder {
            to_worker: Some(to_worker),
            built,
            thread: Some(thread),
        })
    }

    /// Hands the build of the checkpoint at `op` to the thread.
    pub fn submit(&self, op: Op, build: CheckpointBuild) {
        if let Some(to_worker) = &self.to_worker {
            // The thread ends only when this sender is dropped: it is there.
            let _ = to_worker.send((op, build));
        }
    }

    /// Whether a build finished since the last call.
    pub fn take_built(&self) -> bool {
        self.built.swap(false, Ordering::AcqRel)
    }

    /// Stops the thread once its build (if any) is done.
    pub fn stop(&mut self) {
        self.to_worker = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for CheckpointBuilder {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(from_loop: &Receiver<(Op, CheckpointBuild)>, built: &AtomicBool, waker: &Waker) {
    while let Ok((op, build)) = from_loop.recv() {
        let started = std::time::Instant::now();
        if build.run() {
            let ms = started.elapsed().as_millis() as u64;
            info!(op, ms, "checkpoint built off the event loop");
            built.store(true, Ordering::Release);
            let _ = waker.wake();
        }
    }
}
