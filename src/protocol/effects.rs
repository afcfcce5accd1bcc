//! What the core asks its driver to do. The core never performs I/O: each input writes
//! effects into a caller-owned buffer, and the driver (runtime or simulator) carries them
//! out in order.
//!
//! # Writes come before the messages that rely on them
//!
//! Every change to what a replica must remember across a crash (its log, its checkpoint,
//! its view and last normal view) is an [`Effect::Write`], numbered in the order issued.
//! The driver makes writes durable in that order and reports each completion with
//! [`Replica::on_persisted`](super::Replica::on_persisted). The core releases a message
//! that vouches for written state only once those writes completed:
//!
//! - a PrepareOk, DoViewChange, StartView, StartViewChange, RecoveryResponse or NewState
//!   waits for every write issued up to the end of the input that produced it (it speaks
//!   for the log and the view);
//! - a Prepare or Commit waits for the pending [`Write::State`] only (the primary sends a
//!   Prepare while its own append is under way, and counts its own acknowledgement only
//!   once that append completed);
//! - replies, Recovery and GetState rely on nothing written.
//!
//! Messages held back keep their order. A driver without durable storage completes every
//! write at once (call `on_persisted` right after the input): then every message leaves
//! in the same input that produced it, in order, as if writes did not exist.
//!
//! # Kept pages are a cache, outside the rule
//!
//! [`Effect::KeepPages`] hands the driver the checkpoint pages a fetch verified, so that a
//! replica killed mid-transfer resumes instead of starting over. Nothing relies on them:
//! a page read back is used only once its SHA-256 matches a digest of a manifest run
//! verified against a root a NewState named (`replica/fetch_checkpoint.rs`). So they are
//! never numbered, never completed, never waited for; a driver may write them late,
//! lose them, or ignore them (drivers without durable storage do).

use super::configuration::ReplicaId;
use super::message::{Checkpoint, ClientId, Message, Op, View};
use crate::service::merkle::MerkleTree;
use crate::service::snapshot::Digest;
use crate::service::{Deferred, Page, PreparedRestore, WeakDeferred};

/// The number of a write: writes are numbered 1, 2, ... in the order issued, and complete
/// in that order.
pub type WriteId = u64;

/// One thing for the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send `message` to replica `to` (its identity: the receiver may be a member of
    /// another epoch than the sender's, see `Configuration`).
    Send {
        /// The receiving replica.
        to: ReplicaId,
        /// The message.
        message: Message,
    },
    /// Send `message` to every other member of `audience` in the configuration of the
    /// message's epoch ([`Replica::configuration_of`](super::Replica::configuration_of)):
    /// encode once, write to each.
    Broadcast {
        /// The message.
        message: Message,
        /// Which members it goes to.
        audience: Audience,
    },
    /// Send `message` (a `Reply`) to `client`, if it is connected here.
    Reply {
        /// The client.
        client: ClientId,
        /// The route token the driver handed in with the request this answers (or with
        /// the client's request being handled when it was made), if any: the driver
        /// writes the reply where the token says, if that is still live, and otherwise
        /// finds the client itself. `None` for a reply to a request this replica did not
        /// admit as primary with a token (a registration, a request ordered in an earlier
        /// view or epoch, a read answered later, a NewEpoch answer at the epoch's end).
        route: Option<super::client_table::RouteToken>,
        /// The reply.
        message: Message,
    },
    /// Run `build` off the event loop (a worker thread), then call
    /// [`Replica::on_checkpoint_built`](super::Replica::on_checkpoint_built). Either the
    /// replica took a checkpoint at `op` and goes on executing while it is built (until it
    /// is built, its latest checkpoint is the previous one), or it fetched the checkpoint
    /// at `op` and the service prepares its install (paper 5.1; see
    /// [`CheckpointBuild::is_install`]). A build the replica abandoned (it installed
    /// another state, or gave the fetch up) is not run.
    BuildCheckpoint {
        /// The checkpoint's op.
        op: Op,
        /// The build.
        build: CheckpointBuild,
    },
    /// Make `write` durable, after every write with a lower id, then report it with
    /// `Replica::on_persisted(id)`.
    Write {
        /// The write's number.
        id: WriteId,
        /// What changed.
        write: Write,
    },
    /// Keep (or forget) pages a checkpoint fetch verified, if the driver can: best effort,
    /// outside the ordering rule (see the module docs). Nothing waits for it.
    KeepPages(KeepPages),
}

/// The members an [`Effect::Broadcast`] goes to (the sender never sends to itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Every member.
    Members,
    /// The members that are not witnesses: a primary's Prepares while every active
    /// answers in time (paper 6.1, `replica/witness.rs`).
    Actives,
}

