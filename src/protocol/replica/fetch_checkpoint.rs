//! Fetching a checkpoint in parts (paper 5.1): the receiver's side of a checkpoint
//! transfer, whatever asked for it (state transfer 5.2, recovery 4.3, a new primary's
//! fetch 5.3, a replica moving to a new epoch, a learner).
//!
//! Every NewState passes through [`Replica::receive_new_state`]. One that names a
//! checkpoint this replica needs and does not hold is kept aside while the checkpoint is
//! fetched, then handed to its handler as if it had carried the checkpoint whole (a
//! [`ReceivedState`]); the handlers check view, epoch and status again then, so one that
//! went stale meanwhile is dropped, and the fetched checkpoint stays in hand for the next
//! NewState that names it.
//!
//! The transfer:
//! 1. **Manifest.** The page digests come in aligned runs of `2^level` digests, each with
//!    the proof that ties it to the root the NewState named (`merkle::verify_run`), so a
//!    run is believed on its own, from any replica. A page whose digest this replica
//!    already holds (in its own checkpoints, or fetched before) is taken from there: only
//!    the pages that differ travel.
//! 2. **Pages**, asked for by index in requests of at most `checkpoint_request_pages_max`
//!    pages, at most `checkpoint_fetch_requests_max` requests in flight, spread over the
//!    replicas (the NewState's sender first; then every other request to a replica not
//!    tried yet, the others to those that served a part, in turn). Each page is checked
//!    against its digest (hashed here, or by the driver off the core's thread:
//!    [`Replica::on_hashed_checkpoint_part`] takes pages whose digests [`Page::new`]
//!    computed, and compares); a corrupt page, a request that timed out and the part of a
//!    request an answer left out are asked for again, from the next replica. A replica
//!    that says it does not hold the checkpoint is asked no more in this transfer; one
//!    whose request timed out is not tried first again, in this transfer or the next ones,
//!    for a while (a replica that is down would cost every transfer a timeout).
//! 3. **Install.** Once every page is in hand, the tree over the digests must give the
//!    root. The service then prepares the install off the event loop
//!    ([`StateMachine::prepare_restore`]: for a large state, reading every page into a new
//!    state takes seconds, which the loop must not stall for): the driver runs it on a
//!    worker ([`Effect::BuildCheckpoint`]), and the transfer stays under way, making
//!    progress, until it ran (one no worker took is run here at the next tick). Then
//!    the checkpoint is kept as fetched, with its preparation, and the NewState goes to its
//!    handler, which installs it (`restore_checkpoint`, a swap of the prepared state) and
//!    takes the log suffix after it.
//!
//! A NewState naming another checkpoint while one is being fetched (the sources moved on)
//! waits while the transfer under way progresses (it is finished first, and its NewState
//! then asks for what follows); once that transfer went a state-transfer timeout without
//! progress, it starts a new transfer that keeps every page already held, by digest. So the pages a
//! transfer fetches are the pages that differ from what this replica holds, plus one more
//! fetch of each page lost, corrupted, or left out of an answer (`checkpoint_pages_refetched`
//! counts them).
//!
//! # Pages kept across a crash
//!
//! Every page a transfer verifies is also handed to the driver to keep
//! ([`Effect::KeepPages`]): a cache outside the ordering rule, since a page is used only
//! once its digest matches a verified manifest. A restart hands the pages its store read
//! back to the replica ([`Stored::fetched`]), and the next transfer reuses them by digest
//! like the pages it holds (`checkpoint_pages_resumed` counts them), whatever checkpoint
//! it fetches. A transfer keeps again, under its own root, the pages it took from an
//! earlier transfer or from the store, so the store holds one transfer's pages at most.
//! The store is told to forget them once the fetched checkpoint is installed and a
//! checkpoint at least as recent is durable; the replica forgets those it read back once
//! a transfer took them, or after `KEPT_TIMEOUTS` state-transfer timeouts without one.
//!
//! One exception to "one transfer's pages": a transfer that starts while this replica's
//! checkpoint is not durable yet (typically one installed from the previous transfer,
//! whose file, the whole state, is still being written) files its pages *with* the
//! store's instead of replacing them, under the root they are filed under, as long as the
//! store holds no more pages than the new checkpoint has (so at most twice its pages).
//! Until that checkpoint is durable the store's pages may be all a crash would leave of
//! it: replacing them, a crash then cost a full transfer again (a 1 GiB state on disk,
//! `perf/state_transfer.md`, 2026-12-02: the sources moved on during the install, the
//! replica was killed before its 926 MB checkpoint file was written, and its restart
//! found 262 pages kept). Pages already filed under that root are not kept again.

use super::serve_checkpoint::Held;
use super::state_transfer::{new_state_is_well_formed, ReceivedState};
use super::*;
use crate::protocol::effects::{CheckpointBuild, KeepPages};
use crate::service::merkle::{verify_run, MerkleTree};
use crate::service::DIGEST_BYTES;
use crate::service::{Deferred, Page, PreparedRestore, Snapshot};
use bytes::Bytes;
use std::collections::HashMap;

/// Where a NewState came from: whom to hand it to once its checkpoint is in hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StateRoute {
    /// From a replica of this replica's epoch (`from` may be `NOT_A_MEMBER`: a replaced
    /// replica serving a transition).
    Member {
        epoch: u32,
        from: ReplicaIndex,
        view: View,
    },
    /// From a replica of a later epoch whose start this replica fetches: `from` its index
    /// there (`NOT_A_MEMBER`: a replaced replica serving the transition).
    PendingEpoch { epoch: u32, from: ReplicaIndex },
    /// To this replica as a learner.
    Learner,
}

