//! Serving checkpoints in parts (paper 5.1): the sender's side of a checkpoint transfer.
//!
//! A NewState names a checkpoint by its [`CheckpointId`] (the root of the Merkle tree over
//! its pages) instead of carrying it; the receiver then asks any replica for the parts it
//! lacks with [`GetCheckpoint`]: runs of the manifest (page digests with the proof that
//! ties them to the root) and pages by index. A replica answers from the checkpoint the
//! root names, if it still holds it, and otherwise says `Unavailable`, so the receiver
//! asks elsewhere or for a newer checkpoint.
//!
//! What a replica holds for this:
//! - the Merkle tree of its latest checkpoint, kept incrementally: a new checkpoint
//!   rehashes only the paths above the pages that changed (`MerkleTree::update`; pages
//!   of state the service did not touch are the same pages, with the same digests);
//! - up to [`RETAINED_MAX`] earlier checkpoints that were asked for recently (within
//!   [`RETAIN_TIMEOUTS`] state-transfer timeouts), so that a transfer under way survives
//!   the sender checkpointing again. Consecutive checkpoints share their unchanged pages,
//!   so one kept costs about the state changed since it.
//!
//! While the next checkpoint builds, the latest one's pages are released
//! ([`Replica::release_checkpoint_pages_while_building`]) unless a transfer asked for it
//! within the same window: the service rewrites its state into new pages during the
//! build, and holding the old ones beside them would hold the rewritten state twice at
//! every checkpoint (`perf/kv_memory.md`). Its id and tree stay (the next build updates
//! the tree, and NewStates go on naming it until the new one is built); a request for it
//! is answered `Unavailable`, as for a checkpoint no longer held, so the asker asks
//! another replica or, once the sources moved on, for the newer checkpoint.
//!
//! Answers are throttled: at most `checkpoint_serve_bytes_per_tick` bytes of pages leave
//! per tick (and one page more: an answer holds one page at least, and as many more as
//! the budget left allows), and requests beyond it wait (at most [`QUEUED_MAX`]) for the
//! next tick, so that a transfer does not starve the sender's normal work. The answers carry committed
//! state only and are checked by the receiver against the root, so any replica that asks
//! is answered, whatever its epoch or status.

use super::*;
use crate::service::merkle::MerkleTree;
use crate::service::{Page, Snapshot};

/// Earlier checkpoints kept while transfers of them may be under way.
pub(super) const RETAINED_MAX: usize = 2;
/// An earlier checkpoint is dropped once it has not been asked for in this many
/// state-transfer timeouts.
pub(super) const RETAIN_TIMEOUTS: u64 = 4;
/// Page requests waiting for the next tick's budget; more are dropped (the asker's own
/// timeout asks again).
pub(super) const QUEUED_MAX: usize = 16;

/// A checkpoint with the Merkle tree over its pages.
#[derive(Clone, Debug)]
pub(super) struct Held {
    /// The checkpoint; without its pages (empty snapshots) once `released`.
    pub checkpoint: Checkpoint,
    pub tree: MerkleTree,
    /// Its name, kept: every request names a checkpoint by its root, and the name (with
    /// its page counts) outlives the pages.
    id: CheckpointId,
    /// The tick it was last asked for (`None`: never).
    pub asked: Option<u64>,
    /// Whether its pages were released while the next checkpoint builds (module docs).
    released: bool,
}

impl Held {
    /// `checkpoint`, whose pages `tree` was built over.
    pub fn new(checkpoint: Checkpoint, tree: MerkleTree) -> Held {
        Held {
            id: CheckpointId::of(&checkpoint, &tree),
            checkpoint,
            tree,
            asked: None,
            released: false,
        }
    }

    pub fn id(&self) -> CheckpointId {
        self.id
    }

    /// Whether `id` names this checkpoint.
    pub fn is(&self, id: &CheckpointId) -> bool {
        self.id.root == id.root && self.id.op == id.op
    }

    /// The checkpoint with its pages, unless they were released.
    pub fn whole(&self) -> Option<&Checkpoint> {
        (!self.released).then_some(&self.checkpoint)
    }

    /// Drops this holder's references to the pages (the service may hold some of them
    /// still: those of state it did not rewrite). Its id and tree stay.
    fn release_pages(&mut self) {
        self.checkpoint.service = Snapshot::empty();
        self.checkpoint.clients = Snapshot::empty();
        self.released = true;
    }

    /// Whether it was asked for within `window` ticks of `ticks`.
    fn asked_within(&self, ticks: u64, window: u64) -> bool {
        self.asked
            .is_some_and(|asked| ticks.saturating_sub(asked) <= window)
    }

