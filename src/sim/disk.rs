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
//!
//! A checkpoint that the image covers (`Stored::covers`: every entry from the image's
//! checkpoint through its op is on the disk) reaches the image some batches later, as
//! the data directory writes its file in the background and records its marker in a
//! later batch (`storage::data_dir`, "Checkpoint files in the background"): 0-3 batches
//! later (drawn from a stream of its own), one being written and one waiting at most (a
//! newer one replaces the one waiting), and a crash loses both. Until then a restart
//! reads back the older checkpoint and the log above it.
//!
//! Pages a checkpoint fetch kept (`Effect::KeepPages`) are outside the batches: the
//! runtime writes them from a thread of its own, never synced, so a crash loses those
//! written since the last crash at random (a suffix), may tear the last one left, and
//! rarely garbles one in the middle. A restart reads them back as the data directory
//! does: each page's digest computed again, mismatches dropped and counted
//! ([`FetchedPages::read_back`]).

use super::checker::Failure;
use super::prng::Prng;
use crate::protocol::{
    Checkpoint, DurableState, FetchedPages, Inconsistent, KeepPages, Op, ReplicaIndex, Stored,
    StoredWrite,
};
use crate::service::snapshot::Digest;
use bytes::Bytes;

/// The ops a disk holds a copy of: inclusive ranges, `(1, 0)` when empty
/// ([`Disks::held`]).
pub type Held = [(Op, Op); 3];

fn holds(held: &Held, op: Op) -> bool {
    held.iter().any(|&(first, last)| first <= op && op <= last)
}

/// The ranges of ops up to `committed` that `before` holds and `after` does not.
fn given_up(before: Held, after: &Held, committed: Op) -> Vec<(Op, Op)> {
    let mut ranges: Vec<(Op, Op)> = before
        .iter()
        .map(|&(first, last)| (first, last.min(committed)))
        .filter(|&(first, last)| first <= last)
        .collect();
    for &(held_first, held_last) in after.iter().filter(|(first, last)| first <= last) {
        ranges = ranges
            .into_iter()
            .flat_map(|(first, last)| {
                let below = (first, last.min(held_first.saturating_sub(1)));
                let above = (first.max(held_last.saturating_add(1)), last);
                [below, above]
            })
            .filter(|&(first, last)| first <= last)
            .collect();
    }
    ranges
}

/// One replica's disk.
#[derive(Clone, Debug, Default)]
struct Disk {
    /// What survives a crash: every complete batch.
    image: Stored,
    /// Writes of the batch in progress that completed (lost with a crash).
    staged: Vec<StoredWrite>,
    /// A fault took data from this disk (wiped, or damaged), and the replica has not
    /// finished recovering since: the copies it held count as lost (`check_copies`).
    faulted: bool,
    /// Kept pages: the root they were fetched for, and each page's digest and bytes as
    /// written (a fault may change the bytes).
    kept_root: Option<Digest>,
    kept: Vec<(Digest, Bytes)>,
    /// How many of `kept` were written since the last crash (a crash may lose them).
    kept_unsynced: usize,
    /// A covered checkpoint whose file is being written, and the batches until its
    /// marker is in.
    checkpoint_writing: Option<(Checkpoint, u64)>,
    /// The covered checkpoint whose file waits to be written next.
    checkpoint_waiting: Option<Checkpoint>,
}

/// Every replica's disk.
#[derive(Clone, Debug)]
pub struct Disks {
    disks: Vec<Disk>,
    /// The faults of kept pages, a stream of its own so that other draws replay
    /// unchanged.
    prng: Prng,
    /// Kept pages lost, torn or garbled by crashes (for the run summary).
    pub kept_pages_lost: u64,
    /// When the files of covered checkpoints are written (module docs): a stream of its
    /// own.
    checkpoint_files: Prng,
    /// Covered checkpoints whose marker was to reach the image after their batch (for
    /// the run summary).
    pub checkpoints_deferred: u64,
    /// Of those, the ones a crash lost before their marker was in.
    pub checkpoints_deferred_lost: u64,
}

/// Per step, the chance that a replica partway through a checkpoint fetch crashes: a
/// transfer in the simulator lasts a few steps, so resuming needs it high.
const CRASH_MID_FETCH_PPM: u32 = 300_000;

/// Tells the disks' stream apart from the seed's others.
const DISK_STREAM: u64 = 0x6b65_7074_7061_6765;

/// Tells the stream of checkpoint files' delays apart from the seed's others.
const CHECKPOINT_FILE_STREAM: u64 = 0x6368_6b70_7466_696c;

