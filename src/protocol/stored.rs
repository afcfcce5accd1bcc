//! What a replica's storage holds, in the core's terms: the image its completed writes
//! leave behind, which a restart reads back (`Start::Restart`).
//!
//! Drivers with durable storage (the runtime's write-ahead log, the simulator's disks)
//! turn each [`Write`] into a [`StoredWrite`] that owns its payload
//! ([`StoredWrite::capture`], called before the replica's next input), make it durable,
//! and on start fold what they read back into a [`Stored`] with [`Stored::apply`]. Both
//! drivers share this fold, so the simulator checks the very rules a restart from disk
//! relies on.
//!
//! A store must make writes durable in order, and whole inputs at a time: the image a
//! crash leaves is the replica as it stood at the end of some input, minus the writes of
//! later inputs (ARCHITECTURE.md, "Restarting from disk"). Every message the replica
//! released waited for the writes of its whole input, so no crash can take back what a
//! message vouched for.

use super::configuration::Configuration;
use super::effects::{DurableState, KeepPages, Write};
use super::message::{Checkpoint, Entry, Op};
use super::replica::Replica;
use crate::service::snapshot::Digest;
use crate::service::{Page, StateMachine};

/// A write with its payload, as a store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredWrite {
    /// A checkpoint taken or installed.
    Checkpoint(Checkpoint),
    /// The log restarted empty after `base` (a checkpoint at `base` was installed).
    LogReset {
        /// The op before the first entry the log may hold now.
        base: Op,
    },
    /// A witness's log holds no entry at or below `base` (trimmed, or skipped: see
    /// [`Write::LogStart`]); the entries above it stay.
    LogStart {
        /// The op before the first entry the log may hold now.
        base: Op,
        /// The timestamp of the op at `base`.
        timestamp: u64,
    },
    /// The checkpoint was dropped: the replica became a witness ([`Write::CheckpointDropped`]).
    CheckpointDropped,
    /// Every entry after `after` was removed.
    LogTruncate {
        /// The last op kept.
        after: Op,
    },
    /// `entries` were appended, the first at op `from`.
    LogAppend {
        /// The op of `entries[0]`.
        from: Op,
        /// The entries, in op order.
        entries: Vec<Entry>,
    },
    /// The replica moved to another epoch (paper 7).
    Configuration {
        /// The epoch's members.
        configuration: Configuration,
        /// The op the epoch started after.
        epoch_start: Op,
    },
    /// The replica's place among views changed.
    State(DurableState),
    /// The committed entries a former witness keeps aside ([`Write::FormerWitnessLog`]),
    /// or none any more.
    FormerWitnessLog(Option<FormerWitnessLog>),
    /// The replica heard that f+1 actives executed every op up to this one (see
    /// [`Write::ActivesCommit`]): knowledge of the store's epoch; the latest record
    /// wins (a new epoch starts it again below the old one's).
    ActivesCommit(Op),
    /// The replica knew that every op up to this one had committed. Not a core write:
    /// drivers record it with each batch of writes (knowledge never goes stale: a
    /// committed op stays committed), so that a restart can execute its log at once.
    Commit(Op),
}

impl StoredWrite {
    /// The newest checkpoint among `writes` (a batch: only the latest one matters).
    pub fn newest_checkpoint(writes: &[StoredWrite]) -> Option<&Checkpoint> {
        writes.iter().rev().find_map(|write| match write {
            StoredWrite::Checkpoint(checkpoint) => Some(checkpoint),
            _ => None,
        })
    }