    /// The page at `index` (service pages first, then the client table's).
    fn page(&self, index: usize) -> Option<&Page> {
        let service = self.checkpoint.service.pages();
        match index.checked_sub(service.len()) {
            None => service.get(index),
            Some(index) => self.checkpoint.clients.pages().get(index),
        }
    }
}

/// The serving side's state (module docs).
#[derive(Debug, Default)]
pub(super) struct CheckpointServer {
    /// Earlier checkpoints kept for transfers under way, oldest first.
    pub retained: Vec<Held>,
    /// Bytes of pages sent since the last tick.
    sent_this_tick: u64,
    /// Page requests waiting for the next tick's budget.
    queued: VecDeque<GetCheckpoint>,
}

impl<S: StateMachine> Replica<S> {
    /// Takes the latest checkpoint away ahead of a new one, and returns its tree for
    /// [`Self::set_checkpoint`] to update. The checkpoint is retained if a transfer asked
    /// for it recently; otherwise it is dropped here, so that the pages only it holds are
    /// freed before a new snapshot is built (every rebuilt page would exist twice at the
    /// peak, and the allocator keeps the peak).
    pub(super) fn release_checkpoint(&mut self) -> Option<MerkleTree> {
        let previous = self.checkpoint.take()?;
        // A checkpoint whose pages were released was not asked for within the window
        // then, and an ask since was answered `Unavailable` without counting.
        if !previous.released && previous.asked_within(self.ticks, self.retain_window()) {
            let tree = previous.tree.clone();
            self.retain(previous);
            Some(tree)
        } else {
            Some(previous.tree)
        }
    }

    /// Makes `checkpoint` the latest one; `tree` is the Merkle tree over its pages.
    pub(super) fn set_checkpoint(&mut self, checkpoint: Checkpoint, tree: MerkleTree) {
        debug_assert!(self.checkpoint.is_none(), "released first");
        debug_assert_eq!(tree.leaves(), checkpoint.pages().count());
        self.checkpoint = Some(Held::new(checkpoint, tree));
    }

    /// While a checkpoint builds, releases the latest one's pages (module docs), unless
    /// - a transfer asked for it within the retain window: a source keeps a checkpoint it
    ///   serves, for as long as it would retain it once replaced (bounded the same way;
    ///   every tick looks again, so its pages go once the transfer stops asking);
    /// - its write is not complete: the store captures a checkpoint's pages from the
    ///   replica after the input that issued its write (`StoredWrite::capture`), and a
    ///   durable store writes its file from what it captured (its own references to the
    ///   pages, held until the file is written), so once the write completes nothing
    ///   reads these pages from here.
    ///
    /// Called when a build starts and on every tick.
    pub(super) fn release_checkpoint_pages_while_building(&mut self) {
        if self.building.is_none() {
            return;
        }
        let (ticks, window) = (self.ticks, self.retain_window());
        let Some(held) = self.checkpoint.as_ref() else {
            return;
        };
        let op = held.checkpoint.op;
        if held.released
            || held.asked_within(ticks, window)
            || !self.writes.checkpoint_durable_from(op)
        {
            return;
        }
        let held = self.checkpoint.as_mut().expect("checked");
        held.release_pages();
        tracing::debug!(
            replica = self.id,
            op,
            "latest checkpoint's pages released while the next one builds"
        );
    }

    /// Ticks an earlier checkpoint is kept after it was last asked for.
    fn retain_window(&self) -> u64 {
        RETAIN_TIMEOUTS * self.config.state_transfer_timeout_ticks
    }

    fn retain(&mut self, held: Held) {
        assert!(!held.released, "a checkpoint is retained with its pages");
        let retained = &mut self.checkpoint_server.retained;
        if retained.len() == RETAINED_MAX {
            retained.remove(0);
        }
        retained.push(held);
    }

    /// The name of the latest checkpoint, if any: its op and the root of the Merkle tree
    /// over its pages.
    pub fn checkpoint_id(&self) -> Option<CheckpointId> {
        self.checkpoint.as_ref().map(Held::id)
    }

    /// A checkpoint this replica holds with its pages (the latest, or a retained one)
    /// named by `id`.
    pub(super) fn held_checkpoint(&self, id: &CheckpointId) -> Option<&Held> {
        self.checkpoint
            .iter()
            .chain(&self.checkpoint_server.retained)
            .find(|held| held.is(id) && !held.released)
    }

    /// The checkpoint named by `root` whose pages this replica holds.
    fn held_by_root_mut(&mut self, root: &Digest) -> Option<&mut Held> {
        self.checkpoint
            .iter_mut()
            .chain(&mut self.checkpoint_server.retained)
            .find(|held| held.id.root == *root && !held.released)
    }

