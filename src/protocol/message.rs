//! The protocol's messages, as the core sees them after the wire's validation gate.
//!
//! Every message carries the sender's `epoch` and `view` (paper 4, 7) in its [`Message`]
//! envelope. Bodies hold `bytes::Bytes`, so a decoded operation is a slice of the
//! connection's read buffer and cloning an entry never copies its payload.

use super::configuration::{Configuration, ReplicaId};
use crate::service::merkle::MerkleTree;
use crate::service::{Digest, Page, Snapshot, DIGEST_BYTES};
use bytes::Bytes;

/// A view number (paper 4). The primary of view `v` is replica `v mod n`.
pub type View = u32;
/// The highest view a message may carry (the wire's gate and the core both refuse more):
/// no correct replica gets anywhere near it (a view change every millisecond for 49
/// days), and the headroom above it keeps view arithmetic from wrapping.
pub const VIEW_MAX: View = View::MAX - (1 << 16);
/// An op number: the position of an entry in the log, starting at 1 (0 means "none").
pub type Op = u64;
/// The index of a replica in the configuration.
pub type ReplicaIndex = u8;
/// A client's identity, chosen at random by the client (never 0).
pub type ClientId = u64;
/// A client session number: the op number at which the session's registration committed.
pub type Session = u64;
/// A request number within a session; the first request after registration is 1.
pub type RequestNumber = u32;

/// What an entry asks the replicas to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Operation {
    /// Open a session for `client`. Its session number is the op it commits at (paper 4.5:
    /// a restarted client registers afresh instead of guessing request numbers).
    Register = 1,
    /// Apply the body to the service's state machine.
    Apply = 2,
    /// Paper 7.1's RECONFIGURATION: the body is the next epoch's configuration
    /// ([`Configuration::encode`]). It is the last op of its epoch: once it is ordered the
    /// primary orders nothing else, and executing it moves every replica to the next epoch.
    Reconfigure = 3,
    /// A strict read (paper 6.3's baseline): ordered through the log like `Apply`, so it
    /// is linearizable and exactly-once like any request, but executed with
    /// [`StateMachine::query`](crate::service::StateMachine::query): it never changes
    /// the service's state.
    Query = 4,
    /// A read at any replica (paper 6.3.2), never ordered and never a log entry: the body
    /// is the op the client has seen (`u64`, see [`Request::read_seen`]) followed by the
    /// query. A replica in normal status answers it with `query` once it has executed
    /// that op (a [`ReplyStatus::Read`] naming its commit number), so a session reads its
    /// own writes and never goes back in time; it may be stale otherwise.
    Read = 5,
    /// A read at the primary under a lease (paper 6.3.1), never ordered and never a log
    /// entry: the body is laid out as a `Read`'s (the op the client has seen, then the
    /// query). The primary answers it from its state (a [`ReplyStatus::Read`] naming its
    /// commit number) only while it holds leases from f backups and has committed the log
    /// its view started with (`protocol::replica::lease`); otherwise it answers `Behind`,
    /// and the client sends the query again as a strict read (`Query`), through the log.
    /// Linearizable either way. A backup drops it (not the primary).
    LeaseRead = 6,
}

impl Operation {
    /// The operation for a wire code, if any.
    pub fn from_u8(code: u8) -> Option<Operation> {
        match code {
            1 => Some(Operation::Register),
            2 => Some(Operation::Apply),
            3 => Some(Operation::Reconfigure),
            4 => Some(Operation::Query),
            5 => Some(Operation::Read),
            6 => Some(Operation::LeaseRead),
            _ => None,
        }
    }

    /// Whether an entry of the log may hold this operation: every one but the reads
    /// (`Read`, `LeaseRead`), which are answered where they arrive and never ordered.
    pub fn is_ordered(self) -> bool {
        !self.carries_seen()
    }

    /// Whether a request of this operation starts its body with the op its client has
    /// seen ([`READ_SEEN_BYTES`]): the unordered reads. The wire's gate refuses a shorter
    /// body.
    pub fn carries_seen(self) -> bool {
        matches!(self, Operation::Read | Operation::LeaseRead)
    }
}

/// Bytes of the seen op at the front of a [`Operation::Read`] request's body.
pub const READ_SEEN_BYTES: usize = 8;