/// The receiving side's state (module docs).
#[derive(Debug, Default)]
pub(super) struct Fetching {
    /// The transfer under way.
    transfer: Option<Box<Transfer>>,
    /// The last checkpoint fetched whole, until a later one replaces it.
    fetched: Option<Held>,
    /// The service's preparation of `fetched`'s install, if it made one.
    prepared: Option<Deferred<PreparedRestore>>,
    /// Replicas whose request for a part timed out, and when: the next transfers do not
    /// try them first either (a replica that is down would cost each transfer a timeout,
    /// and a cluster that checkpoints faster than that would never be caught up with),
    /// until `SUSPECT_TIMEOUTS` state-transfer timeouts have passed.
    suspects: Vec<(ReplicaId, u64)>,
    /// Pages the store kept from a transfer before the restart, by digest, until a
    /// transfer takes them (module docs).
    kept: HashMap<Digest, Page>,
    /// Once a checkpoint at this op or later is durable, the store's kept pages are of
    /// no more use: it is told to forget them.
    clear_kept_from: Option<Op>,
    /// The root the store's kept pages are filed under (as this replica last told it, or
    /// as read back), and how many pages it was given under it: a store given pages for
    /// another root forgets these first.
    store_root: Option<Digest>,
    store_pages: u64,
}

/// Where a page a transfer may reuse comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// A checkpoint this replica holds.
    Held,
    /// An earlier transfer, since this process started; `true`: it filed them in the
    /// store under another root than this transfer files its pages under (the store
    /// forgets them once this transfer keeps a page, so they are kept again as they are
    /// reused).
    Fetched(bool),
    /// The store's kept pages, read back at the restart; `true` as for `Fetched`.
    Kept(bool),
}

#[derive(Debug)]
struct Transfer {
    id: CheckpointId,
    /// The root this transfer files the pages it keeps under (`id.root`, or the store's
    /// while this replica's checkpoint is not durable: module docs).
    keep_root: Digest,
    /// The NewState that named the checkpoint (the latest one naming it), and its route.
    new_state: NewState,
    route: StateRoute,
    /// Manifest runs have `2^level` digests.
    level: u8,
    /// Per manifest run: whether it arrived.
    runs_received: Vec<bool>,
    /// Per page: its digest, once its run arrived.
    digests: Vec<Option<Digest>>,
    /// Per page: the page, once held.
    pages: Vec<Option<Page>>,
    pages_held: u64,
    /// Work not in flight: manifest runs, then pages whose digest is known.
    runs_waiting: VecDeque<u32>,
    pages_waiting: VecDeque<u32>,
    in_flight: Vec<InFlight>,
    /// The replicas to ask; those that said they lack it are removed.
    sources: Vec<ReplicaId>,
    /// Those that answered with a part of it (and did not time out since), and those
    /// whose request timed out (in this transfer or a recent one, until they answer):
    /// requests alternate between the holders and the replicas not tried yet, so that a
    /// transfer spreads over every replica that serves it without waiting on ones that
    /// are down.
    holders: Vec<ReplicaId>,
    suspects: Vec<ReplicaId>,
    next_source: usize,
    /// Pages this replica held when the transfer started, by digest.
    reusable: HashMap<Digest, (Page, Origin)>,
    /// The tick of the last progress (a run or a page).
    progressed: u64,
    /// For the logs: when it started, bytes fetched, pages reused.
    started: u64,
    bytes: u64,
    reused: u64,
    /// Every page in hand and verified: the checkpoint, and the service's preparation of
    /// its install, running (module docs, "Install").
    preparing: Option<(Held, Deferred<PreparedRestore>)>,
}

/// A part's content as the core handles it: as the wire gave it, but with each page as
/// it came, hashed or not.
enum Content {
    Unavailable,
    Manifest {
        level: u8,
        start: u32,
        digests: Vec<Digest>,
        proof: Vec<Digest>,
    },
    Pages(Vec<(u32, Received)>),
}

/// A page as an answer brought it: its bytes alone, hashed here against the digest its
/// manifest gave; or hashed by the driver off this thread ([`HashedPart`]), whose digest
/// is then compared, not computed again. Either way no page is used unless its bytes
/// hash to the digest of a manifest run verified against the root.
enum Received {
    Bytes(Bytes),
    Hashed(Page),
}

impl Received {
    /// The page, if its bytes hash to `digest`.
    fn verify(self, digest: Digest) -> Option<Page> {
        match self {
            Received::Bytes(bytes) => Page::verified(bytes, digest).ok(),
            Received::Hashed(page) => (page.digest() == digest).then_some(page),
        }
    }
}

#[derive(Debug)]
struct InFlight {
    to: ReplicaId,
    asked: Asked,
    deadline: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Run(u32),
    Pages(Vec<u32>),
}

impl Transfer {
    fn is_complete(&self) -> bool {
        self.pages_held == self.id.pages()
    }

    /// `responder` answered with a part: it is asked in turn from now on.
    fn note_holder(&mut self, responder: ReplicaId) {
        self.suspects.retain(|&id| id != responder);
        if !self.holders.contains(&responder) && self.sources.contains(&responder) {
            self.holders.push(responder);
        }
    }