    /// The payload of `write`, read from `replica` before its next input (a `LogAppend`'s
    /// entries and a `Checkpoint` live in the replica until then).
    ///
    /// Entries of a `LogAppend` that a later write of the same input removed again are not
    /// in the replica any more; the append then holds those still there (the later
    /// `LogTruncate` or `LogReset` removes them from the image anyway).
    pub fn capture<S: StateMachine>(replica: &Replica<S>, write: Write) -> StoredWrite {
        match write {
            Write::Checkpoint { op } => {
                // The checkpoint at `op`, or a later one if a later input of the same
                // batch took it (a batch is atomic: only the latest matters).
                let checkpoint = replica
                    .checkpoint()
                    .filter(|checkpoint| checkpoint.op >= op)
                    .expect("a checkpoint write names a checkpoint the replica holds");
                StoredWrite::Checkpoint(checkpoint.clone())
            }
            Write::LogReset { base } => StoredWrite::LogReset { base },
            Write::LogStart { base, timestamp } => StoredWrite::LogStart { base, timestamp },
            Write::CheckpointDropped => StoredWrite::CheckpointDropped,
            Write::LogTruncate { after } => StoredWrite::LogTruncate { after },
            Write::LogAppend { from, to } => StoredWrite::LogAppend {
                from,
                entries: (from..=to)
                    .map_while(|op| replica.entry(op).cloned())
                    .collect(),
            },
            Write::Configuration { epoch } => {
                let configuration = replica.configuration().clone();
                assert!(configuration.epoch() >= epoch, "epochs never go back");
                StoredWrite::Configuration {
                    configuration,
                    epoch_start: replica.epoch_start(),
                }
            }
            Write::State(state) => StoredWrite::State(state),
            Write::ActivesCommit(op) => StoredWrite::ActivesCommit(op),
            Write::FormerWitnessLog => {
                StoredWrite::FormerWitnessLog(replica.former_witness_log().cloned())
            }
        }
    }
}

/// The committed entries a witness held when it became active in a new epoch: ops
/// `base + 1 ..= base + entries.len()`, the last one the epoch's start at most.
///
/// Its acknowledgements counted towards those ops in the old epoch, so its copies may be
/// one of only f+1 (the RECONFIGURATION's among them). Dropping them as it starts over
/// from op 0 would leave the other copies alone, and one crash could lose committed ops
/// (`a_witness_that_becomes_active_keeps_the_copies_it_acknowledged` in
/// `tests/sim_witnesses.rs`). So the replica keeps them, in memory and in its store
/// ([`Write::FormerWitnessLog`]), and once the state it fetched reaches their base (a
/// checkpoint at or above it, or entries up to it) takes them into its log and executes
/// them itself: committed entries, the same at every replica that holds them (paper
/// 4.1's agreement), over a service whose state is that of the op before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormerWitnessLog {
    /// The op before `entries[0]`.
    pub base: Op,
    /// The entries, in op order.
    pub entries: Vec<Entry>,
}

impl FormerWitnessLog {
    /// The op of the last entry kept.
    pub fn end(&self) -> Op {
        self.base + self.entries.len() as Op
    }
}

/// A sequence of writes that no correct replica issues: the store is corrupt (or was
/// written by something else).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("inconsistent storage: {0}")]
pub struct Inconsistent(pub String);

