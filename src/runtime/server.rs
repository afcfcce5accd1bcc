//! The library face of the runtime: start a replica on its own thread and stop it.
//!
//! ```no_run
//! use vsr::runtime::{ReplicaServer, ServerOptions};
//! let addresses = vec!["127.0.0.1:3000".parse().unwrap(), "127.0.0.1:3001".parse().unwrap(),
//!                      "127.0.0.1:3002".parse().unwrap()];
//! let server = ReplicaServer::spawn(ServerOptions::new(addresses, 0, 0), vsr::service::Null).unwrap();
//! // ... serve ...
//! server.shutdown().unwrap();
//! ```

use super::event_loop::{EventLoop, LISTENER, WAKER};
use super::options::{ServerError, ServerOptions};
use crate::protocol::{Replica, Start};
use crate::service::StateMachine;
use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tracing::warn;

/// A running replica: its event loop thread, and the means to stop it.
#[derive(Debug)]
pub struct ReplicaServer {
    address: SocketAddr,
    shutdown: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl ReplicaServer {
    /// Checks `options`, binds the replica's port, and starts its event loop on a new
    /// thread (pinned to `options.core` if given). The replica starts in recovery with a
    /// fresh nonce (paper 4.3): it learns from its peers whether the cluster is new.
    /// Errors (bad options, port in use) are reported before any thread starts.
    pub fn spawn<S>(options: ServerOptions, service: S) -> Result<ReplicaServer, ServerError>
    where
        S: StateMachine + Send + 'static,
    {
        options.validate()?;
        let address = options.address();
        let mut listener =
            TcpListener::bind(address).map_err(|error| ServerError::Bind { address, error })?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let shutdown = Arc::new(AtomicBool::new(false));
        let loop_shutdown = shutdown.clone();
        let name = format!("vsr-replica-{}", options.replica);
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            if let Some(core) = options.core {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                    warn!(core, "could not pin the replica thread; running unpinned");
                }
            }
            let start = Start::Recover { nonce: nonce() };
            let replica = Replica::new(options.config.clone(), options.replica, service, start);
            EventLoop::new(poll, listener, options, replica, loop_shutdown).run()
        })?;
        Ok(ReplicaServer {
            address,
            shutdown,
            waker,
            thread: Some(thread),
        })
    }

    /// The address the replica listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Whether the event loop has stopped (after a shutdown or an error).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the event loop and waits for it; its sockets close with it.
    pub fn shutdown(mut self) -> Result<(), ServerError> {
        self.stop()
    }

    /// Waits for the event loop to end (it ends only on error or shutdown from a clone
    /// of the handle; a binary uses this to serve until killed).
    pub fn join(mut self) -> Result<(), ServerError> {
        let thread = self.thread.take().expect("joined once");
        thread.join().map_err(|_| ServerError::Panicked)?
    }

    fn stop(&mut self) -> Result<(), ServerError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.shutdown.store(true, Ordering::Release);
        self.waker.wake()?;
        thread.join().map_err(|_| ServerError::Panicked)?
    }
}

impl Drop for ReplicaServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A random 64-bit value from the OS-seeded hasher keys, mixed with the time and the
/// process id: a recovery nonce or a client id (never 0). The core never draws
/// randomness itself; the runtime passes this in.
pub fn nonce() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish().max(1)
}