    /// Whom to ask next (`sources` is not empty): every other request goes to a replica
    /// not tried yet while there is one (every request while no replica answered), the
    /// others to the holders in turn; with neither, to anyone, suspects included.
    fn next_source_to_ask(&mut self) -> ReplicaId {
        let turn = self.next_source;
        self.next_source = self.next_source.wrapping_add(1);
        let untried: Vec<ReplicaId> = self
            .sources
            .iter()
            .copied()
            .filter(|id| !self.holders.contains(id) && !self.suspects.contains(id))
            .collect();
        if !untried.is_empty() && (self.holders.is_empty() || turn % 2 == 1) {
            return untried[(turn / 2) % untried.len()];
        }
        if !self.holders.is_empty() {
            return self.holders[turn % self.holders.len()];
        }
        self.sources[turn % self.sources.len()]
    }

    /// Puts the work of a request back to be asked for again.
    fn give_back(&mut self, asked: Asked) {
        match asked {
            Asked::Run(run) if !self.runs_received[run as usize] => {
                self.runs_waiting.push_front(run)
            }
            Asked::Run(_) => {}
            Asked::Pages(indexes) => {
                for index in indexes.into_iter().rev() {
                    if self.pages[index as usize].is_none() {
                        self.pages_waiting.push_front(index);
                    }
                }
            }
        }
    }

    /// Takes a verified manifest run: its digests, and every page held already. Returns
    /// the pages reused; those not from a held checkpoint go to `keep` (to be kept again
    /// under this transfer's root), and those the store kept are counted in `resumed`.
    fn take_run(
        &mut self,
        run: u32,
        digests: &[Digest],
        keep: &mut Vec<Page>,
        resumed: &mut u64,
    ) -> u64 {
        self.runs_received[run as usize] = true;
        let start = (run as usize) << self.level;
        let mut reused = 0;
        for (offset, digest) in digests.iter().enumerate() {
            let index = start + offset;
            self.digests[index] = Some(*digest);
            match self.reusable.get(digest) {
                Some((page, origin)) if self.pages[index].is_none() => {
                    self.pages[index] = Some(page.clone());
                    self.pages_held += 1;
                    reused += 1;
                    if matches!(origin, Origin::Fetched(true) | Origin::Kept(true)) {
                        keep.push(page.clone());
                    }
                    *resumed += u64::from(matches!(origin, Origin::Kept(_)));
                }
                Some(_) => {}
                None => self.pages_waiting.push_back(index as u32),
            }
        }
        reused
    }

    /// The checkpoint, once every page is held, if the tree over its digests gives the
    /// root it was named by.
    fn assemble(&self) -> Option<Held> {
        let digests: Vec<Digest> = self.digests.iter().map(|d| d.expect("complete")).collect();
        let tree = MerkleTree::new(&digests);
        if tree.root() != self.id.root {
            return None;
        }
        let pages: Vec<Page> = self
            .pages
            .iter()
            .map(|page| page.clone().expect("complete"))
            .collect();
        let (service, clients) = pages.split_at(self.id.service_pages as usize);
        // The client table's pages are small: copied, so that they pin no received frame.
        let clients = clients
            .iter()
            .map(|page| Page::new(Bytes::copy_from_slice(page.bytes())))
            .collect();
        let checkpoint = Checkpoint {
            op: self.id.op,
            timestamp: self.id.timestamp,
            service: Snapshot::new(service.to_vec()),
            clients: Snapshot::new(clients),
        };
        Some(Held::new(checkpoint, tree))
    }
}

impl Fetching {
    /// Takes the pages a restart read back from the store (module docs).
    pub(super) fn take_kept(&mut self, fetched: crate::protocol::FetchedPages) {
        self.store_root = fetched.root;
        self.store_pages = fetched.pages.len() as u64;
        self.kept = fetched
            .pages
            .into_iter()
            .map(|page| (page.digest(), page))
            .collect();
    }

    /// Keeps `suspects` (of a transfer that ended) for the next transfers.
    fn remember_suspects(&mut self, suspects: &[ReplicaId], ticks: u64) {
        for &id in suspects {
            match self.suspects.iter_mut().find(|(known, _)| *known == id) {
                Some(entry) => entry.1 = ticks,
                None => self.suspects.push((id, ticks)),
            }
        }
    }
}

impl<S: StateMachine> Replica<S> {
    /// The checkpoint being fetched, if any: its op, the pages held and the pages it has.
    pub fn checkpoint_fetch_progress(&self) -> Option<(Op, u64, u64)> {
        self.checkpoint_fetch
            .transfer
            .as_ref()
            .map(|transfer| (transfer.id.op, transfer.pages_held, transfer.id.pages()))
    }

    /// Brings the progress gauges of `Stats` up to date with the transfer under way.
    fn note_fetch_progress(&mut self) {
        let (op, held, pages) = self.checkpoint_fetch_progress().unwrap_or((0, 0, 0));
        self.stats.checkpoint_fetch_op = op;
        self.stats.checkpoint_fetch_pages = pages;
        self.stats.checkpoint_fetch_pages_held = held;
    }