/// What a replica's storage holds: its durable state, latest checkpoint and log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The replica's view, last normal view, epoch, and whether it was recovering.
    pub state: DurableState,
    /// The configuration of the latest epoch the replica moved to, and the op that epoch
    /// started after (`None`: it never left its first configuration).
    pub configuration: Option<(Configuration, Op)>,
    /// The latest checkpoint written.
    pub checkpoint: Option<Checkpoint>,
    /// The op before `entries[0]`.
    pub log_base: Op,
    /// The timestamp of the op at `log_base`, as a witness's `LogStart` recorded it (0
    /// otherwise: an active's log starts at its checkpoint, which has its own).
    pub log_base_timestamp: u64,
    /// The log's entries: op `log_base + 1 + i` is `entries[i]`.
    pub entries: Vec<Entry>,
    /// The highest commit number recorded (see [`StoredWrite::Commit`]).
    pub commit: Op,
    /// The highest actives' commit recorded (see [`StoredWrite::ActivesCommit`]); `None`
    /// when none was: a cluster without witnesses (one with them writes it at its
    /// replica's first input). With it the log keeps its entries above it, checkpoint
    /// or not ([`Stored::trim_to_checkpoint`]).
    pub actives_commit: Option<Op>,
    /// Set when the store found damage it could not explain as a write cut short by a
    /// crash (a corrupt entry with intact data after it, an unreadable state record): the
    /// image then holds only what was verified before the damage, and the replica may
    /// have acknowledged more than it holds. It restarts through the recovery protocol
    /// (paper 4.3) and never counts as empty.
    pub damage: Option<String>,
    /// The op of the checkpoint a `CheckpointDropped` took out of this image (0: none):
    /// the image's log then starts at or below it, possibly above the witness's own log,
    /// whose `LogStart`s below it are already true here. Not written by a compaction: a
    /// restart's log starts where the image's does.
    pub dropped_checkpoint_at: Op,
    /// The committed entries a former witness keeps aside until its log reaches them
    /// ([`StoredWrite::FormerWitnessLog`]).
    pub former_witness_log: Option<FormerWitnessLog>,
    /// Pages a checkpoint fetch verified and the store kept ([`KeepPages`]): a cache
    /// outside the ordering rule, which vouches for nothing (it never makes a store hold
    /// data), read back so that a fetch cut short by a crash resumes.
    pub fetched: FetchedPages,
}

/// The pages of a checkpoint fetch a store kept (see [`KeepPages`]), as read back: every
/// page's digest computed again from its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchedPages {
    /// The root of the checkpoint they were fetched for (`None`: none kept).
    pub root: Option<Digest>,
    /// The pages (each the hash of its bytes; a page is used only if a verified manifest
    /// names its digest).
    pub pages: Vec<Page>,
    /// Pages found on reading back whose bytes did not hash to the digest stored with
    /// them: dropped.
    pub dropped: u64,
}

impl FetchedPages {
    /// Pages as a store read them back, each `(digest, bytes)` as written for `root`:
    /// a page whose bytes do not hash to its digest is dropped and counted (a torn or
    /// damaged write; the store checks only its own framing).
    pub fn read_back(
        root: Option<Digest>,
        records: impl IntoIterator<Item = (Digest, bytes::Bytes)>,
    ) -> FetchedPages {
        let mut fetched = FetchedPages {
            root,
            ..FetchedPages::default()
        };
        for (digest, bytes) in records {
            match Page::verified(bytes, digest) {
                Ok(page) => fetched.pages.push(page),
                Err(_) => fetched.dropped += 1,
            }
        }
        fetched
    }

    /// Folds one [`KeepPages`] in, as a store does: pages for another root replace the
    /// ones kept.
    pub fn keep(&mut self, keep: &KeepPages) {
        match keep {
            KeepPages::Add { root, pages } => {
                if self.root != Some(*root) {
                    self.root = Some(*root);
                    self.pages.clear();
                }
                self.pages.extend(pages.iter().cloned());
            }
            KeepPages::Clear => *self = FetchedPages::default(),
        }
    }
}

impl Stored {
    /// Takes the checkpoint out of the image, as `StoredWrite::CheckpointDropped` does:
    /// the replica became a witness (paper 6.1); its log stays, and from now on its
    /// `LogStart`s trim it. A restarted witness whose store still holds a checkpoint
    /// applies this to what it read back first, so that its log agrees with the store's.
    pub fn drop_checkpoint(&mut self) {
        let Some(checkpoint) = self.checkpoint.take() else {
            return;
        };
        self.dropped_checkpoint_at = checkpoint.op;
        if self.op() < checkpoint.op {
            // The log ended below the checkpoint (one installed, or entries trimmed
            // before they were written): the replica's log starts after the
            // checkpoint's op, and so does a witness's from now on.
            self.entries.clear();
            self.log_base = checkpoint.op;
        }
        if self.log_base == checkpoint.op {
            self.log_base_timestamp = checkpoint.timestamp;
        }
    }

