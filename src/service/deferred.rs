//! Work deferred to another thread: a computation that runs at most once, wherever its
//! result is first needed.
//!
//! A checkpoint (paper 5.1) is taken at an op, but building it (folding the service's
//! changes into pages, hashing them, updating the Merkle tree) takes time proportional to
//! what changed, which for a large state is far longer than an event loop may stall. The
//! paper's answer is copy-on-write: capture the state at the op cheaply, keep executing,
//! and build the checkpoint in the background. A [`Deferred`] is that build: created with
//! everything it reads captured (immutable, shared), it is run by a worker thread, or, if
//! someone needs the result before a worker got to it, by that caller. Either way it runs
//! exactly once, and a caller that needs the result while another thread runs it waits for
//! it rather than running it twice.
//!
//! A driver that abandons a build holds only a [`WeakDeferred`]: a build its owner dropped
//! is not run at all.
//!
//! A computation also says whether a worker has taken it ([`Deferred::is_started`]): its
//! owner may then go on without it, knowing that the result will come without anyone
//! waiting for it, where one nobody took may need running by the owner itself.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

type Work<T> = Box<dyn FnOnce() -> T + Send>;

struct Inner<T> {
    /// The computation, until it is taken to run.
    work: Mutex<Option<Work<T>>>,
    /// Its result, once it ran.
    result: OnceLock<T>,
    /// Set when a worker took it ([`WeakDeferred::start`]) or someone began running it.
    started: AtomicBool,
}

/// A computation that runs once, on whichever thread first needs its result (module docs).
/// Cloning shares it.
pub struct Deferred<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Deferred<T> {
    fn clone(&self) -> Self {
        Deferred {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Send + Sync + 'static> Deferred<T> {
    /// `work`, not run yet.
    pub fn new(work: impl FnOnce() -> T + Send + 'static) -> Deferred<T> {
        Deferred {
            inner: Arc::new(Inner {
                work: Mutex::new(Some(Box::new(work))),
                result: OnceLock::new(),
                started: AtomicBool::new(false),
            }),
        }
    }

    /// A computation that already ran, with `result`.
    pub fn ready(result: T) -> Deferred<T> {
        let deferred = Deferred {
            inner: Arc::new(Inner {
                work: Mutex::new(None),
                result: OnceLock::new(),
                started: AtomicBool::new(true),
            }),
        };
        let _ = deferred.inner.result.set(result);
        deferred
    }

    /// The result: computed here if nobody ran it yet, waited for if another thread is
    /// running it.
    pub fn run(&self) -> &T {
        self.inner.started.store(true, Ordering::Release);
        // A computation that panicked is not under way: its owner must not wait for a
        // result that will never come (it finds the work gone if it runs it itself).
        let _unstarted_on_panic = UnstartOnPanic(&self.inner.started);
        self.inner.result.get_or_init(|| {
            // `get_or_init` runs one initialiser at a time and none once one finished, so
            // the work is still there (unless an earlier run panicked, which took it).
            let work = self.inner.work.lock().map(|mut work| work.take());
            let work = work
                .ok()
                .flatten()
                .expect("a deferred computation ran once");
            work()
        })
    }

    /// The result, if the computation finished.
    pub fn get(&self) -> Option<&T> {
        self.inner.result.get()
    }

    /// Whether the computation finished.
    pub fn is_done(&self) -> bool {
        self.get().is_some()
    }

    /// Whether a worker took the computation or someone began running it (or it
    /// finished): its result will come without its owner running it.
    pub fn is_started(&self) -> bool {
        self.inner.started.load(Ordering::Acquire)
    }

    /// The result, moved out, if the computation finished and this is the only handle;
    /// otherwise the handle back.
    pub fn try_take(self) -> Result<T, Deferred<T>> {
        if !self.is_done() {
            return Err(self);
        }
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => Ok(inner.result.into_inner().expect("checked done")),
            Err(inner) => Err(Deferred { inner }),
        }
    }

    /// A handle that runs the computation only while some `Deferred` still holds it.
    pub fn downgrade(&self) -> WeakDeferred<T> {
        WeakDeferred {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Whether `self` and `other` are the same computation.
    pub fn same(&self, other: &Deferred<T>) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Clears a computation's `started` if dropped while its thread panics.
struct UnstartOnPanic<'a>(&'a AtomicBool);

impl Drop for UnstartOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(false, Ordering::Release);
        }
    }
}