    /// Every NewState comes here first: one naming a checkpoint this replica needs and
    /// lacks waits while the checkpoint is fetched; any other goes to its handler now.
    pub(super) fn receive_new_state(
        &mut self,
        route: StateRoute,
        new_state: NewState,
        effects: &mut Vec<Effect>,
    ) {
        if !new_state_is_well_formed(&new_state) {
            return self.drop_reason("new_state", "malformed");
        }
        let checkpoint = match new_state.checkpoint {
            None => None,
            // Executed past it already: every handler but a pending epoch's (which moves
            // to the epoch by it) skips a checkpoint at or below the commit number.
            Some(id)
                if id.op <= self.commit && !matches!(route, StateRoute::PendingEpoch { .. }) =>
            {
                None
            }
            // A witness needs the checkpoint's op, not its pages (`witness`).
            Some(id) if self.is_witness() => Some(Checkpoint {
                op: id.op,
                timestamp: id.timestamp,
                service: Snapshot::empty(),
                clients: Snapshot::empty(),
            }),
            Some(id) => match self.checkpoint_in_hand(&id) {
                Some(checkpoint) => Some(checkpoint),
                None => return self.fetch_checkpoint(route, id, new_state, effects),
            },
        };
        self.route_state(route, ReceivedState::new(new_state, checkpoint), effects);
        self.release_fetched_once_installed();
    }

    /// Drops the fetched checkpoint once this replica installed it (or a later one): its
    /// pages are slices of the messages that carried them, and the service keeps pages of
    /// its own (`restore_checkpoint`), so holding it on would hold the state twice. The
    /// store's kept pages go once a checkpoint that recent is durable.
    fn release_fetched_once_installed(&mut self) {
        let installed = self
            .checkpoint_fetch
            .fetched
            .as_ref()
            .map(|held| held.checkpoint.op)
            .filter(|&op| op <= self.checkpoint_op());
        if let Some(op) = installed {
            self.checkpoint_fetch.fetched = None;
            self.checkpoint_fetch.prepared = None;
            if self.checkpoint_fetch.transfer.is_none() {
                self.checkpoint_fetch.clear_kept_from = Some(op);
            }
        }
    }

    /// Tells the store to forget its kept pages once the checkpoint they were fetched for
    /// (or a later one) is installed and durable. Called on every write completion.
    pub(super) fn clear_kept_pages_once_durable(&mut self, effects: &mut Vec<Effect>) {
        let Some(op) = self.checkpoint_fetch.clear_kept_from else {
            return;
        };
        if self.checkpoint_fetch.transfer.is_some() {
            // A new transfer keeps pages of its own: they stay.
            self.checkpoint_fetch.clear_kept_from = None;
        } else if self.writes.checkpoint_durable_from(op) {
            self.checkpoint_fetch.clear_kept_from = None;
            (
                self.checkpoint_fetch.store_root,
                self.checkpoint_fetch.store_pages,
            ) = (None, 0);
            effects.push(Effect::KeepPages(KeepPages::Clear));
        }
    }

    /// The checkpoint `id` names, if this replica holds it (its own, a retained one, or
    /// the last one fetched).
    fn checkpoint_in_hand(&self, id: &CheckpointId) -> Option<Checkpoint> {
        let fetched = self
            .checkpoint_fetch
            .fetched
            .as_ref()
            .filter(|held| held.is(id));
        fetched
            .or_else(|| self.held_checkpoint(id))
            .map(|held| held.checkpoint.clone())
    }

    fn route_state(&mut self, route: StateRoute, state: ReceivedState, effects: &mut Vec<Effect>) {
        match route {
            StateRoute::Member { epoch, from, view } => {
                if epoch != self.configuration.epoch() || self.status == Status::Joining {
                    return self.drop_reason("new_state", "the epoch moved on while fetching");
                }
                self.on_new_state(from, view, state, effects)
            }
            StateRoute::PendingEpoch { epoch, from } => {
                self.on_pending_epoch_state(epoch, from, state, effects)
            }
            StateRoute::Learner => {
                if self.status != Status::Joining {
                    return self.drop_reason("new_state", "no longer a learner");
                }
                self.on_learner_state(state, effects)
            }
        }
    }