/// What [`Effect::KeepPages`] asks of a driver's store of fetched pages. The store holds
/// the pages filed under one root (normally the checkpoint being fetched; while the
/// replica's own checkpoint is not durable yet, the earlier transfer's root, and then at
/// most twice the pages of the checkpoint being fetched: `fetch_checkpoint.rs`, "Pages
/// kept across a crash").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepPages {
    /// Add `pages`, verified pages, filed under `root`; pages kept under another root
    /// are forgotten first (a new target starts afresh).
    Add {
        /// The root of the checkpoint being fetched.
        root: Digest,
        /// The pages, each verified against its digest.
        pages: Vec<Page>,
    },
    /// Forget every kept page: the fetched checkpoint is installed and durable (or the
    /// replica no longer fetches).
    Clear,
}

/// A change to what a replica must remember across a crash. Within one input the core
/// issues them in this order: checkpoint, log, state; so a crash between two of them
/// leaves a log newer than the state that describes it, never a state that claims a log
/// the replica does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// A checkpoint was taken or installed at `op` (read it with `Replica::checkpoint`).
    Checkpoint {
        /// The checkpoint's op.
        op: Op,
    },
    /// The log was replaced by an empty one after `base`: a checkpoint at `base` was
    /// installed from another replica.
    LogReset {
        /// The op before the first entry the log may hold now.
        base: Op,
    },
    /// A witness's log (paper 6.1) holds no entry at or below `base` any more: it trimmed
    /// them (the actives executed them) or skipped committed ops to start after `base`.
    /// Entries above `base` stay. A witness keeps no checkpoint, so this, not a
    /// `Checkpoint`, is what lets its store forget; only witnesses issue it.
    LogStart {
        /// The op before the first entry the log may hold now.
        base: Op,
        /// The timestamp of the op at `base` (later entries' timestamps exceed it).
        timestamp: u64,
    },
    /// The replica holds no checkpoint any more: it became a witness (paper 6.1), which
    /// holds no service state. Its log stays; from now on its store trims it as a
    /// witness's (`LogStart`). Issued before the input's log writes.
    CheckpointDropped,
    /// Every entry after `after` was removed (a view change replaced the uncommitted
    /// suffix); later appends reuse those op numbers.
    LogTruncate {
        /// The last op kept.
        after: Op,
    },
    /// Entries `from..=to` were appended. The driver reads them with `Replica::entry`
    /// before the replica's next input (a later write of the same input may remove some
    /// of them again: then a `LogTruncate` or `LogReset` follows).
    LogAppend {
        /// The first op appended.
        from: Op,
        /// The last op appended.
        to: Op,
    },
    /// The replica moved to another epoch: read the configuration with
    /// `Replica::configuration` and the op the epoch started at with
    /// `Replica::epoch_start`. Issued before the `State` write that names the epoch.
    Configuration {
        /// The new epoch.
        epoch: u32,
    },
    /// The replica's view, last normal view or epoch changed.
    State(DurableState),
    /// The committed entries an active that was a witness in the epoch before keeps
    /// aside until its own log reaches them changed: read them with
    /// `Replica::former_witness_log` (`None`: it keeps none any more, they are in its log
    /// or no longer needed). Its acknowledgements counted towards them, so its store must
    /// keep them as it kept its witness log. Issued before the input's log writes when
    /// the replica starts keeping them (its log is reset in the same input), after them
    /// when it stops.
    FormerWitnessLog,
    /// With witnesses (paper 6.1): the replica heard that f+1 actives executed every op
    /// up to this one (`actives_commit`). Knowledge, kept so that a restart from storage
    /// still knows which ops a witness may skip (a log that starts at a checkpoint answers
    /// a witness below it only once this reaches its base); nothing waits for it. It
    /// grows within an epoch and starts again (at the log's base) at a move to an epoch
    /// with witnesses (`epoch::move_to_epoch`): the lowered value is issued before the input's
    /// `Configuration`, so that no store pairs the new epoch with the old number.
    ActivesCommit(Op),
}

/// What a replica must never forget about its place in the sequence of views: a view
/// once entered is a promise not to act in an older one (paper 4.2), and the last normal
/// view says which view's log the replica holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    /// The configuration epoch.
    pub epoch: u32,
    /// The current view. Never decreases.
    pub view: View,
    /// The latest view in which the replica was normal; ≤ `view`.
    pub last_normal_view: View,
    /// Recovering (paper 4.3): the log is being fetched and speaks for nothing yet. A
    /// replica that crashes while recovering recovers again.
    pub recovering: bool,
    /// The replica has been normal or changing views at least once: it may have
    /// acknowledged ops, so it never again answers a recovery as empty (a brand-new
    /// cluster is one where nobody has joined yet).
    pub joined: bool,
}