    /// The op of the last entry (or the base).
    pub fn op(&self) -> Op {
        self.log_base + self.entries.len() as Op
    }

    /// The checkpoint's op, 0 without one.
    pub fn checkpoint_op(&self) -> Op {
        self.checkpoint
            .as_ref()
            .map_or(0, |checkpoint| checkpoint.op)
    }

    /// Whether the replica that wrote this store may have acknowledged anything: it
    /// joined the cluster once, or the store is damaged (then nothing it says about itself
    /// can be trusted). Such a replica never takes part in starting an empty cluster.
    pub fn holds_data(&self) -> bool {
        self.damage.is_some()
            || self.state.joined
            || self.checkpoint.is_some()
            || self.op() > 0
            || self.commit > 0
    }

    /// Folds one write into the image. Fails, changing nothing, on a write no correct
    /// replica issues after the ones already applied.
    pub fn apply(&mut self, write: StoredWrite) -> Result<(), Inconsistent> {
        match write {
            StoredWrite::Checkpoint(checkpoint) => {
                // The same checkpoint twice is harmless: a store that captures a batch's
                // payloads at its end sees only the latest checkpoint.
                if checkpoint.op < self.checkpoint_op() {
                    return Err(Inconsistent(format!(
                        "checkpoint {} after checkpoint {}",
                        checkpoint.op,
                        self.checkpoint_op()
                    )));
                }
                self.checkpoint = Some(checkpoint);
            }
            StoredWrite::LogReset { base } => {
                // Reset to the checkpoint installed (or an older one, when a later
                // checkpoint of the same batch was captured first).
                if base > self.checkpoint_op() {
                    return Err(Inconsistent(format!(
                        "log reset to {base} with checkpoint {}",
                        self.checkpoint_op()
                    )));
                }
                self.log_base = base;
                self.log_base_timestamp = 0;
                self.entries.clear();
            }
            StoredWrite::LogStart { base, timestamp } => {
                // Only a witness writes it, and a witness keeps no checkpoint (paper
                // 6.1); its log's base only moves forward (it trims and skips committed
                // ops only, and its commit number never goes back).
                if let Some(checkpoint) = &self.checkpoint {
                    return Err(Inconsistent(format!(
                        "a witness's log start after {base} in a store holding checkpoint {}",
                        checkpoint.op
                    )));
                }
                if base < self.log_base {
                    if self.dropped_checkpoint_at >= self.log_base {
                        // The store of an active that became a witness trimmed its log
                        // to its checkpoint, past where the replica's own log starts: it
                        // already holds no entry at or below `base`.
                        return Ok(());
                    }
                    return Err(Inconsistent(format!(
                        "log start after {base} below the log base {}",
                        self.log_base
                    )));
                }
                let drop = ((base - self.log_base) as usize).min(self.entries.len());
                self.entries.drain(..drop);
                self.log_base = base;
                self.log_base_timestamp = timestamp;
            }
            StoredWrite::LogTruncate { after } => {
                // A replica truncates only above its log's base (and its commit number,
                // so above its checkpoint too, though with payloads captured at the end
                // of a batch the checkpoint written may already be a later one).
                if after < self.log_base {
                    return Err(Inconsistent(format!(
                        "truncate after {after} below the log base {}",
                        self.log_base
                    )));
                }
                self.entries.truncate((after - self.log_base) as usize);
            }
            StoredWrite::LogAppend { from, entries } => {
                if from == 0 {
                    return Err(Inconsistent("append at op 0".into()));
                }
                if from > self.op() + 1 {
                    // Entries trimmed before they were written: the checkpoint written
                    // before them covers the gap.
                    if from - 1 > self.checkpoint_op() {
                        return Err(Inconsistent(format!(
                            "append at {from} to a log ending at {} (checkpoint {})",
                            self.op(),
                            self.checkpoint_op()
                        )));
                    }
                    self.log_base = from - 1;
                    self.log_base_timestamp = 0;
                    self.entries.clear();
                } else if from <= self.log_base {
                    return Err(Inconsistent(format!(
                        "append at {from} below the log base {}",
                        self.log_base
                    )));
                } else {
                    // Normally `from == op + 1`; an append over entries a later write of
                    // the same input removed replaces them.
                    self.entries.truncate((from - 1 - self.log_base) as usize);
                }
                self.entries.extend(entries);
            }
            StoredWrite::Configuration {
                configuration,
                epoch_start,
            } => {
                let epoch = self.configuration.as_ref().map_or(0, |(c, _)| c.epoch());
                if configuration.epoch() < epoch {
                    return Err(Inconsistent(format!(
                        "epoch {} after epoch {epoch}",
                        configuration.epoch()
                    )));
                }
                self.configuration = Some((configuration, epoch_start));
            }
            StoredWrite::State(state) => {
                // Only a replica that never joined (it promised no view) may restart at
                // a lower view: as a new replica; views start again in a new epoch.
                if state.epoch < self.state.epoch {
                    return Err(Inconsistent(format!(
                        "epoch {} after epoch {}",
                        state.epoch, self.state.epoch
                    )));
                }
                if state.epoch == self.state.epoch
                    && state.view < self.state.view
                    && self.state.joined
                {
                    return Err(Inconsistent(format!(
                        "view {} after view {}",
                        state.view, self.state.view
                    )));
                }
                self.state = state;
            }
            StoredWrite::CheckpointDropped => {
                self.drop_checkpoint();
            }
            StoredWrite::FormerWitnessLog(kept) => {
                if kept
                    .as_ref()
                    .is_some_and(|kept| kept.base.checked_add(kept.entries.len() as Op).is_none())
                {
                    return Err(Inconsistent("kept entries past the last op".into()));
                }
                self.former_witness_log = kept;
            }
            StoredWrite::Commit(commit) => self.commit = self.commit.max(commit),
            StoredWrite::ActivesCommit(op) => self.actives_commit = Some(op),
        }
        Ok(())
    }

