//! Simulated disks (seeds with `ClusterOptions::disks`): what a replica's storage holds
//! across a crash, with the faults of real ones.
//!
//! Each write's payload is captured when the replica issues it
//! ([`StoredWrite::capture`]) and reaches the disk when the cluster completes the write.
//! Writes are grouped in batches, one per dispatch of a replica's effects (the runtime's
//! journal writes one batch per event-loop iteration), and a batch is atomic: a crash
//! loses every write of a batch not yet complete, and of a batch whose last write
//! completed, nothing. The image is folded with [`Stored::apply`], the same fold the
//! runtime's journal replays on start, so a restart here reads back exactly what a
//! restart from the journal would.
//!
//! Faults: a crash loses unsynced writes (the batches not complete); a torn write is the
//! same loss as seen after the restart (the journal's checksums discard a torn batch,
//! and batches are padded to sectors so that a tear never reaches an earlier one); a
//! corrupted sector, rarely, damages a restarted replica's image: it keeps a prefix of
//! its log and reports damage, as the journal does when a batch in the middle fails its
//! checksum.

use super::checker::Failure;
use crate::protocol::{DurableState, Op, ReplicaIndex, Stored, StoredWrite};

/// One replica's disk.
#[derive(Clone, Debug, Default)]
struct Disk {
    /// What survives a crash: every complete batch.
    image: Stored,
    /// Writes of the batch in progress that completed (lost with a crash).
    staged: Vec<StoredWrite>,
}

/// Every replica's disk.
#[derive(Clone, Debug)]
pub struct Disks {
    disks: Vec<Disk>,
}

impl Disks {
    /// Empty disks for `replica_count` replicas.
    pub fn new(replica_count: usize) -> Disks {
        Disks {
            disks: vec![Disk::default(); replica_count],
        }
    }

    /// Makes room for replicas up to `replica_count` (members added by a
    /// reconfiguration, with empty disks).
    pub fn grow(&mut self, replica_count: usize) {
        if self.disks.len() < replica_count {
            self.disks.resize(replica_count, Disk::default());
        }
    }

    /// Formats `replica`'s disk for a brand-new cluster whose replicas start `Fresh`:
    /// the state they begin in (normal in view 0, joined) needs no write of theirs.
    pub fn format(&mut self, replica: ReplicaIndex, state: DurableState) {
        self.disks[replica as usize].image.state = state;
    }

    /// A write of `replica` completed; `ends_batch`: the last of its batch, which is now
    /// durable as a whole.
    pub fn complete(
        &mut self,
        replica: ReplicaIndex,
        writes: Vec<StoredWrite>,
        ends_batch: bool,
    ) -> Result<(), Failure> {
        let disk = &mut self.disks[replica as usize];
        disk.staged.extend(writes);
        if !ends_batch {
            return Ok(());
        }
        // The journal that found damage truncated at it and appends after: the next
        // restart reads what the replica wrote since, which starts with the state of a
        // recovering replica (a damaged replica recovers).
        disk.image.damage = None;
        for write in disk.staged.drain(..) {
            disk.image.apply(write).map_err(|inconsistent| {
                Failure::new("storage", format!("r{replica}: {inconsistent}"))
            })?;
        }
        Ok(())
    }

    /// A crash: the batch in progress is lost.
    pub fn on_crash(&mut self, replica: ReplicaIndex) {
        self.disks[replica as usize].staged.clear();
    }

    /// What `replica`'s disk holds: what a restart reads back.
    pub fn image(&self, replica: ReplicaIndex) -> &Stored {
        &self.disks[replica as usize].image
    }

    /// A corrupted sector in `replica`'s journal at `op`, found when it restarts: the
    /// store keeps what precedes it and reports the damage. The image stays damaged until
    /// the replica completes a batch.
    pub fn damage_at(&mut self, replica: ReplicaIndex, op: Op) {
        let image = &mut self.disks[replica as usize].image;
        let keep = op.saturating_sub(image.log_base + 1) as usize;
        image.entries.truncate(keep);
        image.damage = Some(format!("a corrupt sector at op {op}"));
    }

    /// The corrupted sector held `replica`'s state record: it restarts not knowing its
    /// view.
    pub fn lose_state(&mut self, replica: ReplicaIndex) {
        let image = &mut self.disks[replica as usize].image;
        image.state = Default::default();
        image.damage = Some("a corrupt state record".into());
    }

    /// Whether every replica's disk says it joined the cluster (false during a new
    /// cluster's first start).
    pub fn all_joined(&self) -> bool {
        self.disks.iter().all(|disk| disk.image.state.joined)
    }

    /// Whether `replica` will restart recovering: its disk is damaged or says so.
    pub fn recovering(&self, replica: ReplicaIndex) -> bool {
        let image = &self.disks[replica as usize].image;
        image.damage.is_some() || image.state.recovering
    }

    /// The disk is replaced by an empty one.
    pub fn wipe(&mut self, replica: ReplicaIndex) {
        self.disks[replica as usize] = Disk::default();
    }
}