/// What a message waits for before it may leave (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reliance {
    /// Every write issued so far.
    AllWrites,
    /// The latest state write.
    State,
    /// Nothing.
    Nothing,
}

impl Effect {
    /// What this effect relies on being durable before it is carried out.
    pub(crate) fn reliance(&self) -> Reliance {
        use super::message::Body;
        let message = match self {
            Effect::Send { message, .. } | Effect::Broadcast { message, .. } => message,
            Effect::Reply { .. }
            | Effect::Write { .. }
            | Effect::BuildCheckpoint { .. }
            | Effect::KeepPages(_) => return Reliance::Nothing,
        };
        match message.body {
            Body::Prepare(_) | Body::Commit(_) => Reliance::State,
            // A StartEpoch speaks only of committed ops.
            Body::Request(_)
            | Body::Reply(_)
            | Body::Recovery(_)
            | Body::GetState(_)
            | Body::StartEpoch(_) => Reliance::Nothing,
            // A checkpoint's parts are committed state, checked against a root that a
            // NewState (which relies on every write) named.
            Body::GetCheckpoint(_) | Body::CheckpointPart(_) => Reliance::Nothing,
            // EpochStarted lets a replaced replica shut down: the sender's state for the
            // new epoch must be durable first.
            Body::PrepareOk(_)
            | Body::StartViewChange(_)
            | Body::DoViewChange(_)
            | Body::StartView(_)
            | Body::RecoveryResponse(_)
            | Body::NewState(_)
            | Body::EpochStarted => Reliance::AllWrites,
        }
    }
}

/// A checkpoint with the Merkle tree over its pages, built off the event loop.
#[derive(Debug)]
pub struct BuiltCheckpoint {
    pub(crate) checkpoint: Checkpoint,
    pub(crate) tree: MerkleTree,
}

/// The build of a checkpoint, as the driver sees it: something to run on a worker thread
/// (see [`Effect::BuildCheckpoint`]). It holds the build weakly: running one the replica
/// abandoned does nothing.
#[derive(Clone, Debug)]
pub struct CheckpointBuild(Work);

/// What a [`CheckpointBuild`] runs.
#[derive(Clone, Debug)]
enum Work {
    /// A checkpoint taken here, built.
    Build(WeakDeferred<BuiltCheckpoint>),
    /// A fetched checkpoint's install, prepared (`StateMachine::prepare_restore`).
    Install(WeakDeferred<PreparedRestore>),
}

impl CheckpointBuild {
    pub(crate) fn of(build: &Deferred<BuiltCheckpoint>) -> CheckpointBuild {
        CheckpointBuild(Work::Build(build.downgrade()))
    }

    pub(crate) fn of_install(prepare: &Deferred<PreparedRestore>) -> CheckpointBuild {
        CheckpointBuild(Work::Install(prepare.downgrade()))
    }

    /// Whether this prepares the install of a fetched checkpoint (not a build of one
    /// taken here): for the driver's logs and metrics.
    pub fn is_install(&self) -> bool {
        matches!(self.0, Work::Install(_))
    }

    /// Builds the checkpoint, unless the replica abandoned it (or it was built already);
    /// returns whether the replica still wants it.
    pub fn run(&self) -> bool {
        match &self.0 {
            Work::Build(build) => build.run(),
            Work::Install(prepare) => prepare.run(),
        }
    }

    /// Tells the replica that a worker took the build and will run it without the
    /// replica's help: a primary then stops ordering ops before the checkpoint op at
    /// which it would have to wait for the build, rather than stall its loop there
    /// (`replica/execute.rs`), and a fetch waits for its install's preparation rather than
    /// run it on the loop. Running it says so too; a driver calls this when it hands the
    /// build to a worker that runs every build it is given. A build whose run panicked
    /// counts as not started again.
    pub fn start(&self) {
        match &self.0 {
            Work::Build(build) => build.start(),
            Work::Install(prepare) => prepare.start(),
        }
    }
}

/// Two handles are equal when they name the same build.
impl PartialEq for CheckpointBuild {
    fn eq(&self, other: &CheckpointBuild) -> bool {
        match (&self.0, &other.0) {
            (Work::Build(one), Work::Build(other)) => one.same(other),
            (Work::Install(one), Work::Install(other)) => one.same(other),
            _ => false,
        }
    }
}

impl Eq for CheckpointBuild {}