    /// Whether this image, after `writes`, holds every entry from its checkpoint (or the
    /// first op) through `op`: then a checkpoint at `op` need not be durable before
    /// `writes` are, since a restart rebuilds its state from the older checkpoint and the
    /// log (a store may write such a checkpoint in the background and record it later:
    /// `storage::data_dir`, "Checkpoint files in the background"). Not so after a
    /// `LogReset` (the entries below an installed checkpoint were never here), nor for an
    /// append above a gap (entries trimmed before they were written).
    pub fn covers(&self, writes: &[StoredWrite], op: Op) -> bool {
        let base = self.log_base;
        let mut last = self.op();
        for write in writes {
            match write {
                StoredWrite::LogReset { .. }
                | StoredWrite::LogStart { .. }
                | StoredWrite::CheckpointDropped => return false,
                StoredWrite::LogTruncate { after } => {
                    if *after < base {
                        return false;
                    }
                    last = last.min(*after);
                }
                StoredWrite::LogAppend { from, entries } => {
                    if *from <= base || *from > last + 1 {
                        return false;
                    }
                    last = from - 1 + entries.len() as Op;
                }
                _ => {}
            }
        }
        last >= op
    }

    /// Drops the entries a restart does not need: those at or below the checkpoint (the
    /// checkpoint holds their effect), but, with witnesses, none above the actives' commit
    /// (an active keeps them for a witness that needs them back: ARCHITECTURE.md,
    /// "Witnesses"). A store calls it when it compacts.
    pub fn trim_to_checkpoint(&mut self) {
        let checkpoint_op = self.actives_commit.map_or(self.checkpoint_op(), |heard| {
            heard.min(self.checkpoint_op())
        });
        if self.log_base >= checkpoint_op {
            return;
        }
        let drop = ((checkpoint_op - self.log_base) as usize).min(self.entries.len());
        self.entries.drain(..drop);
        self.log_base = checkpoint_op;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::Operation;
    use crate::service::Snapshot;
    use bytes::Bytes;

    fn entry(timestamp: u64) -> Entry {
        Entry {
            client: 1,
            session: 1,
            request: 1,
            timestamp,
            operation: Operation::Apply,
            body: Bytes::from_static(b"x"),
        }
    }

    fn append(from: Op, count: u64) -> StoredWrite {
        StoredWrite::LogAppend {
            from,
            entries: (from..from + count).map(entry).collect(),
        }
    }

    fn checkpoint(op: Op) -> StoredWrite {
        StoredWrite::Checkpoint(Checkpoint {
            op,
            timestamp: op,
            service: Snapshot::empty(),
            clients: Snapshot::empty(),
        })
    }

    fn fold(writes: Vec<StoredWrite>) -> Result<Stored, Inconsistent> {
        let mut stored = Stored::default();
        for write in writes {
            stored.apply(write)?;
        }
        Ok(stored)
    }

    /// A former witness's kept entries are held beside the log, whatever the log does,
    /// until a write says none are kept; entries that would end past the last op there
    /// is are a store no correct replica wrote.
    #[test]
    fn kept_entries_stay_beside_the_log_until_cleared() {
        let StoredWrite::LogAppend { entries, .. } = append(11, 3) else {
            unreachable!()
        };
        let kept = FormerWitnessLog { base: 10, entries };
        let mut stored = fold(vec![
            StoredWrite::LogStart {
                base: 10,
                timestamp: 10,
            },
            append(11, 3),
            StoredWrite::FormerWitnessLog(Some(kept.clone())),
            StoredWrite::LogReset { base: 0 },
            append(1, 2),
        ])
        .unwrap();
        assert_eq!(stored.former_witness_log, Some(kept.clone()));
        assert_eq!((stored.log_base, stored.op()), (0, 2));
        let past_the_end = FormerWitnessLog {
            base: Op::MAX - 1,
            ..kept
        };
        let write = StoredWrite::FormerWitnessLog(Some(past_the_end));
        assert!(stored.apply(write).is_err());
        stored.apply(StoredWrite::FormerWitnessLog(None)).unwrap();
        assert_eq!(stored.former_witness_log, None);
    }

    #[test]
    fn appends_truncations_and_resets_leave_the_log_a_replica_held() {
        let stored = fold(vec![
            append(1, 5),
            StoredWrite::LogTruncate { after: 3 },
            append(4, 2),
            StoredWrite::Commit(4),
            StoredWrite::Commit(2), // Knowledge never goes back.
        ])
        .unwrap();
        assert_eq!(stored.op(), 5);
        assert_eq!(stored.commit, 4);
        let timestamps: Vec<u64> = stored.entries.iter().map(|e| e.timestamp).collect();
        assert_eq!(timestamps, [1, 2, 3, 4, 5]);

        let stored = fold(vec![
            append(1, 5),
            checkpoint(9),
            StoredWrite::LogReset { base: 9 },
            append(10, 1),
        ])
        .unwrap();
        assert_eq!(
            (stored.log_base, stored.op(), stored.checkpoint_op()),
            (9, 10, 9)
        );
    }

    #[test]
    fn entries_trimmed_before_they_were_written_are_covered_by_the_checkpoint() {
        let mut stored = fold(vec![append(1, 3), checkpoint(6), append(5, 3)]).unwrap();
        assert_eq!((stored.log_base, stored.op()), (4, 7));
        stored.trim_to_checkpoint();
        assert_eq!((stored.log_base, stored.entries.len()), (6, 1));
        // A gap the checkpoint does not cover is not a log any replica wrote.
        assert!(fold(vec![append(1, 3), append(6, 1)]).is_err());
    }

    #[test]
    fn sequences_no_replica_writes_are_refused() {
        let view = |view| {
            StoredWrite::State(DurableState {
                view,
                last_normal_view: view,
                ..DurableState::default()
            })
        };
        let joined = |view| {
            StoredWrite::State(DurableState {
                view,
                last_normal_view: view,
                joined: true,
                ..DurableState::default()
            })
        };
        assert!(
            fold(vec![joined(3), joined(2)]).is_err(),
            "a view went back"
        );
        assert!(
            fold(vec![view(3), view(2)]).is_ok(),
            "never joined: a new replica"
        );
        assert!(fold(vec![checkpoint(9), checkpoint(5)]).is_err());
        assert!(fold(vec![StoredWrite::LogReset { base: 4 }]).is_err());
        assert!(fold(vec![append(0, 1)]).is_err());
        let below_base = vec![
            checkpoint(9),
            StoredWrite::LogReset { base: 9 },
            StoredWrite::LogTruncate { after: 3 },
        ];
        assert!(fold(below_base).is_err());
    }

    fn log_start(base: Op) -> StoredWrite {
        StoredWrite::LogStart {
            base,
            timestamp: base,
        }
    }

    #[test]
    fn a_witness_log_starts_after_its_base_without_a_checkpoint() {
        // Trimmed inside the log: the entries above the base stay.
        let stored = fold(vec![append(1, 10), log_start(4), StoredWrite::Commit(8)]).unwrap();
        assert_eq!((stored.log_base, stored.op()), (4, 10));
        assert_eq!(stored.log_base_timestamp, 4);
        assert_eq!(stored.entries[0].timestamp, 5);
        // A skip past the end (truncated first, as a witness writes it): an empty log
        // after the base, which later appends follow.
        let stored = fold(vec![
            append(1, 10),
            StoredWrite::LogTruncate { after: 20 },
            log_start(20),
            append(21, 2),
        ])
        .unwrap();
        assert_eq!(
            (stored.log_base, stored.op(), stored.checkpoint_op()),
            (20, 22, 0)
        );
        // Without a log start the gap is refused, as before.
        assert!(fold(vec![append(1, 10), append(21, 2)]).is_err());
        // The same base again is harmless; a base below the log's is not.
        assert!(fold(vec![log_start(5), log_start(5)]).is_ok());
        assert!(fold(vec![log_start(5), log_start(4)]).is_err());
        assert!(fold(vec![log_start(5), StoredWrite::LogTruncate { after: 4 }]).is_err());
        assert!(fold(vec![log_start(5), append(5, 1)]).is_err());
        // Only a witness writes it, and a witness has no checkpoint.
        assert!(fold(vec![
            checkpoint(9),
            StoredWrite::LogReset { base: 9 },
            log_start(12)
        ])
        .is_err());
        // The latest actives' commit wins: a new epoch starts it again lower.
        let stored = fold(vec![
            StoredWrite::ActivesCommit(7),
            StoredWrite::ActivesCommit(3),
        ])
        .unwrap();
        assert_eq!(stored.actives_commit, Some(3));
        // A store with a log start covers no deferred checkpoint.
        let stored = fold(vec![append(1, 3)]).unwrap();
        assert!(stored.covers(&[append(4, 3)], 6));
        assert!(!stored.covers(&[log_start(2), append(4, 3)], 6));
    }

    #[test]
    fn an_active_that_becomes_a_witness_drops_its_checkpoint_and_keeps_its_log() {
        // An active's store: its checkpoint at 16, its log trimmed to it (entries 17-20).
        let mut stored = fold(vec![append(1, 20), checkpoint(16)]).unwrap();
        stored.trim_to_checkpoint();
        assert_eq!((stored.log_base, stored.op()), (16, 20));
        stored.apply(StoredWrite::CheckpointDropped).unwrap();
        assert_eq!(stored.checkpoint, None);
        assert_eq!((stored.log_base, stored.op()), (16, 20), "the log stays");
        assert_eq!(stored.log_base_timestamp, 16, "the checkpoint's timestamp");
        // The witness's own log started lower (it kept a tail): a log start below the
        // store's base is already true here, up to the dropped checkpoint.
        stored.apply(log_start(12)).unwrap();
        assert_eq!((stored.log_base, stored.op()), (16, 20));
        stored.apply(log_start(18)).unwrap();
        assert_eq!((stored.log_base, stored.op()), (18, 20));
        // Past the dropped checkpoint the base only moves forward again.
        assert!(stored.clone().apply(log_start(17)).is_err());
        // A later checkpoint (active again) comes after a drop, never before one.
        let stored = fold(vec![
            append(1, 20),
            checkpoint(16),
            StoredWrite::CheckpointDropped,
            checkpoint(16),
        ])
        .unwrap();
        assert_eq!(stored.checkpoint_op(), 16);
        // A batch that drops the checkpoint covers no deferred one.
        let stored = fold(vec![append(1, 3)]).unwrap();
        assert!(!stored.covers(&[StoredWrite::CheckpointDropped, append(4, 3)], 6));
        // A log that ended below the checkpoint (one installed) starts after it.
        let stored = fold(vec![
            append(1, 5),
            checkpoint(16),
            StoredWrite::LogReset { base: 16 },
            StoredWrite::CheckpointDropped,
            append(17, 2),
        ])
        .unwrap();
        assert_eq!(
            (stored.log_base, stored.op(), stored.log_base_timestamp),
            (16, 18, 16)
        );
        let stored = fold(vec![
            append(1, 5),
            checkpoint(16),
            StoredWrite::CheckpointDropped,
        ]);
        assert_eq!(stored.map(|s| (s.log_base, s.op())), Ok((16, 16)));
        // Without a checkpoint it changes nothing.
        let stored = fold(vec![append(1, 3), StoredWrite::CheckpointDropped]).unwrap();
        assert_eq!(
            (stored.log_base, stored.op(), stored.dropped_checkpoint_at),
            (0, 3, 0)
        );
    }

    #[test]
    fn with_witnesses_a_store_keeps_the_entries_above_the_actives_commit() {
        let mut stored = fold(vec![
            StoredWrite::ActivesCommit(0),
            append(1, 20),
            checkpoint(16),
            StoredWrite::ActivesCommit(10),
        ])
        .unwrap();
        stored.trim_to_checkpoint();
        assert_eq!((stored.log_base, stored.op()), (10, 20), "kept above 10");
        stored.apply(StoredWrite::ActivesCommit(30)).unwrap();
        stored.trim_to_checkpoint();
        assert_eq!((stored.log_base, stored.op()), (16, 20), "the checkpoint's");
        // Without witnesses (no actives' commit written) at the checkpoint, as before.
        let mut stored = fold(vec![append(1, 20), checkpoint(16)]).unwrap();
        stored.trim_to_checkpoint();
        assert_eq!(stored.log_base, 16);
    }

    #[test]
    fn holding_data_is_having_joined_or_held_anything() {
        assert!(!Stored::default().holds_data());
        let recovering = Stored {
            state: DurableState {
                recovering: true,
                ..DurableState::default()
            },
            ..Stored::default()
        };
        assert!(!recovering.holds_data(), "a new replica that never joined");
        let joined = Stored {
            state: DurableState {
                joined: true,
                ..DurableState::default()
            },
            ..Stored::default()
        };
        assert!(joined.holds_data());
        let damaged = Stored {
            damage: Some("test".into()),
            ..Stored::default()
        };
        assert!(damaged.holds_data());
    }
}