/// A covered checkpoint's marker reaches the image at most this many batches after the
/// one that named it (plus the time it waited behind another).
const CHECKPOINT_FILE_BATCHES_MAX: u64 = 3;

impl Disks {
    /// Empty disks for `replica_count` replicas, their faults drawn from `seed`.
    pub fn new(replica_count: usize, seed: u64) -> Disks {
        Disks {
            disks: vec![Disk::default(); replica_count],
            prng: Prng::new(seed ^ DISK_STREAM),
            kept_pages_lost: 0,
            checkpoint_files: Prng::new(seed ^ CHECKPOINT_FILE_STREAM),
            checkpoints_deferred: 0,
            checkpoints_deferred_lost: 0,
        }
    }

    /// `replica` asked to keep (or forget) fetched pages: written at once (the page
    /// cache), lost only by a crash.
    pub fn keep_pages(&mut self, replica: ReplicaIndex, keep: &KeepPages) {
        let disk = &mut self.disks[replica as usize];
        match keep {
            KeepPages::Add { root, pages } => {
                if disk.kept_root != Some(*root) {
                    disk.kept_root = Some(*root);
                    disk.kept.clear();
                    disk.kept_unsynced = 0;
                }
                disk.kept.extend(
                    pages
                        .iter()
                        .map(|page| (page.digest(), page.bytes().clone())),
                );
                disk.kept_unsynced += pages.len();
            }
            KeepPages::Clear => {
                disk.kept_root = None;
                disk.kept.clear();
                disk.kept_unsynced = 0;
            }
        }
    }

    /// What `replica`'s disk holds, as a restart reads it back: the image, and the kept
    /// pages each checked against its digest.
    pub fn read_back(&self, replica: ReplicaIndex) -> Stored {
        let disk = &self.disks[replica as usize];
        let mut stored = disk.image.clone();
        stored.fetched = FetchedPages::read_back(disk.kept_root, disk.kept.iter().cloned());
        stored
    }

    /// Whether a replica partway through a checkpoint fetch crashes at this step.
    pub fn crash_mid_fetch(&mut self) -> bool {
        self.prng.chance(CRASH_MID_FETCH_PPM)
    }

    /// The faults a crash does to kept pages (module docs).
    fn damage_kept_pages(&mut self, replica: ReplicaIndex) {
        let prng = &mut self.prng;
        let disk = &mut self.disks[replica as usize];
        let unsynced = std::mem::take(&mut disk.kept_unsynced) as u64;
        let mut lost = 0;
        if unsynced > 0 && prng.chance(500_000) {
            let cut = prng.between(1, unsynced) as usize;
            disk.kept.truncate(disk.kept.len() - cut);
            lost += cut as u64;
        }
        if !disk.kept.is_empty() && prng.chance(250_000) {
            // A torn last page: its bytes cut short.
            let (_, bytes) = disk.kept.last_mut().expect("not empty");
            *bytes = bytes.slice(..bytes.len() / 2);
            lost += 1;
        }
        if !disk.kept.is_empty() && prng.chance(50_000) {
            // A garbled page in the middle.
            let at = prng.below(disk.kept.len() as u64) as usize;
            let mut garbled = disk.kept[at].1.to_vec();
            match garbled.first_mut() {
                Some(byte) => *byte ^= 0x5a,
                None => garbled.push(0x5a),
            }
            disk.kept[at].1 = Bytes::from(garbled);
            lost += 1;
        }
        self.kept_pages_lost += lost;
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
        let fail = |inconsistent: Inconsistent| {
            Failure::new("storage", format!("r{replica}: {inconsistent}"))
        };
        // A file written in the background whose marker is due goes in first.
        match disk.checkpoint_writing.take() {
            Some((checkpoint, 0)) => {
                disk.image
                    .apply(StoredWrite::Checkpoint(checkpoint))
                    .map_err(fail)?;
                disk.checkpoint_writing = disk.checkpoint_waiting.take().map(|waiting| {
                    let batches = self.checkpoint_files.below(CHECKPOINT_FILE_BATCHES_MAX + 1);
                    (waiting, batches)
                });
            }
            Some((checkpoint, batches)) => {
                disk.checkpoint_writing = Some((checkpoint, batches - 1));
            }
            None => {}
        }
        let mut staged = std::mem::take(&mut disk.staged);
        if staged
            .iter()
            .any(|write| matches!(write, StoredWrite::CheckpointDropped))
        {
            // It became a witness: no file in hand is wanted any more, as the data
            // directory abandons its writer (`DataDir::forget_checkpoint_files`).
            disk.checkpoint_writing = None;
            disk.checkpoint_waiting = None;
        }
        let pending = disk
            .checkpoint_waiting
            .as_ref()
            .or(disk
                .checkpoint_writing
                .as_ref()
                .map(|(checkpoint, _)| checkpoint))
            .map(|checkpoint| checkpoint.op);
        let newest = StoredWrite::newest_checkpoint(&staged)
            .filter(|checkpoint| checkpoint.op > disk.image.checkpoint_op())
            .cloned();
        if let Some(newest) = newest {
            if disk.image.covers(&staged, newest.op) {
                staged.retain(|write| !matches!(write, StoredWrite::Checkpoint(_)));
                if pending < Some(newest.op) {
                    self.checkpoints_deferred += 1;
                    if disk.checkpoint_writing.is_some() {
                        disk.checkpoint_waiting = Some(newest);
                    } else {
                        let batches = self.checkpoint_files.below(CHECKPOINT_FILE_BATCHES_MAX + 1);
                        disk.checkpoint_writing = Some((newest, batches));
                    }
                }
            } else {
                // Installed: written before its batch, superseding what was in hand.
                disk.checkpoint_writing = None;
                disk.checkpoint_waiting = None;
            }
        }
        for write in staged {
            disk.image.apply(write).map_err(fail)?;
        }
        if disk.image.state.joined && !disk.image.state.recovering {
            // Recovered (paper 4.3): what it holds now, it holds as any replica does.
            disk.faulted = false;
        }
        Ok(())
    }