/// One log entry: a client request as the primary ordered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The client that asked.
    pub client: ClientId,
    /// The client's session (0 for `Register`).
    pub session: Session,
    /// The request number within the session (0 for `Register`).
    pub request: RequestNumber,
    /// The primary's clock when it ordered the entry (paper 4.4): every replica applies
    /// the same value, so the service stays deterministic.
    pub timestamp: u64,
    /// What to do.
    pub operation: Operation,
    /// The service operation's bytes (empty for `Register`).
    pub body: Bytes,
}

impl Entry {
    /// Bytes this entry occupies on the wire and in budgets (header fields plus body).
    pub fn size_bytes(&self) -> usize {
        ENTRY_HEADER_BYTES + self.body.len()
    }
}

/// Fixed bytes per entry on the wire: client, session, request, timestamp, operation,
/// body length.
pub const ENTRY_HEADER_BYTES: usize = 8 + 8 + 4 + 8 + 1 + 4;

/// A message: the envelope every message carries, and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The configuration epoch of the sender (paper 7).
    pub epoch: u32,
    /// The sender's view (for a client: its best guess of the current view).
    pub view: View,
    /// The sending replica (0 for messages from clients).
    pub replica: ReplicaIndex,
    /// What the message says.
    pub body: Body,
}

/// The body of a message: one variant per command of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Client → primary.
    Request(Request),
    /// Replica → client.
    Reply(Reply),
    /// Primary → backups: a batch of entries with consecutive op numbers (paper 4.1, 6.2).
    Prepare(Prepare),
    /// Backup → primary: cumulative acknowledgement of every op ≤ `op` in this view.
    PrepareOk(PrepareOk),
    /// Primary → backups when idle: the commit number; doubles as the heartbeat.
    Commit(Commit),
    /// Paper 4.2 step 1.
    StartViewChange(StartViewChange),
    /// Paper 4.2 step 2, with only the log suffix after the sender's commit (5.3).
    DoViewChange(DoViewChange),
    /// Paper 4.2 step 3.
    StartView(StartView),
    /// Paper 4.3 step 1.
    Recovery(Recovery),
    /// Paper 4.3 step 2.
    RecoveryResponse(RecoveryResponse),
    /// Paper 5.2: ask for the log after `op`.
    GetState(GetState),
    /// Paper 5.2 / 5.1: the answer, naming a checkpoint when the entries are trimmed.
    NewState(NewState),
    /// Paper 5.1: ask for part of a checkpoint named in a NewState (its manifest, or
    /// pages).
    GetCheckpoint(GetCheckpoint),
    /// The answer to a [`GetCheckpoint`].
    CheckpointPart(CheckpointPart),
    /// Paper 7.1 step 3 and 7.3 step 3: an epoch started; join it.
    StartEpoch(StartEpoch),
    /// Paper 7.2 step 3: a member of the new epoch holds its starting state.
    EpochStarted,
}

/// A client's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Who asks.
    pub client: ClientId,
    /// Its session (0 when registering).
    pub session: Session,
    /// Its request number (0 when registering).
    pub request: RequestNumber,
    /// What to do.
    pub operation: Operation,
    /// The service operation.
    pub body: Bytes,
}

impl Request {
    /// The body of a [`Operation::Read`] request: the op the client has seen, then the
    /// query (the query is copied once, when the client builds the request).
    pub fn read_body(seen: Op, query: &[u8]) -> Bytes {
        let mut body = Vec::with_capacity(READ_SEEN_BYTES + query.len());
        body.extend_from_slice(&seen.to_le_bytes());
        body.extend_from_slice(query);
        Bytes::from(body)
    }

    /// For a [`Operation::Read`] or [`Operation::LeaseRead`] request, the op the client
    /// has seen; `None` for any other operation, or a body too short to hold it (the
    /// wire's gate refuses those).
    pub fn read_seen(&self) -> Option<Op> {
        if !self.operation.carries_seen() {
            return None;
        }
        let seen: [u8; READ_SEEN_BYTES] = self.body.get(..READ_SEEN_BYTES)?.try_into().ok()?;
        Some(Op::from_le_bytes(seen))
    }