    /// Starts fetching the checkpoint `id` names (or, when it is being fetched already,
    /// keeps the newer NewState for when it is in hand).
    fn fetch_checkpoint(
        &mut self,
        route: StateRoute,
        id: CheckpointId,
        new_state: NewState,
        effects: &mut Vec<Effect>,
    ) {
        if let Some(transfer) = self
            .checkpoint_fetch
            .transfer
            .as_mut()
            .filter(|transfer| transfer.id == id)
        {
            transfer.new_state = new_state;
            transfer.route = route;
            return self.pump_checkpoint_fetch(effects);
        }
        if let Some(transfer) = self.checkpoint_fetch.transfer.as_ref() {
            if self.ticks.saturating_sub(transfer.progressed)
                < self.config.state_transfer_timeout_ticks
            {
                // The transfer under way moves: it is finished first (its NewState then
                // asks for what follows), or else a source that checkpoints faster than
                // a manifest's round trip would re-target it for ever.
                return self.drop_reason("new_state", "another checkpoint's transfer is under way");
            }
        }
        let previous = self.checkpoint_fetch.transfer.take();
        // Where this transfer files the pages it keeps (module docs, "Pages kept across a
        // crash"): with the store's while this replica's checkpoint is not durable.
        let keep_root = self
            .checkpoint_fetch
            .store_root
            .filter(|_| {
                !self.writes.checkpoint_durable_from(self.checkpoint_op())
                    && self.checkpoint_fetch.store_pages <= id.pages()
            })
            .unwrap_or(id.root);
        let refile = self.checkpoint_fetch.store_root != Some(keep_root);
        let mut reusable: HashMap<Digest, (Page, Origin)> = HashMap::new();
        let held = self
            .checkpoint
            .iter()
            .chain(&self.checkpoint_server.retained)
            .chain(&self.checkpoint_fetch.fetched);
        for page in held.flat_map(|held| held.checkpoint.pages()) {
            reusable
                .entry(page.digest())
                .or_insert_with(|| (page.clone(), Origin::Held));
        }
        if let Some(previous) = previous {
            let ticks = self.ticks;
            self.checkpoint_fetch
                .remember_suspects(&previous.suspects, ticks);
            // The sources moved on to a newer checkpoint: keep what was fetched.
            for page in previous.pages.into_iter().flatten() {
                reusable
                    .entry(page.digest())
                    .or_insert((page, Origin::Fetched(refile)));
            }
            self.stats.checkpoint_fetches_retargeted += 1;
        }
        // The pages the store kept before a restart: this transfer takes them all (those
        // it does not need go with it), so they are held once and for one transfer.
        for (digest, page) in std::mem::take(&mut self.checkpoint_fetch.kept) {
            reusable
                .entry(digest)
                .or_insert((page, Origin::Kept(refile)));
        }
        // The store's pages are now this transfer's to replace, not to forget.
        self.checkpoint_fetch.clear_kept_from = None;
        let pages = id.pages() as usize;
        let width = pages.max(1).next_power_of_two();
        let level = manifest_level(self.config.message_bytes_max).min(width.trailing_zeros() as u8);
        // Runs wholly in the padding hold nothing: not asked for.
        let runs = pages.div_ceil(1 << level).max(1);
        let sources = self.checkpoint_sources(new_state.sender);
        let forgive = SUSPECT_TIMEOUTS * self.config.state_transfer_timeout_ticks;
        let ticks = self.ticks;
        let fetching = &mut self.checkpoint_fetch;
        fetching
            .suspects
            .retain(|&(_, since)| ticks.saturating_sub(since) < forgive);
        let suspects: Vec<ReplicaId> = fetching.suspects.iter().map(|&(id, _)| id).collect();
        tracing::info!(
            replica = self.id,
            op = id.op,
            pages,
            reusable = reusable.len(),
            "fetching a checkpoint"
        );
        self.checkpoint_fetch.transfer = Some(Box::new(Transfer {
            id,
            keep_root,
            new_state,
            route,
            level,
            runs_received: vec![false; runs],
            digests: vec![None; pages],
            pages: vec![None; pages],
            pages_held: 0,
            runs_waiting: (0..runs as u32).collect(),
            pages_waiting: VecDeque::new(),
            in_flight: Vec::new(),
            sources,
            holders: Vec::new(),
            suspects,
            next_source: 0,
            reusable,
            progressed: self.ticks,
            started: self.ticks,
            bytes: 0,
            reused: 0,
            preparing: None,
        }));
        self.stats.checkpoint_fetches += 1;
        self.note_fetch_progress();
        if pages == 0 {
            return self.complete_checkpoint_fetch(effects);
        }
        self.pump_checkpoint_fetch(effects);
    }

    /// The replicas that may hold a checkpoint named to this replica by `sender`: the
    /// sender first, then the members of its epoch, of the epoch before (replaced
    /// replicas serve a transition) and of a pending later epoch.
    fn checkpoint_sources(&self, sender: ReplicaId) -> Vec<ReplicaId> {
        let first = (sender != self.id).then_some(sender);
        let pending = self.epoch_transfer.pending_configuration();
        let mut others: Vec<ReplicaId> = self
            .configuration
            .ids()
            .chain(self.history.back().into_iter().flat_map(|old| old.ids()))
            .chain(pending.into_iter().flat_map(|pending| pending.ids()))
            .filter(|&id| id != self.id && Some(id) != first)
            .collect();
        others.sort_unstable();
        others.dedup();
        first.into_iter().chain(others).collect()
    }

    /// Asks for more while fewer than `checkpoint_fetch_requests_max` requests are in
    /// flight: manifest runs first, then pages whose digests are known.
    fn pump_checkpoint_fetch(&mut self, effects: &mut Vec<Effect>) {
        let requests_max = self.config.checkpoint_fetch_requests_max as usize;
        let pages_max = self.request_pages_max();
        let deadline = self.ticks + self.config.state_transfer_timeout_ticks;
        let Some(transfer) = self.checkpoint_fetch.transfer.as_mut() else {
            return;
        };
        let mut requests = Vec::new();
        while transfer.in_flight.len() < requests_max && !transfer.sources.is_empty() {
            let asked = if let Some(run) = transfer.runs_waiting.pop_front() {
                Asked::Run(run)
            } else {
                let mut indexes = Vec::new();
                while indexes.len() < pages_max {
                    let Some(index) = transfer.pages_waiting.pop_front() else {
                        break;
                    };
                    if transfer.pages[index as usize].is_none() {
                        indexes.push(index);
                    }
                }
                if indexes.is_empty() {
                    break;
                }
                indexes.sort_unstable();
                indexes.dedup();
                Asked::Pages(indexes)
            };
            let to = transfer.next_source_to_ask();
            let part = match &asked {
                Asked::Run(run) => CheckpointRequest::Manifest {
                    level: transfer.level,
                    start: run << transfer.level,
                },
                Asked::Pages(indexes) => CheckpointRequest::Pages(indexes.clone()),
            };
            requests.push((
                to,
                GetCheckpoint {
                    op: transfer.id.op,
                    root: transfer.id.root,
                    asker: self.id,
                    part,
                },
            ));
            transfer.in_flight.push(InFlight {
                to,
                asked,
                deadline,
            });
        }
        for (to, get) in requests {
            tracing::debug!(replica = self.id, to, op = get.op, part = ?get.part, "asking for part of a checkpoint");
            self.send_to_id(to, Body::GetCheckpoint(get), effects);
        }
    }