    /// A crash: the batch in progress is lost, and kept pages may be (module docs).
    pub fn on_crash(&mut self, replica: ReplicaIndex) {
        let disk = &mut self.disks[replica as usize];
        disk.staged.clear();
        let lost = disk.checkpoint_writing.take().is_some() as u64
            + disk.checkpoint_waiting.take().is_some() as u64;
        self.checkpoints_deferred_lost += lost;
        self.damage_kept_pages(replica);
    }

    /// What `replica`'s disk holds: what a restart reads back.
    pub fn image(&self, replica: ReplicaIndex) -> &Stored {
        &self.disks[replica as usize].image
    }

    /// A corrupted sector in `replica`'s journal at `op`, found when it restarts: the
    /// store keeps what precedes it and reports the damage. The image stays damaged until
    /// the replica completes a batch.
    pub fn damage_at(&mut self, replica: ReplicaIndex, op: Op) {
        self.disks[replica as usize].faulted = true;
        let image = &mut self.disks[replica as usize].image;
        let keep = op.saturating_sub(image.log_base + 1) as usize;
        image.entries.truncate(keep);
        image.damage = Some(format!("a corrupt sector at op {op}"));
    }

    /// The corrupted sector held `replica`'s state record: it restarts not knowing its
    /// view.
    pub fn lose_state(&mut self, replica: ReplicaIndex) {
        self.disks[replica as usize].faulted = true;
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
        self.disks[replica as usize] = Disk {
            faulted: true,
            ..Disk::default()
        };
    }

    /// The ops `replica`'s disk holds a copy of, as inclusive ranges (empty: `(1, 0)`):
    /// those its checkpoint holds, its log's entries, and the entries it keeps aside as
    /// a former witness.
    pub fn held(&self, replica: ReplicaIndex) -> Held {
        let image = &self.disks[replica as usize].image;
        let kept = image
            .former_witness_log
            .as_ref()
            .map_or((1, 0), |kept| (kept.base + 1, kept.end()));
        [
            (1, image.checkpoint_op()),
            (image.log_base + 1, image.op()),
            kept,
        ]
    }

    /// What every disk holds, for a failure's details: `r0 [1..=30], r1 [] (faulted)`.
    fn describe_holdings(&self) -> String {
        let disks = (0..self.disks.len()).map(|index| {
            let ranges: Vec<String> = (self.held(index as ReplicaIndex).iter())
                .filter(|(first, last)| first <= last)
                .map(|(first, last)| format!("{first}..={last}"))
                .collect();
            let faulted = if self.disks[index].faulted {
                " (faulted)"
            } else {
                ""
            };
            format!("r{index} [{}]{faulted}", ranges.join(", "))
        });
        disks.collect::<Vec<_>>().join(", ")
    }