    /// For a [`Operation::Read`] or [`Operation::LeaseRead`] request, the query after the
    /// seen op (a slice, not a copy); empty for any other operation.
    pub fn read_query(&self) -> Bytes {
        match self.read_seen() {
            Some(_) => self.body.slice(READ_SEEN_BYTES..),
            None => Bytes::new(),
        }
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReplyStatus {
    /// Executed; `result` holds the service's answer. For `Register`, `op` is the session.
    Ok = 1,
    /// The session is not (or no longer) in the client table: register again.
    Evicted = 2,
    /// The request was refused before it was ordered (its body exceeds the replicas'
    /// `request_body_bytes_max`, or a reconfiguration the primary refuses, with the reason
    /// in `result`); it did not execute, and its request number is unused.
    Rejected = 3,
    /// The request was for an earlier epoch, or reached a replica that is not a member of
    /// the current one (paper 7.2): `result` is the current configuration
    /// ([`Configuration::encode`]). The request did not execute; send it to the new members.
    NewEpoch = 4,
    /// The answer to a [`Operation::Read`] (paper 6.3.2): `result` is the query's answer
    /// against the replica's state after executing every op ≤ `op`, its commit number,
    /// which is at least the op the read said it had seen. `request` echoes the read's
    /// number (reads are numbered apart from the client table's requests).
    Read = 5,
    /// A [`Operation::Read`] the replica cannot answer: it is not in normal status, or it
    /// did not execute the op the read had seen in time (`op`: its commit number), or it
    /// holds too many waiting reads. Nothing executed; ask another replica. For a
    /// [`Operation::LeaseRead`]: the primary holds no lease it may answer under; nothing
    /// executed, send the query through the log (`Query`).
    Behind = 6,
}

impl ReplyStatus {
    /// The status for a wire code, if any.
    pub fn from_u8(code: u8) -> Option<ReplyStatus> {
        match code {
            1 => Some(ReplyStatus::Ok),
            2 => Some(ReplyStatus::Evicted),
            3 => Some(ReplyStatus::Rejected),
            4 => Some(ReplyStatus::NewEpoch),
            5 => Some(ReplyStatus::Read),
            6 => Some(ReplyStatus::Behind),
            _ => None,
        }
    }
}

/// A replica's answer to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// To whom.
    pub client: ClientId,
    /// The session the request belonged to (for `Register`: the new session).
    pub session: Session,
    /// The request answered.
    pub request: RequestNumber,
    /// The op the request committed at (0 when evicted).
    pub op: Op,
    /// How it ended.
    pub status: ReplyStatus,
    /// The service's answer.
    pub result: Bytes,
}

/// A batch of entries for ops `op_first ..= op_first + entries.len() - 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepare {
    /// The op number of the first entry.
    pub op_first: Op,
    /// The primary's commit number (piggybacked, paper 4.1 step 5).
    pub commit: Op,
    /// As [`Commit::actives_commit`] (0 without witnesses).
    pub actives_commit: Op,
    /// The primary's monotonic clock when it sent this message, which a backup's
    /// PrepareOk echoes to grant a lease (paper 6.3.1, `replica::lease`); 0: no lease
    /// asked.
    pub stamp: LeaseStamp,
    /// The entries, in op order; never empty.
    pub entries: Vec<Entry>,
}

/// A primary's monotonic clock reading (nanoseconds, in its own process's time base)
/// when it sent a Prepare or Commit; 0 means "none" (see [`Prepare::stamp`]).
pub type LeaseStamp = u64;

impl Prepare {
    /// The op number of the last entry.
    pub fn op_last(&self) -> Op {
        debug_assert!(!self.entries.is_empty());
        self.op_first + self.entries.len() as Op - 1
    }
}

/// A cumulative acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrepareOk {
    /// The sender holds every entry ≤ `op` of the primary's log in this view.
    pub op: Op,
    /// The sender's commit number: every op up to it executed there (a witness's: known
    /// committed). The primary tells the witnesses the lowest of its actives'
    /// ([`Commit::actives_commit`]). At most `op`.
    pub commit: Op,
    /// The stamp of the Prepare or Commit this answers: the sender grants the primary a
    /// lease counted from it, and promises not to take part in a view change until the
    /// lease it granted ran out on its own clock (paper 6.3.1); 0: no lease granted.
    pub stamp: LeaseStamp,
}