impl<T> fmt::Debug for Deferred<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.inner.result.get().is_some() {
            "done"
        } else {
            "pending"
        };
        write!(f, "Deferred({state})")
    }
}

/// Two handles are equal when they share one computation.
impl<T> PartialEq for Deferred<T> {
    fn eq(&self, other: &Deferred<T>) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl<T> Eq for Deferred<T> {}

/// A [`Deferred`] held weakly, by a worker that runs it (see [`Deferred::downgrade`]).
pub struct WeakDeferred<T> {
    inner: Weak<Inner<T>>,
}

impl<T: Send + Sync + 'static> WeakDeferred<T> {
    /// Runs the computation if something still holds it; returns whether it did (or it
    /// had run already).
    pub fn run(&self) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return false;
        };
        Deferred { inner }.run();
        true
    }

    /// Marks the computation taken by a worker that will run it (see
    /// [`Deferred::is_started`]): a driver that queues it says so when its worker picks it
    /// up, before it runs it.
    pub fn start(&self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.started.store(true, Ordering::Release);
        }
    }
}

impl<T> WeakDeferred<T> {
    /// Whether `self` and `other` are handles to the same computation.
    pub fn same(&self, other: &WeakDeferred<T>) -> bool {
        Weak::ptr_eq(&self.inner, &other.inner)
    }
}

impl<T> Clone for WeakDeferred<T> {
    fn clone(&self) -> Self {
        WeakDeferred {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for WeakDeferred<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeakDeferred")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_once_wherever_first_needed() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let deferred = Deferred::new(move || counted.fetch_add(1, Ordering::SeqCst) + 41);
        assert!(!deferred.is_done());
        let worker = {
            let deferred = deferred.clone();
            std::thread::spawn(move || *deferred.run())
        };
        assert_eq!(*deferred.run(), 41);
        assert_eq!(worker.join().unwrap(), 41);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(deferred.get(), Some(&41));
    }

    #[test]
    fn a_dropped_computation_is_not_run_by_its_worker() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let deferred = Deferred::new(move || counted.fetch_add(1, Ordering::SeqCst));
        let weak = deferred.downgrade();
        drop(deferred);
        assert!(!weak.run());
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn started_once_a_worker_takes_it_or_anyone_runs_it() {
        let deferred = Deferred::new(|| 7u8);
        assert!(!deferred.is_started());
        deferred.downgrade().start();
        assert!(
            deferred.is_started() && !deferred.is_done(),
            "taken, not run"
        );
        let other = Deferred::new(|| 8u8);
        other.run();
        assert!(other.is_started() && other.is_done());
        assert!(Deferred::ready(9u8).is_started());
    }

    #[test]
    fn a_computation_that_panicked_is_no_longer_started() {
        let deferred: Deferred<u8> = Deferred::new(|| panic!("the build failed"));
        deferred.downgrade().start();
        let weak = deferred.downgrade();
        let worker = std::thread::spawn(move || weak.run());
        assert!(worker.join().is_err(), "the worker's run panicked");
        assert!(!deferred.is_started() && !deferred.is_done());
    }

    #[test]
    fn a_result_is_moved_out_only_from_the_last_handle() {
        let deferred = Deferred::new(|| vec![1u8; 3]);
        let other = deferred.clone();
        let deferred = deferred.try_take().expect_err("not run yet");
        other.run();
        let deferred = deferred.try_take().expect_err("shared");
        drop(other);
        assert_eq!(deferred.try_take().ok(), Some(vec![1u8; 3]));
    }

    #[test]
    fn a_ready_result_needs_no_work() {
        let deferred = Deferred::ready(7u8);
        assert!(deferred.is_done());
        assert_eq!(*deferred.run(), 7);
        assert!(deferred.downgrade().run());
    }
}