    /// Page indexes per request: the configured maximum, within what a learner's
    /// connection carries (a request's frame limit).
    fn request_pages_max(&self) -> usize {
        let fits = (self.config.request_body_bytes_max as usize).saturating_sub(64) / 4;
        (self.config.checkpoint_request_pages_max as usize)
            .min(fits)
            .max(1)
    }

    pub(super) fn on_checkpoint_part(&mut self, part: CheckpointPart, effects: &mut Vec<Effect>) {
        let content = match part.content {
            CheckpointContent::Unavailable => Content::Unavailable,
            CheckpointContent::Manifest {
                level,
                start,
                digests,
                proof,
            } => Content::Manifest {
                level,
                start,
                digests,
                proof,
            },
            CheckpointContent::Pages(pages) => Content::Pages(
                pages
                    .into_iter()
                    .map(|(index, bytes)| (index, Received::Bytes(bytes)))
                    .collect(),
            ),
        };
        self.on_part(part.root, part.responder, content, effects)
    }

    /// A CheckpointPart of pages the driver hashed off this thread, fed like a message
    /// (`on_message`): each page is used only if its digest, computed from its bytes by
    /// [`Page::new`], equals the one its verified manifest run gave.
    pub fn on_hashed_checkpoint_part(&mut self, part: HashedPart, effects: &mut Vec<Effect>) {
        let start = effects.len();
        let pages = part
            .pages
            .into_iter()
            .map(|(index, page)| (index, Received::Hashed(page)))
            .collect();
        self.on_part(part.root, part.responder, Content::Pages(pages), effects);
        self.end_input(start, effects);
    }

    fn on_part(
        &mut self,
        root: Digest,
        responder: ReplicaId,
        content: Content,
        effects: &mut Vec<Effect>,
    ) {
        let ticks = self.ticks;
        let Some(transfer) = self
            .checkpoint_fetch
            .transfer
            .as_mut()
            .filter(|transfer| transfer.id.root == root)
        else {
            return self.drop_reason("checkpoint_part", "no transfer of this checkpoint");
        };
        if transfer.preparing.is_some() {
            return self.drop_reason("checkpoint_part", "every page of it is in hand");
        }
        let answered = |asked: &Asked| match (&content, asked) {
            (Content::Manifest { start, .. }, Asked::Run(run)) => *start == *run << transfer.level,
            (Content::Pages(pages), Asked::Pages(indexes)) => pages
                .first()
                .is_some_and(|(first, _)| indexes.first() == Some(first)),
            (Content::Unavailable, _) => true,
            _ => false,
        };
        let position = transfer
            .in_flight
            .iter()
            .position(|in_flight| in_flight.to == responder && answered(&in_flight.asked));
        let asked = position.map(|position| transfer.in_flight.swap_remove(position).asked);
        let keep_root = transfer.keep_root;
        let mut progressed = false;
        let mut refetch = 0;
        // Verified pages for the store to keep (module docs).
        let mut keep = Vec::new();
        match content {
            Content::Unavailable => {
                transfer.sources.retain(|&id| id != responder);
                transfer.holders.retain(|&id| id != responder);
                transfer.suspects.retain(|&id| id != responder);
                if let Some(asked) = asked {
                    refetch += asked_pages(&asked);
                    transfer.give_back(asked);
                }
            }
            Content::Manifest {
                level,
                start,
                digests,
                proof,
            } => {
                let run = start >> transfer.level;
                let valid = level == transfer.level
                    && (run as usize) < transfer.runs_received.len()
                    && verify_run(
                        &transfer.id.root,
                        transfer.digests.len(),
                        level as usize,
                        start as usize,
                        &digests,
                        &proof,
                    );
                if !valid {
                    self.stats.checkpoint_parts_corrupt += 1;
                    if let Some(asked) = asked {
                        transfer.give_back(asked);
                    }
                    tracing::warn!(
                        replica = self.id,
                        from = responder,
                        "checkpoint manifest run does not verify"
                    );
                } else if !transfer.runs_received[run as usize] {
                    transfer.note_holder(responder);
                    let mut resumed = 0;
                    let reused = transfer.take_run(run, &digests, &mut keep, &mut resumed);
                    transfer.reused += reused;
                    self.stats.checkpoint_pages_reused += reused;
                    self.stats.checkpoint_pages_resumed += resumed;
                    progressed = true;
                }
            }
            Content::Pages(pages) => {
                let mut corrupt = 0;
                let mut bytes = 0;
                let mut fetched = 0;
                for (index, received) in pages {
                    let Some(Some(digest)) = transfer.digests.get(index as usize).copied() else {
                        corrupt += 1;
                        continue;
                    };
                    if transfer.pages[index as usize].is_some() {
                        continue;
                    }
                    match received.verify(digest) {
                        Some(page) => {
                            bytes += page.len() as u64;
                            keep.push(page.clone());
                            transfer.pages[index as usize] = Some(page);
                            transfer.pages_held += 1;
                            fetched += 1;
                        }
                        None => corrupt += 1,
                    }
                }
                transfer.bytes += bytes;
                if let Some(asked) = asked {
                    // The pages left out or corrupt are asked for again, elsewhere.
                    let before = transfer.pages_waiting.len();
                    transfer.give_back(asked);
                    refetch += (transfer.pages_waiting.len() - before) as u64;
                }
                if fetched > 0 {
                    transfer.note_holder(responder);
                }
                self.stats.checkpoint_pages_fetched += fetched;
                self.stats.checkpoint_bytes_fetched += bytes;
                self.stats.checkpoint_parts_corrupt += corrupt;
                progressed = fetched > 0;
            }
        }
        self.stats.checkpoint_pages_refetched += refetch;
        if progressed {
            transfer.progressed = ticks;
            // A transfer that moves is no reason to ask for state again.
            self.state_transfer_timeout.reset();
            if self.status == Status::Recovering {
                self.recovery_timeout.reset();
            }
        }
        if !keep.is_empty() {
            self.stats.checkpoint_pages_kept += keep.len() as u64;
            let fetching = &mut self.checkpoint_fetch;
            if fetching.store_root != Some(keep_root) {
                (fetching.store_root, fetching.store_pages) = (Some(keep_root), 0);
            }
            fetching.store_pages += keep.len() as u64;
            effects.push(Effect::KeepPages(KeepPages::Add {
                root: keep_root,
                pages: keep,
            }));
        }
        self.note_fetch_progress();
        let transfer = self
            .checkpoint_fetch
            .transfer
            .as_ref()
            .expect("matched above");
        if transfer.is_complete() {
            return self.complete_checkpoint_fetch(effects);
        }
        if transfer.sources.is_empty() {
            return self.abandon_checkpoint_fetch("no replica holds the checkpoint any more");
        }
        self.pump_checkpoint_fetch(effects);
    }

