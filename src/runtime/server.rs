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

use super::checkpoint_builder::CheckpointBuilder;
use super::committed::{self, CommittedOps};
use super::event_loop::{EventLoop, LISTENER, WAKER};
use super::io_thread::{self, IoContext, IoHandle, ToCore};
use super::membership::address_bytes;
use super::options::{Durability, ServerError, ServerOptions};
use super::page_hasher::PageHasher;
use super::page_keeper::PageKeeper;
use super::prometheus::MetricsExporter;
use super::status::{ReplicaStatus, SharedStatus};
use super::storage::DiskWrites;
use super::storage_thread::StorageThread;
use crate::protocol::{Configuration, Replica, Start, Stored};
use crate::service::StateMachine;
use crate::storage::{DataDir, Identity};
use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use tracing::warn;

/// A running replica: its event loop thread, and the means to stop it.
#[derive(Debug)]
pub struct ReplicaServer {
    address: SocketAddr,
    metrics_address: Option<SocketAddr>,
    status: Arc<SharedStatus>,
    shutdown: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl ReplicaServer {
    /// Checks `options`, binds the replica's port, and starts its event loop on a new
    /// thread (pinned to `options.core` if given). In memory, the replica starts in
    /// recovery with a fresh nonce (paper 4.3): it learns from its peers whether the
    /// cluster is new. On disk, it first opens and locks its data directory and resumes
    /// from what it holds (`Start::Restart`; an empty directory is a recovery too), and a
    /// storage thread makes its writes durable. Errors (bad options, a data directory in
    /// use or of another replica, port in use) are reported before the event loop starts.
    pub fn spawn<S>(options: ServerOptions, service: S) -> Result<ReplicaServer, ServerError>
    where
        S: StateMachine + Send + 'static,
    {
        let mut options = options;
        options.validate()?;
        let data_dir = open_data_dir(&options)?;
        let address = options.address();
        let mut listener =
            TcpListener::bind(address).map_err(|error| ServerError::Bind { address, error })?;
        // Port 0 (a single-replica cluster only: `validate`): the port the OS chose is
        // the address clients name in their hello.
        let address = listener.local_addr()?;
        options.addresses[options.replica as usize] = address;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let exporter = match options.metrics_address {
            Some(address) => Some(
                MetricsExporter::start(address, Instant::now())
                    .map_err(|error| ServerError::Bind { address, error })?,
            ),
            None => None,
        };
        let metrics_address = exporter.as_ref().map(MetricsExporter::address);
        let status = Arc::new(SharedStatus::default());
        let loop_status = status.clone();
        let shutdown = Arc::new(AtomicBool::new(false));
        let (disk, stored) = match data_dir {
            Some((data_dir, stored)) => {
                let writer = data_dir.fetch_writer().map_err(ServerError::Storage)?;
                let keeper = PageKeeper::spawn(writer)?;
                let thread = StorageThread::spawn(data_dir, waker.clone())?;
                (Some(DiskWrites::new(thread, keeper)), Some(stored))
            }
            None => (None, None),
        };
        let joining = match options.join.is_empty() {
            true => None,
            false => Some(super::join::discover(&options)?),
        };
        let (io, from_io) = spawn_io_threads(&options, &waker, &shutdown)?;
        let builder = CheckpointBuilder::spawn(options.replica, waker.clone())?;
        let hasher = PageHasher::spawn(options.replica, waker.clone())?;
        let loop_shutdown = shutdown.clone();
        let name = format!("vsr-replica-{}", options.replica);
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            if let Some(core) = options.core {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                    warn!(core, "could not pin the replica thread; running unpinned");
                }
            }
            let (configuration, id) = match &joining {
                Some(joining) => (joining.configuration.clone(), joining.id),
                None => {
                    let addresses: Vec<_> = options
                        .addresses
                        .iter()
                        .map(|&a| address_bytes(a))
                        .collect();
                    let initial = Configuration::initial_with_addresses(&addresses)
                        .with_witnesses(options.config.witnesses);
                    (initial, options.replica.into())
                }
            };
            let start = match (stored, &joining) {
                // What the data directory holds knows better than anyone we asked.
                (Some(stored), _) => Start::Restart {
                    stored: Box::new(stored),
                    nonce: nonce(),
                },
                (None, Some(joining)) if !joining.member => Start::Join { id },
                (None, _) => Start::Recover { nonce: nonce() },
            };
            let config = options.config.clone();
            let replica = Replica::in_configuration(config, configuration, id, service, start);
            EventLoop::new(poll, listener, options, replica, loop_shutdown, io, from_io)
                .with_disk(disk)
                .with_checkpoint_builder(builder)
                .with_page_hasher(hasher)
                .with_exporter(exporter)
                .with_status(loop_status)
                .run()
        })?;
        Ok(ReplicaServer {
            address,
            metrics_address,
            status,
            shutdown,
            waker,
            thread: Some(thread),
        })
    }

    /// Starts a replica of the log service and returns it with the stream of its
    /// committed operations: vsr as a log replicator, no `StateMachine` to write (see
    /// [`CommittedOps`] for what the stream guarantees).
    pub fn spawn_log(options: ServerOptions) -> Result<(ReplicaServer, CommittedOps), ServerError> {
        let (service, committed) = committed::log_service();
        Ok((ReplicaServer::spawn(options, service)?, committed))
    }

    /// The address the replica listens on (with port 0, the port the OS chose).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The replica's role, view, op and commit as of its latest loop iteration.
    pub fn status(&self) -> ReplicaStatus {
        self.status.read()
    }

    /// Where the Prometheus metrics are served (`--metrics-address`), if they are.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_address
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

/// Opens the data directory with `--durability disk`, and reads back what it holds.
fn open_data_dir(options: &ServerOptions) -> Result<Option<(DataDir, Stored)>, ServerError> {
    let Durability::Disk(path) = &options.durability else {
        return Ok(None);
    };
    let identity = Identity {
        cluster: options.config.cluster,
        replica: options.replica,
        replicas: options.config.replica_count,
    };
    DataDir::open(path, identity)
        .map(Some)
        .map_err(ServerError::Storage)
}

/// Starts `options.io_threads` I/O threads feeding one channel to the core thread.
fn spawn_io_threads(
    options: &ServerOptions,
    core_waker: &Arc<Waker>,
    shutdown: &Arc<AtomicBool>,
) -> Result<(Vec<IoHandle>, Option<crossbeam_channel::Receiver<ToCore>>), ServerError> {
    if options.io_threads == 0 {
        return Ok((Vec::new(), None));
    }
    let (to_core, from_io) = crossbeam_channel::bounded(io_thread::CHANNEL_CAPACITY);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::with_capacity(options.io_threads);
    for io in 0..options.io_threads {
        let core = options
            .core
            .map(|core| core + 1 + io)
            .filter(|core| cores.iter().any(|id| id.id == *core));
        let context = IoContext {
            io: io as u8,
            replica: options.replica,
            gate: options.gate(),
            cluster: options.config.cluster,
            frame_bytes_max: options.request_frame_bytes_max(),
            core,
        };
        let handle = io_thread::spawn(
            context,
            to_core.clone(),
            core_waker.clone(),
            shutdown.clone(),
        );
        match handle {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                shutdown.store(true, Ordering::Release);
                handles.iter_mut().for_each(IoHandle::join);
                return Err(error.into());
            }
        }
    }
    Ok((handles, Some(from_io)))
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