/// The commit number, sent when the primary has nothing to prepare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The primary's commit number.
    pub commit: Op,
    /// The highest op that f+1 active members (not witnesses, paper 6.1) executed, by
    /// the commit numbers they reported to this primary in its view (its own included;
    /// 0 for one that has not). Every op up to it is state at f+1 members, so no replica
    /// needs to keep it in its log for a witness (`Replica::trim_log`). At most `commit`.
    pub actives_commit: Op,
    /// As [`Prepare::stamp`].
    pub stamp: LeaseStamp,
}

/// A call for a view change to the envelope's view (paper 4.2 step 1).
///
/// Sent in two forms. A replica that has started the view change sends it with
/// `sender_view` equal to the envelope's view, as in the paper. A replica that only wants
/// one (its primary went silent) sends it from its current, lower view: it asks, and
/// changes nothing of its own until f others ask for the same view (the idea of Raft's
/// pre-vote), so a replica cut off from a healthy cluster never raises its view alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartViewChange {
    /// The sender's own view; at most the envelope's view. Views never go back, so a
    /// sender whose view is above the receiver's can never take part in the receiver's
    /// view again: only a view change can bring it back, and the receiver follows even a
    /// view it considers healthy.
    pub sender_view: View,
}

/// A replica's log state for the new primary (paper 4.2 step 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoViewChange {
    /// The latest view in which the sender's status was normal.
    pub last_normal_view: View,
    /// The sender's op number.
    pub op: Op,
    /// The sender's commit number.
    pub commit: Op,
    /// With witnesses (paper 6.1): the highest actives' commit the sender knows in this
    /// epoch (what its primaries reported). The new primary counts the actives afresh
    /// in its view, from 0 for those that have not answered: without this, one restored
    /// from a checkpoint that never heard the number refused the witnesses the log after
    /// its checkpoint (`witness`). 0 without witnesses.
    pub actives_commit: Op,
    /// The sender's entries after `commit` (ops `commit + 1 ..= op`).
    pub entries: Vec<Entry>,
}

/// The new primary's log (paper 4.2 step 3), as a suffix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartView {
    /// The top of the new log.
    pub op: Op,
    /// The new commit number.
    pub commit: Op,
    /// The op number of `entries[0]`; `op_first + entries.len() - 1 == op`.
    pub op_first: Op,
    /// A suffix of the new log.
    pub entries: Vec<Entry>,
}

/// A recovering replica's call for help (paper 4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Identifies this recovery attempt; answers carry it back.
    pub nonce: u64,
}

/// An answer to [`Recovery`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryResponse {
    /// The nonce of the recovery being answered.
    pub nonce: u64,
    /// The responder holds no state it can vouch for: it is recovering itself, or its log
    /// has never held an entry. When every other replica says so, no op can have
    /// committed (that takes f+1 holders), so the cluster is new.
    pub empty: bool,
    /// The responder is normal in its view: the answer counts toward the f+1 a recovery
    /// needs, empty or not (paper 4.3). An empty answer from a normal primary says
    /// that its view prepared nothing, which a recovering replica that may have lost
    /// acknowledged ops can build on (`recovery::new_cluster_primary_op`); an empty
    /// answer from a recovering replica says nothing of the sort.
    pub normal: bool,
    /// The responder's op number (meaningful from the primary only).
    pub op: Op,
    /// The responder's commit number (meaningful from the primary only).
    pub commit: Op,
    /// The op the responder's epoch started after (its RECONFIGURATION's op; 0 in epoch
    /// 0 or when unknown): a replica that recovers into a later epoch learns it here.
    pub epoch_start: Op,
}

/// Ask for the log after `op` (paper 5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GetState {
    /// The asker holds every entry ≤ `op`.
    pub op: Op,
    /// Set by a new member warming up before the reconfiguration that adds it (paper
    /// 7.5): it is no member of the asked replica's epoch (the envelope's index is
    /// `NOT_A_MEMBER`), so it names itself, and is answered with committed state only.
    pub learner: Option<ReplicaId>,
}