    /// Every tick: requests past their deadline are asked again from the next replica;
    /// a transfer without progress for long is given up (its pages stay for the next).
    pub(super) fn fetch_checkpoint_on_tick(&mut self, effects: &mut Vec<Effect>) {
        let ticks = self.ticks;
        let stall_ticks = STALL_TIMEOUTS * self.config.state_transfer_timeout_ticks;
        self.release_kept_pages_unused();
        let Some(transfer) = self.checkpoint_fetch.transfer.as_mut() else {
            return;
        };
        if transfer.preparing.is_some() {
            return self.finish_checkpoint_fetch_once_prepared(true, effects);
        }
        if ticks.saturating_sub(transfer.progressed) > stall_ticks {
            return self.abandon_checkpoint_fetch("no progress");
        }
        if ticks
            .saturating_sub(transfer.started)
            .is_multiple_of(PROGRESS_LOG_TICKS)
        {
            tracing::info!(
                replica = self.id,
                op = transfer.id.op,
                pages = transfer.id.pages(),
                held = transfer.pages_held,
                fetched_bytes = transfer.bytes,
                reused = transfer.reused,
                in_flight = transfer.in_flight.len(),
                sources = transfer.sources.len(),
                "fetching a checkpoint"
            );
        }
        let mut refetch = 0;
        let mut index = 0;
        while index < transfer.in_flight.len() {
            if transfer.in_flight[index].deadline <= ticks {
                let InFlight { to, asked, .. } = transfer.in_flight.swap_remove(index);
                // It may be down: ask the others until it answers again.
                transfer.holders.retain(|&id| id != to);
                if !transfer.suspects.contains(&to) {
                    transfer.suspects.push(to);
                }
                refetch += asked_pages(&asked);
                transfer.give_back(asked);
            } else {
                index += 1;
            }
        }
        self.stats.checkpoint_pages_refetched += refetch;
        self.pump_checkpoint_fetch(effects);
    }

    /// Pages read back from the store that no transfer took for `KEPT_TIMEOUTS`
    /// state-transfer timeouts after the restart: the replica caught up otherwise (or
    /// was asked for nothing), so their memory goes (the store keeps them until the next
    /// transfer replaces them).
    fn release_kept_pages_unused(&mut self) {
        let kept_ticks = KEPT_TIMEOUTS * self.config.state_transfer_timeout_ticks;
        if self.checkpoint_fetch.kept.is_empty() || self.ticks < kept_ticks {
            return;
        }
        tracing::info!(
            replica = self.id,
            pages = self.checkpoint_fetch.kept.len(),
            "no checkpoint fetch took the pages kept before the restart: released"
        );
        self.checkpoint_fetch.kept = HashMap::new();
    }