    /// Every tick: a new page budget, the requests that waited for it, and retained
    /// checkpoints no one asked for in a while dropped.
    pub(super) fn serve_checkpoints_on_tick(&mut self, effects: &mut Vec<Effect>) {
        self.checkpoint_server.sent_this_tick = 0;
        let (ticks, window) = (self.ticks, self.retain_window());
        self.checkpoint_server
            .retained
            .retain(|held| held.asked_within(ticks, window));
        self.release_checkpoint_pages_while_building();
        while !self.serve_budget_spent() {
            let Some(get) = self.checkpoint_server.queued.pop_front() else {
                break;
            };
            self.answer_get_checkpoint(get, effects);
        }
    }

    fn serve_budget_spent(&self) -> bool {
        self.checkpoint_server.sent_this_tick >= self.config.checkpoint_serve_bytes_per_tick
    }

    pub(super) fn on_get_checkpoint(&mut self, get: GetCheckpoint, effects: &mut Vec<Effect>) {
        if get.asker == self.id {
            return self.drop_reason("get_checkpoint", "asked by this replica's identity");
        }
        if matches!(get.part, CheckpointRequest::Pages(_)) && self.serve_budget_spent() {
            if self.checkpoint_server.queued.len() == QUEUED_MAX {
                return self.drop_reason("get_checkpoint", "serving queue full");
            }
            self.checkpoint_server.queued.push_back(get);
            return;
        }
        self.answer_get_checkpoint(get, effects);
    }

    fn answer_get_checkpoint(&mut self, get: GetCheckpoint, effects: &mut Vec<Effect>) {
        let ticks = self.ticks;
        // Half a message, and no more than what is left of this tick's budget (at least
        // one page goes): a tick sends at most its budget and one page. The asker asks
        // again for the pages an answer leaves out.
        let budget_left = (self.config.checkpoint_serve_bytes_per_tick)
            .saturating_sub(self.checkpoint_server.sent_this_tick);
        let answer_bytes_max = (self.config.message_bytes_max as usize / 2)
            .min(usize::try_from(budget_left).unwrap_or(usize::MAX));
        let content = match self.held_by_root_mut(&get.root) {
            None => CheckpointContent::Unavailable,
            Some(held) => {
                held.asked = Some(ticks);
                match Self::part_of(held, &get.part, answer_bytes_max) {
                    Ok(content) => content,
                    Err(reason) => return self.drop_reason("get_checkpoint", reason),
                }
            }
        };
        if let CheckpointContent::Pages(pages) = &content {
            let bytes: usize = pages.iter().map(|(_, page)| page.len()).sum();
            self.checkpoint_server.sent_this_tick += bytes as u64;
            self.stats.checkpoint_pages_served += pages.len() as u64;
            self.stats.checkpoint_bytes_served += bytes as u64;
        }
        tracing::debug!(
            replica = self.id,
            asker = get.asker,
            op = get.op,
            held = !matches!(content, CheckpointContent::Unavailable),
            "answering for part of a checkpoint"
        );
        let part = CheckpointPart {
            op: get.op,
            root: get.root,
            responder: self.id,
            content,
        };
        self.send_to_id(get.asker, Body::CheckpointPart(part), effects);
    }

    /// The part of `held` that `request` asks for: a manifest run with its proof, or the
    /// pages asked for, in order, as many as fit `bytes_max` (at least one).
    fn part_of(
        held: &Held,
        request: &CheckpointRequest,
        bytes_max: usize,
    ) -> Result<CheckpointContent, &'static str> {
        match *request {
            CheckpointRequest::Manifest { level, start } => {
                let span = 1usize << level;
                let start = start as usize;
                if span > held.tree.width() || start >= held.tree.width() {
                    return Err("manifest run outside the tree");
                }
                let leaves = held.tree.pages();
                let digests =
                    leaves[start.min(leaves.len())..(start + span).min(leaves.len())].to_vec();
                Ok(CheckpointContent::Manifest {
                    level,
                    start: start as u32,
                    digests,
                    proof: held.tree.proof(level as usize, start),
                })
            }
            CheckpointRequest::Pages(ref indexes) => {
                let mut pages = Vec::new();
                let mut bytes = 0;
                for &index in indexes {
                    let Some(page) = held.page(index as usize) else {
                        return Err("page index beyond the checkpoint");
                    };
                    if !pages.is_empty() && bytes + 8 + page.len() > bytes_max {
                        break;
                    }
                    bytes += 8 + page.len();
                    pages.push((index, page.bytes().clone()));
                }
                Ok(CheckpointContent::Pages(pages))
            }
        }
    }
}