/// A service checkpoint (paper 5.1): the state after executing every op ≤ `op`, as pages.
///
/// Both parts are [`Snapshot`]s, so one representation (pages with digests) covers the
/// whole checkpoint: the wire carries it as pages, verified one by one, and a Merkle tree
/// or a page-diff transfer can work on its pages without knowing which part they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last op the checkpoint includes.
    pub op: Op,
    /// The timestamp of that op, so the clock stays monotonic after a restore.
    pub timestamp: u64,
    /// The service's snapshot ([`StateMachine::snapshot`](crate::service::StateMachine)).
    pub service: Snapshot,
    /// The client table's snapshot: its encoding cut into pages
    /// ([`Snapshot::from_blob`]).
    pub clients: Snapshot,
}

impl Checkpoint {
    /// Every page of the checkpoint: the service's, then the client table's.
    pub fn pages(&self) -> impl Iterator<Item = &Page> {
        self.service.pages().iter().chain(self.clients.pages())
    }
}

/// What names a checkpoint (paper 5.1): its op and timestamp, how its pages split
/// between the service and the client table, and the root of the Merkle tree over all
/// its pages ([`MerkleTree`]), which every page of it can be checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointId {
    /// The last op the checkpoint includes.
    pub op: Op,
    /// The timestamp of that op.
    pub timestamp: u64,
    /// How many of its pages are the service's (the client table's follow).
    pub service_pages: u32,
    /// How many pages the client table's snapshot has.
    pub clients_pages: u32,
    /// The root of the Merkle tree over every page digest, service's then clients'.
    pub root: Digest,
}

/// Bytes of a [`CheckpointId`] on the wire.
pub const CHECKPOINT_ID_BYTES: usize = 8 + 8 + 4 + 4 + DIGEST_BYTES;

impl CheckpointId {
    /// The name of `checkpoint`, whose pages `tree` was built over.
    pub fn of(checkpoint: &Checkpoint, tree: &MerkleTree) -> CheckpointId {
        debug_assert_eq!(tree.leaves(), checkpoint.pages().count());
        CheckpointId {
            op: checkpoint.op,
            timestamp: checkpoint.timestamp,
            service_pages: u32::try_from(checkpoint.service.pages().len())
                .expect("a snapshot's pages are counted in u32"),
            clients_pages: u32::try_from(checkpoint.clients.pages().len())
                .expect("a snapshot's pages are counted in u32"),
            root: tree.root(),
        }
    }

    /// How many pages the checkpoint has.
    pub fn pages(&self) -> u64 {
        u64::from(self.service_pages) + u64::from(self.clients_pages)
    }
}

/// Ask for part of the checkpoint `root` names (paper 5.1), from any replica that may
/// hold it. The asker names itself, since it may be no member of the asked replica's
/// epoch; the answer goes to that identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetCheckpoint {
    /// The checkpoint's op (for logs: the root names it).
    pub op: Op,
    /// The root of the checkpoint's Merkle tree.
    pub root: Digest,
    /// Who asks.
    pub asker: ReplicaId,
    /// What part.
    pub part: CheckpointRequest,
}

/// The part of a checkpoint a [`GetCheckpoint`] asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointRequest {
    /// The page digests of the aligned run of `2^level` pages from `start`, with the
    /// proof that connects them to the root.
    Manifest {
        /// The run has `2^level` leaves (fewer at the end of the pages).
        level: u8,
        /// The first page of the run (a multiple of `2^level`).
        start: u32,
    },
    /// The pages at these indexes (strictly increasing); the answer may hold a prefix.
    Pages(Vec<u32>),
}

/// The answer to a [`GetCheckpoint`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointPart {
    /// The checkpoint's op.
    pub op: Op,
    /// The root of the checkpoint's Merkle tree.
    pub root: Digest,
    /// Who answers (the asker stops asking a replica that lacks the checkpoint).
    pub responder: ReplicaId,
    /// What it holds.
    pub content: CheckpointContent,
}

/// What a [`CheckpointPart`] holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointContent {
    /// The page digests of an aligned run and the proof for it
    /// ([`crate::service::merkle::verify_run`]).
    Manifest {
        /// As asked.
        level: u8,
        /// As asked.
        start: u32,
        /// The run's page digests (none past the last page).
        digests: Vec<Digest>,
        /// The sibling digests from the run up to the top, bottom up.
        proof: Vec<Digest>,
    },
    /// Pages with their indexes, increasing: a prefix of those asked for, as many as
    /// fit the answer.
    Pages(Vec<(u32, Bytes)>),
    /// The responder does not hold this checkpoint (any more).
    Unavailable,
}