    /// Every page is in hand: the tree over them must give the root; then the service
    /// prepares the install off the loop, if it can, and the fetch finishes once it did
    /// (module docs, "Install").
    fn complete_checkpoint_fetch(&mut self, effects: &mut Vec<Effect>) {
        let witness = self.is_witness();
        let transfer = self.checkpoint_fetch.transfer.as_mut().expect("a transfer");
        let Some(held) = transfer.assemble() else {
            // Every run verified against the root, so the tree over them gives the root:
            // a bug, not a peer's fault. Start again rather than install it.
            let transfer = self.end_checkpoint_transfer();
            tracing::error!(
                replica = self.id,
                op = transfer.id.op,
                "fetched checkpoint does not give its root"
            );
            return self.drop_reason("checkpoint_part", "fetched checkpoint does not verify");
        };
        tracing::info!(
            replica = self.id,
            op = transfer.id.op,
            pages = transfer.id.pages(),
            fetched_bytes = transfer.bytes,
            reused = transfer.reused,
            ticks = self.ticks - transfer.started,
            "fetched a checkpoint"
        );
        // A witness installs a checkpoint's op, never its state (`witness`).
        let prepare = match witness {
            true => None,
            false => self.service.prepare_restore(&held.checkpoint.service),
        };
        match prepare {
            Some(prepare) if !prepare.is_done() => {
                let op = transfer.id.op;
                effects.push(Effect::BuildCheckpoint {
                    op,
                    build: CheckpointBuild::of_install(&prepare),
                });
                transfer.preparing = Some((held, prepare));
                tracing::info!(
                    replica = self.id,
                    op,
                    "preparing the install of the checkpoint off the loop"
                );
            }
            prepare => self.finish_checkpoint_fetch(held, prepare, effects),
        }
    }

    /// The service's preparation of the fetched checkpoint's install ran: the fetch
    /// finishes. Until it ran, the transfer counts as progressing; one no worker took is
    /// run here when `run_here` (at a tick: a driver may have no worker for it).
    pub(super) fn finish_checkpoint_fetch_once_prepared(
        &mut self,
        run_here: bool,
        effects: &mut Vec<Effect>,
    ) {
        let ticks = self.ticks;
        let Some(transfer) = self.checkpoint_fetch.transfer.as_mut() else {
            return;
        };
        let Some((_, prepare)) = &transfer.preparing else {
            return;
        };
        if !prepare.is_done() {
            if prepare.is_started() || !run_here {
                // A worker has it: the transfer moves.
                transfer.progressed = ticks;
                self.state_transfer_timeout.reset();
                if self.status == Status::Recovering {
                    self.recovery_timeout.reset();
                }
                return;
            }
            prepare.run();
        }
        let (held, prepare) = transfer.preparing.take().expect("checked above");
        self.stats.checkpoint_installs_prepared += 1;
        self.finish_checkpoint_fetch(held, Some(prepare), effects);
    }

    fn finish_checkpoint_fetch(
        &mut self,
        held: Held,
        prepared: Option<Deferred<PreparedRestore>>,
        effects: &mut Vec<Effect>,
    ) {
        let transfer = self.end_checkpoint_transfer();
        self.stats.checkpoint_fetches_completed += 1;
        self.note_fetch_progress();
        let checkpoint = held.checkpoint.clone();
        self.checkpoint_fetch.fetched = Some(held);
        self.checkpoint_fetch.prepared = prepared;
        let state = ReceivedState::new(transfer.new_state, Some(checkpoint));
        self.route_state(transfer.route, state, effects);
        self.release_fetched_once_installed();
    }

    /// The service's preparation of `checkpoint`'s install, if it is the checkpoint last
    /// fetched (the same pages) and the service prepared one.
    pub(super) fn prepared_install_of(
        &self,
        checkpoint: &Checkpoint,
    ) -> Option<Deferred<PreparedRestore>> {
        let fetched = self.checkpoint_fetch.fetched.as_ref()?;
        let same = fetched.checkpoint.op == checkpoint.op
            && fetched
                .checkpoint
                .service
                .shares_pages_with(&checkpoint.service);
        same.then(|| self.checkpoint_fetch.prepared.clone())
            .flatten()
    }

    /// Takes the transfer under way out, remembering the replicas that did not answer it
    /// for the next ones (`remember_suspects`).
    fn end_checkpoint_transfer(&mut self) -> Box<Transfer> {
        let transfer = self.checkpoint_fetch.transfer.take().expect("a transfer");
        let ticks = self.ticks;
        self.checkpoint_fetch
            .remember_suspects(&transfer.suspects, ticks);
        transfer
    }

    fn abandon_checkpoint_fetch(&mut self, reason: &'static str) {
        let transfer = self.end_checkpoint_transfer();
        self.note_fetch_progress();
        tracing::info!(
            replica = self.id,
            op = transfer.id.op,
            held = transfer.pages_held,
            pages = transfer.id.pages(),
            reason,
            "checkpoint fetch given up"
        );
        self.drop_reason("checkpoint_part", reason);
        // Its pages are not kept: a transfer that starts later reuses what this replica
        // holds, and asking for state again (the state-transfer timeout) names the
        // checkpoint to fetch.
        self.state_transfer_pending = false;
    }
}

/// A replica whose request timed out is not tried first again for this many
/// state-transfer timeouts.
const SUSPECT_TIMEOUTS: u64 = 8;

/// A transfer under way is logged this often (100 ticks: a second in the runtime).
const PROGRESS_LOG_TICKS: u64 = 100;

/// Pages read back from the store are released if no transfer took them within this many
/// state-transfer timeouts of the restart.
const KEPT_TIMEOUTS: u64 = 8;

/// A transfer without progress for this many state-transfer timeouts is given up.
const STALL_TIMEOUTS: u64 = 8;

/// The level of manifest runs: as many digests as fit a quarter of a message.
fn manifest_level(message_bytes_max: u32) -> u8 {
    let digests = (message_bytes_max as usize / 4 / DIGEST_BYTES).max(1);
    (usize::BITS - 1 - digests.leading_zeros()).min(31) as u8
}

fn asked_pages(asked: &Asked) -> u64 {
    match asked {
        Asked::Run(_) => 0,
        Asked::Pages(indexes) => indexes.len() as u64,
    }
}