    /// The copies check: a correct replica's disk never gives up the copy of a committed
    /// op (one of `1..=committed`) while fewer than `copies_min` other disks hold one.
    /// Every op committed with f+1 durable copies (a PrepareOk waits for its write), and
    /// a replica gives one up only when its checkpoint holds the op instead, or when
    /// enough others hold it (a witness trims what f+1 actives executed, paper 6.1): a
    /// copy dropped below that bound is one more crash from losing a committed op. Disks
    /// a fault took data from count as holding nothing, and lower the bound by one each
    /// (the fault, not the replica, gave those copies up). `before` is what `replica`'s
    /// disk held before its last batch.
    pub fn check_copies(
        &self,
        replica: ReplicaIndex,
        before: Held,
        committed: Op,
        copies_min: usize,
    ) -> Result<(), Failure> {
        let faulted = self.disks.iter().filter(|disk| disk.faulted).count();
        let Some(copies_min) = copies_min.checked_sub(faulted).filter(|&min| min > 0) else {
            return Ok(());
        };
        let after = self.held(replica);
        let given_up = given_up(before, &after, committed);
        if given_up.is_empty() {
            return Ok(()); // Almost every batch: nothing to count.
        }
        // What each disk holds, once per batch (a disk a fault took data from: nothing).
        let holdings: Vec<Option<Held>> = (0..self.disks.len())
            .map(|index| (!self.disks[index].faulted).then(|| self.held(index as ReplicaIndex)))
            .collect();
        for (first, last) in given_up {
            for op in first..=last {
                let copies = (holdings.iter().flatten())
                    .filter(|held| holds(held, op))
                    .count();
                if copies < copies_min {
                    return Err(Failure::new(
                        "copies",
                        format!(
                            "r{replica} gave up its copy of committed op {op}: {copies} \
                             disks hold one, {copies_min} must; the disks hold {}",
                            self.describe_holdings()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: (Op, Op) = (1, 0);

    #[test]
    fn given_up_is_what_before_held_after_does_not_up_to_the_commit() {
        // A log reset to a checkpoint below it keeps what the checkpoint holds.
        let before = [EMPTY, (1, 40), EMPTY];
        let after = [(1, 30), EMPTY, EMPTY];
        assert_eq!(given_up(before, &after, 100), [(31, 40)]);
        // Only committed ops count.
        assert_eq!(given_up(before, &after, 35), [(31, 35)]);
        assert_eq!(given_up(before, &after, 30), []);
        // A witness's trim gives up the ops below its new base; a log reset to op 0
        // beside kept entries gives up none of them.
        let trimmed = [EMPTY, (21, 40), EMPTY];
        assert_eq!(given_up(before, &trimmed, 100), [(1, 20)]);
        let kept = [EMPTY, (1, 5), (6, 40)];
        assert_eq!(given_up(before, &kept, 100), []);
        // A hole in the middle, and ranges that overlap.
        let holed = [(1, 10), (31, 40), (5, 12)];
        assert_eq!(given_up(before, &holed, 100), [(13, 30)]);
        assert_eq!(given_up([EMPTY; 3], &holed, 100), []);
    }

    fn disks_holding(logs: &[(Op, Op)]) -> Disks {
        let mut disks = Disks::new(logs.len(), 1);
        for (index, &(first, last)) in logs.iter().enumerate() {
            let image = &mut disks.disks[index].image;
            image
                .apply(StoredWrite::LogStart {
                    base: first - 1,
                    timestamp: 0,
                })
                .unwrap();
            let entries = (first..=last)
                .map(|op| crate::protocol::Entry {
                    client: 1,
                    session: 1,
                    request: op as u32,
                    timestamp: op,
                    operation: crate::protocol::Operation::Apply,
                    body: Bytes::new(),
                })
                .collect();
            image
                .apply(StoredWrite::LogAppend {
                    from: first,
                    entries,
                })
                .unwrap();
        }
        disks
    }

    #[test]
    fn a_copy_may_go_only_while_enough_others_hold_one() {
        // r0 gave up ops 1..=20 (it held 1..=40): r1 and r2 hold them.
        let disks = disks_holding(&[(21, 40), (1, 40), (1, 40)]);
        let before = [EMPTY, (1, 40), EMPTY];
        disks.check_copies(0, before, 40, 2).unwrap();
        // With one of them alone holding 11..=20, it may not.
        let disks = disks_holding(&[(21, 40), (1, 40), (1, 10)]);
        let failure = disks.check_copies(0, before, 40, 2).unwrap_err();
        assert!(failure.to_string().contains("op 11"), "{failure}");
        // Unless those ops are not committed yet.
        disks.check_copies(0, before, 10, 2).unwrap();
        // A disk a fault damaged lowers the bound: the fault gave its copies up.
        let mut disks = disks_holding(&[(21, 40), (1, 40), (1, 10)]);
        disks.damage_at(2, 5);
        disks.check_copies(0, before, 40, 2).unwrap();
    }
}
