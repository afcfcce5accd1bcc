//! A replicated log embedded in one program: three replicas on three threads (pinned to
//! cores where the machine has them) on loopback ports, a custom state machine that
//! records each committed operation, and a client that appends a few records.
//!
//! Run with `cargo run --example log_replicator`.

use bytes::Bytes;
use std::sync::mpsc;
use std::time::Duration;
use vsr::client::{Client, ClientOptions};
use vsr::runtime::{ReplicaServer, ServerOptions};
use vsr::service::{Page, Snapshot, SnapshotError, StateMachine};

/// The state machine: a running count of records and bytes, and a channel that receives
/// every committed record in log order, exactly once per replica.
struct Ledger {
    records: u64,
    bytes: u64,
    committed: mpsc::Sender<(u64, Bytes)>,
}

impl StateMachine for Ledger {
    fn apply(&mut self, op: u64, _timestamp: u64, record: &Bytes) -> Bytes {
        self.records += 1;
        self.bytes += record.len() as u64;
        let _ = self.committed.send((op, record.clone()));
        Bytes::copy_from_slice(&self.records.to_le_bytes()) // The record's position.
    }

    fn query(&self, _query: &Bytes) -> Bytes {
        Bytes::copy_from_slice(&self.records.to_le_bytes())
    }

    /// The state is 16 bytes: one page. (A large state would be cut into pages so that
    /// a checkpoint shares the ones that did not change; see `vsr::service::snapshot`.)
    fn snapshot(&mut self) -> Snapshot {
        let state = [self.records.to_le_bytes(), self.bytes.to_le_bytes()].concat();
        Snapshot::new(vec![Page::new(state.into())])
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        let [page] = snapshot.pages() else {
            return Err(SnapshotError("a ledger snapshot is one page"));
        };
        let field = |i: usize| {
            page.bytes()
                .get(i * 8..i * 8 + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        };
        self.records = field(0).ok_or(SnapshotError("short ledger snapshot"))?;
        self.bytes = field(1).ok_or(SnapshotError("short ledger snapshot"))?;
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Three free loopback ports.
    let probes: Vec<_> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let addresses: Vec<_> = probes
        .iter()
        .map(|p| p.local_addr())
        .collect::<Result<_, _>>()?;
    drop(probes);

    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut servers = Vec::new();
    let mut streams = Vec::new();
    for replica in 0..3u8 {
        let mut options = ServerOptions::new(addresses.clone(), replica, 0);
        options.core = (cores.len() >= 3).then(|| cores[replica as usize].id);
        let (committed, stream) = mpsc::channel();
        servers.push(ReplicaServer::spawn(
            options,
            Ledger {
                records: 0,
                bytes: 0,
                committed,
            },
        )?);
        streams.push(stream);
    }

    let mut client = Client::connect(&addresses, ClientOptions::default())?;
    for record in ["alpha", "beta", "gamma", "delta"] {
        let position = client.call(Bytes::from(record))?;
        println!(
            "appended {record:?} as record {}",
            u64::from_le_bytes(position[..8].try_into()?)
        );
    }

    // Every replica commits the same stream, at the same op numbers. (A client's
    // registration takes an op number too, but never reaches the state machine.)
    for (replica, stream) in streams.iter().enumerate() {
        let log: Vec<String> = (0..4)
            .map(|_| stream.recv_timeout(Duration::from_secs(10)))
            .map(|entry| {
                entry.map(|(op, record)| format!("{op}:{}", String::from_utf8_lossy(&record)))
            })
            .collect::<Result<_, _>>()?;
        println!("replica {replica} committed {}", log.join(" "));
    }
    for server in servers {
        server.shutdown()?;
    }
    Ok(())
}
