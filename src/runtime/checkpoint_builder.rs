//! The checkpoint builder: a worker thread that builds the replica's checkpoints off the
//! event loop (`Effect::BuildCheckpoint`, paper 5.1's copy-on-write).
//!
//! Building a checkpoint folds the service's changes into pages and hashes them, which
//! for a large state takes far longer than a loop iteration may (a backup that stalls for
//! its normal timeout starts a view change). The core captures what the build reads and
//! goes on; this thread runs the build and wakes the loop, which tells the core
//! (`Replica::on_checkpoint_built`). The same thread prepares the install of a checkpoint
//! the replica fetched (`StateMachine::prepare_restore`: reading a large state's pages
//! into a new state), so that the loop's part of an install is a swap. The core asks for
//! one build and one install at a time, so the channel holds at most two. Work the core
//! abandoned is skipped (it holds it weakly).

use crate::protocol::{CheckpointBuild, Op};
use crossbeam_channel::{Receiver, Sender};
use mio::Waker;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tracing::info;

/// The loop's side of the checkpoint builder thread.
pub(super) struct CheckpointBuilder {
    /// `None` once stopped.
    to_worker: Option<Sender<(Op, CheckpointBuild)>>,
    /// Set by the worker when a build (or an install's preparation) finished, taken by
    /// the loop.
    built: Arc<AtomicBool>,
    /// How long the last build took, milliseconds, until the loop takes it (installs are
    /// not builds: not here); `NO_BUILD` when none finished since.
    last_build_ms: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl CheckpointBuilder {
    /// Starts the thread; it wakes `waker` after every build.
    pub fn spawn(replica: u8, waker: Arc<Waker>) -> std::io::Result<CheckpointBuilder> {
        let (to_worker, from_loop) = crossbeam_channel::unbounded();
        let built = Arc::new(AtomicBool::new(false));
        let last_build_ms = Arc::new(AtomicU64::new(NO_BUILD));
        let (flag, took) = (built.clone(), last_build_ms.clone());
        let thread = std::thread::Builder::new()
            .name(format!("vsr-checkpoint-{replica}"))
            .spawn(move || run(&from_loop, &flag, &took, &waker))?;
        Ok(CheckpointBuilder {
            to_worker: Some(to_worker),
            built,
            last_build_ms,
            thread: Some(thread),
        })
    }

    /// Hands the build of the checkpoint at `op` to the thread, and tells the replica
    /// that a worker has it (`CheckpointBuild::start`): the thread runs every build it
    /// is sent, in order, so the replica may hold back for it rather than run it itself.
    /// Told at the hand-over, not when the thread begins: on a busy machine the thread
    /// may wait tens of milliseconds for a core, and a replica that then found the build
    /// not started would run it on its loop.
    pub fn submit(&self, op: Op, build: CheckpointBuild) {
        if let Some(to_worker) = &self.to_worker {
            // The thread ends only when this sender is dropped: it is there.
            if to_worker.send((op, build.clone())).is_ok() {
                build.start();
            }
        }
    }

    /// What finished since the last call (`None`: nothing).
    pub fn take_finished(&self) -> Option<Finished> {
        if !self.built.swap(false, Ordering::AcqRel) {
            return None;
        }
        let ms = self.last_build_ms.swap(NO_BUILD, Ordering::AcqRel);
        Some(Finished {
            build_ms: (ms != NO_BUILD).then_some(ms),
        })
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

/// Work done off the loop that the core was not told of yet: checkpoint builds, or
/// preparations of a fetched checkpoint's install, or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Finished {
    /// How long the last build among them took, in milliseconds (`None`: only
    /// preparations finished).
    pub build_ms: Option<u64>,
}

impl Finished {
    /// Both together: the later build's time, or the earlier's if only it was a build.
    pub fn and(self, later: Finished) -> Finished {
        Finished {
            build_ms: later.build_ms.or(self.build_ms),
        }
    }
}

/// `last_build_ms` when no build finished since the loop last took it.
const NO_BUILD: u64 = u64::MAX;

fn run(
    from_loop: &Receiver<(Op, CheckpointBuild)>,
    built: &AtomicBool,
    took: &AtomicU64,
    waker: &Waker,
) {
    while let Ok((op, build)) = from_loop.recv() {
        let started = std::time::Instant::now();
        if build.run() {
            let ms = started.elapsed().as_millis() as u64;
            if build.is_install() {
                info!(
                    op,
                    ms, "install of a fetched checkpoint prepared off the event loop"
                );
            } else {
                info!(op, ms, "checkpoint built off the event loop");
                took.store(ms, Ordering::Release);
            }
            built.store(true, Ordering::Release);
            let _ = waker.wake();
        }
    }
}