/// A [`CheckpointPart`] of pages whose digests the driver computed off the core's thread
/// ([`HashedPart::hash`]; `Replica::on_hashed_checkpoint_part`), so that the receiver
/// compares each page's digest with its manifest's instead of hashing on its own thread.
/// Nothing here is taken on trust: a [`Page`]'s digest is the digest of its bytes by
/// construction (its fields are private, and its constructors hash or check), and the
/// wire carries no digest of a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashedPart {
    /// The checkpoint's op.
    pub op: Op,
    /// The root of the checkpoint's Merkle tree.
    pub root: Digest,
    /// Who answers.
    pub responder: ReplicaId,
    /// The pages with their indexes, as the part held them.
    pub pages: Vec<(u32, Page)>,
}

impl HashedPart {
    /// Hashes every page of `part`; a part that holds no pages is given back as it is.
    pub fn hash(part: CheckpointPart) -> Result<HashedPart, CheckpointPart> {
        let CheckpointContent::Pages(pages) = part.content else {
            return Err(part);
        };
        Ok(HashedPart {
            op: part.op,
            root: part.root,
            responder: part.responder,
            pages: pages
                .into_iter()
                .map(|(index, bytes)| (index, Page::new(bytes)))
                .collect(),
        })
    }
}

/// The answer to [`GetState`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewState {
    /// Who answers: the first replica to ask for the checkpoint it names (the envelope's
    /// index does not say, when the sender is no member of its epoch).
    pub sender: ReplicaId,
    /// The responder's commit number: entries up to here are committed.
    pub commit: Op,
    /// The last op the responder vouches for: its op when it is normal in its view
    /// (`vouches`), else its commit. The answer is complete when its entries reach this
    /// op.
    pub op: Op,
    /// The responder is normal in the view the message goes out in, and every entry up
    /// to `op` belongs to that view's log (paper 5.2). Only such an answer may be
    /// installed as a view's log by a replica joining it (`join_started_view`); any
    /// other holds committed entries only (`op` is the commit number), whatever view
    /// the question was asked in.
    pub vouches: bool,
    /// The checkpoint to start from when the asked-for entries are trimmed: named, not
    /// carried; the receiver fetches the pages it lacks ([`GetCheckpoint`]).
    pub checkpoint: Option<CheckpointId>,
    /// The op number of `entries[0]`.
    pub op_first: Op,
    /// Entries from `op_first`, in order (possibly empty).
    pub entries: Vec<Entry>,
}

/// An epoch began (paper 7): sent by a replica in it to members that may not know yet,
/// and to replicas still in an earlier epoch. The envelope carries the epoch.
///
/// The paper's message also names the old configuration; here the receiver needs only
/// the new one (it fetches the state from whoever holds it), and the sender's identity,
/// to answer with EpochStarted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartEpoch {
    /// The sender's identity (it need not be a member of `configuration`: a replaced
    /// replica reminds the new members).
    pub sender: ReplicaId,
    /// The op of the RECONFIGURATION that began the epoch: the last op of the epoch
    /// before. A member takes part once it holds every op up to here.
    pub op: Op,
    /// The members of the epoch.
    pub configuration: Configuration,
}

impl Body {
    /// A short name for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Request(_) => "request",
            Body::Reply(_) => "reply",
            Body::Prepare(_) => "prepare",
            Body::PrepareOk(_) => "prepare_ok",
            Body::Commit(_) => "commit",
            Body::StartViewChange(_) => "start_view_change",
            Body::DoViewChange(_) => "do_view_change",
            Body::StartView(_) => "start_view",
            Body::Recovery(_) => "recovery",
            Body::RecoveryResponse(_) => "recovery_response",
            Body::GetState(_) => "get_state",
            Body::NewState(_) => "new_state",
            Body::GetCheckpoint(_) => "get_checkpoint",
            Body::CheckpointPart(_) => "checkpoint_part",
            Body::StartEpoch(_) => "start_epoch",
            Body::EpochStarted => "epoch_started",
        }
    }
}
