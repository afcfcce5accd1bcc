//! Who may say what on a connection: the gate between a decoded frame and the core.
//!
//! An accepted connection starts with a `Hello` naming the speaker and stating the terms it
//! believes in (cluster id, members, shared limits). Terms that differ are refused with a
//! `Refusal` that names the difference, so both ends can log one clear line. With a
//! cluster key the acceptor then challenges the speaker (`Welcome` with a nonce and its own
//! proof) and accepts nothing but a valid `Proof` next (see [`crate::auth`]). Only then:
//! a connection that said `Client` may send requests and stats requests, never replica
//! messages; one that said `Replica(id)` names a replica identity other than ours, and
//! may send protocol messages only. Identities, not indexes: a replica's index changes
//! with the configuration (paper section 7), its identity never does. An identity we do
//! not know is a learner warming up, or a member of an epoch we have not learned of yet;
//! the core decides what its messages are worth, and the event loop checks that every
//! message names the hello's identity as its sender where the message's epoch is known
//! ([`check_sender`]).
//!
//! A connection we dialled to replica `id` expects a `Welcome` from replica `id` (with a
//! key: with a valid MAC, answered by our `Proof`), or a `Refusal`; after the welcome, the
//! replica may answer on it (it does so for a replica it does not dial: a learner).
//! Anything else closes that connection only (one bad peer never takes the replica down).

use crate::auth::{self, ClusterKey, Role, Transcript};
use crate::protocol::{Body, ClientId, Configuration, Message, ReplicaId, ReplicaIndex};
use crate::wire::{
    self, Batch, BatchKind, DecodeError, Frame, Hello, Mac, Nonce, Peer, Refusal, RefusalCode,
    Terms, Welcome,
};
use thiserror::Error;

/// What this replica checks hellos against.
#[derive(Clone, Debug)]
pub struct Gate {
    /// Our identity.
    pub own: ReplicaId,
    /// Our terms (with our limits, our epoch and its members).
    pub terms: Terms,
    /// The cluster key, if the cluster is authenticated.
    pub key: Option<ClusterKey>,
}

/// What a connection has said about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Accepted, nothing yet: the next frame must be a `Hello`.
    AwaitingHello,
    /// Accepted, keyed: the hello was welcomed; the next frame must be a valid `Proof`.
    AwaitingProof {
        /// Who the hello said it is.
        peer: Peer,
        /// The handshake so far.
        transcript: Transcript,
    },
    /// Accepted: another replica of this cluster, by identity.
    Replica(ReplicaId),
    /// Accepted: a client (or a tool such as `vsr stats`).
    Client(ClientId),
    /// Dialled by us to replica `replica`, awaiting its `Welcome`.
    Dialed {
        /// The replica dialled (its identity).
        replica: ReplicaId,
        /// Our hello's nonce (with a key).
        nonce: Option<Nonce>,
    },
    /// Dialled by us and welcomed: our link to `replica`.
    Linked(ReplicaId),
}

impl PeerState {
    /// An accepted connection that has not finished its handshake.
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            PeerState::AwaitingHello | PeerState::AwaitingProof { .. }
        )
    }

    /// A replica on either side (accepted and identified, or dialled by us).
    pub fn is_replica(&self) -> bool {
        matches!(
            self,
            PeerState::Replica(_) | PeerState::Dialed { .. } | PeerState::Linked(_)
        )
    }

    /// The replica at the other end of a link we dialled.
    pub fn dialed_replica(&self) -> Option<ReplicaId> {
        match self {
            PeerState::Dialed { replica, .. } | PeerState::Linked(replica) => Some(*replica),
            _ => None,
        }
    }
}

/// A frame that passed the gate, and what to do with it.
#[derive(Debug)]
pub enum Admitted {
    /// An accepted hello: send `welcome`. `established` unless a proof must follow.
    Hello {
        /// The speaker.
        peer: Peer,
        /// Our answer.
        welcome: Welcome,
        /// Whether the connection may now carry frames (no key: at once).
        established: bool,
    },
    /// A keyed connection proved the key: `peer` is established.
    Authenticated(Peer),
    /// Our link to `replica` was welcomed: send `proof` (with a key); it is established.
    Welcomed {
        /// The replica.
        replica: ReplicaId,
        /// Our proof of the key.
        proof: Option<Mac>,
    },
    /// A client's request, for the core.
    Request(Message),
    /// A client's batch of requests, for the core one by one (`wire::batch`).
    Requests(Batch),
    /// A protocol message from replica `from` (as its hello or our dial said), for the
    /// core once [`check_sender`] agrees.
    Replica {
        /// The identity the connection was established with.
        from: ReplicaId,
        /// The message.
        message: Message,
    },
    /// A request for the replica's statistics.
    StatsRequest,
}

/// Why a connection is closed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Rejection {
    /// The first frame was not a `Hello`.
    #[error("the first frame must be a hello, got {0}")]
    FirstFrameNotHello(&'static str),
    /// A second `Hello`.
    #[error("a second hello on one connection")]
    HelloTwice,
    /// A `Hello` naming this very replica.
    #[error("hello claims to be this replica (identity {0})")]
    ReplicaIsSelf(ReplicaId),
    /// Client id 0 is reserved.
    #[error("hello claims client id 0, which is reserved")]
    ClientZero,
    /// The speaker's terms, key or proof are not ours: we refuse it, and tell it why.
    #[error("refused: {}", .0.reason)]
    Refused(Refusal),
    /// A hello from another cluster: refused in that cluster's id, so that its sender's
    /// decoder (which checks the id) can read why.
    #[error("refused: {}", .refusal.reason)]
    OtherCluster {
        /// What to tell it.
        refusal: Refusal,
        /// Its cluster id.
        cluster: u128,
    },
    /// A first frame of another wire version: refused in its own cluster id, with a
    /// refusal (whose layout every version keeps) that names both versions.
    #[error("refused: {}", .refusal.reason)]
    OtherVersion {
        /// What to tell it.
        refusal: Refusal,
        /// Its cluster id.
        cluster: u128,
    },
    /// The other side refused us.
    #[error("refused by the peer: {}", .0.reason)]
    RefusedByPeer(Refusal),
    /// A keyed connection sent something before its proof.
    #[error("expected the proof of the cluster key, got {0}")]
    ProofExpected(&'static str),
    /// A replica we dialled sent something other than a welcome or a refusal.
    #[error(
        "replica {replica} sent {frame} on our link (only a welcome or a refusal is expected)"
    )]
    UnexpectedOnLink {
        /// The replica.
        replica: ReplicaId,
        /// What it sent.
        frame: &'static str,
    },
    /// No fresh nonce could be drawn from the operating system.
    #[error("cannot draw a nonce: {0}")]
    Nonce(String),
    /// A client sent something only replicas send.
    #[error("a client connection sent a replica message ({0})")]
    ClientSentReplicaMessage(&'static str),
    /// A replica connection sent something only clients send.
    #[error("a replica connection sent a client frame ({0})")]
    ReplicaSentClientFrame(&'static str),
    /// A message whose sender differs from what the connection's hello said.
    #[error("replica {hello} sent a message signed by replica index {message} of epoch {epoch}")]
    SenderMismatch {
        /// The hello's identity.
        hello: ReplicaId,
        /// The message's `replica` field (an index in `epoch`).
        message: ReplicaIndex,
        /// The message's epoch.
        epoch: u32,
    },
    /// A message that names another replica's identity in its body.
    #[error("replica {hello} sent a {what} naming replica {named}")]
    IdentityMismatch {
        /// The hello's identity.
        hello: ReplicaId,
        /// The message.
        what: &'static str,
        /// The identity the body names.
        named: ReplicaId,
    },
    /// A frame no replica ever accepts (a reply, a stats reply).
    #[error("unexpected frame for a replica: {0}")]
    Unexpected(&'static str),
}

impl Rejection {
    /// What to tell the peer before closing, if it is owed an explanation: a node with the
    /// wrong configuration learns what is wrong instead of seeing a closed connection.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Rejection::Refused(refusal)
            | Rejection::OtherCluster { refusal, .. }
            | Rejection::OtherVersion { refusal, .. } => Some(refusal.clone()),
            Rejection::ReplicaIsSelf(_) | Rejection::ClientZero => Some(Refusal {
                code: RefusalCode::BadHello,
                version: wire::VERSION,
                reason: self.to_string(),
            }),
            _ => None,
        }
    }

    /// Whether this is a configuration disagreement between two nodes (logged once per
    /// peer per minute, not once per attempt).
    pub fn is_configuration(&self) -> bool {
        match self {
            Rejection::Refused(refusal)
            | Rejection::RefusedByPeer(refusal)
            | Rejection::OtherCluster { refusal, .. }
            | Rejection::OtherVersion { refusal, .. } => refusal.code.is_configuration(),
            Rejection::ReplicaIsSelf(_) => true,
            _ => false,
        }
    }
}

impl Rejection {
    /// The cluster id to send the refusal in, when it is not ours.
    pub fn refusal_cluster(&self) -> Option<u128> {
        match self {
            Rejection::OtherCluster { cluster, .. } | Rejection::OtherVersion { cluster, .. } => {
                Some(*cluster)
            }
            _ => None,
        }
    }
}

/// The rejection owed to a connection whose next frame did not decode, when it is owed an
/// answer: a first frame of another wire version (`wire::VERSION`). Any other decode
/// error, or another version later in a connection, closes it without one.
pub fn undecodable(state: &PeerState, error: DecodeError) -> Option<Rejection> {
    match (state, error) {
        (PeerState::AwaitingHello, DecodeError::OtherVersion { version, cluster }) => {
            Some(Rejection::OtherVersion {
                refusal: Refusal {
                    code: RefusalCode::VersionDiffers,
                    version: wire::VERSION,
                    reason: format!(
                        "wire version {version} there, {} here: every node of a cluster \
                         must run binaries of one wire version",
                        wire::VERSION
                    ),
                },
                cluster,
            })
        }
        _ => None,
    }
}

fn refused(code: RefusalCode, reason: String) -> Rejection {
    Rejection::Refused(Refusal::new(code, reason))
}

impl Gate {
    /// Checks `frame` against what the connection said so far, updating `state`.
    pub fn admit(&self, state: &mut PeerState, frame: Frame) -> Result<Admitted, Rejection> {
        match (*state, frame) {
            (PeerState::AwaitingHello, Frame::Hello(hello)) => self.on_hello(state, hello),
            (PeerState::AwaitingHello, frame) => Err(Rejection::FirstFrameNotHello(frame.name())),
            (PeerState::AwaitingProof { peer, transcript }, Frame::Proof(mac)) => {
                let key = self
                    .key
                    .as_ref()
                    .expect("a proof is awaited only with a key");
                if !key.verify(Role::Connector, &transcript, &mac) {
                    return Err(refused(
                        RefusalCode::AuthenticationFailed,
                        "the proof of the cluster key does not verify (a different key, or a replayed handshake)".to_string(),
                    ));
                }
                *state = established(peer);
                Ok(Admitted::Authenticated(peer))
            }
            (PeerState::AwaitingProof { .. }, frame) => Err(Rejection::ProofExpected(frame.name())),
            (PeerState::Dialed { replica, nonce }, Frame::Welcome(welcome)) => {
                let me = Peer::Replica(self.own);
                let cluster = self.terms.cluster;
                let proof =
                    auth::answer_welcome(self.key.as_ref(), cluster, me, replica, nonce, &welcome)
                        .map_err(Rejection::Refused)?;
                *state = PeerState::Linked(replica);
                Ok(Admitted::Welcomed { replica, proof })
            }
            (PeerState::Dialed { .. } | PeerState::Linked(_), Frame::Refusal(refusal)) => {
                Err(Rejection::RefusedByPeer(refusal))
            }
            // The replica we dialled answers on our link when it does not dial us (we are
            // a learner it does not know the address of).
            (PeerState::Linked(replica), Frame::Message(message)) => {
                replica_message(replica, message)
            }
            (PeerState::Dialed { replica, .. } | PeerState::Linked(replica), frame) => {
                Err(Rejection::UnexpectedOnLink {
                    replica,
                    frame: frame.name(),
                })
            }
            (_, Frame::Hello(_)) => Err(Rejection::HelloTwice),
            (
                _,
                frame @ (Frame::StatsReply(_)
                | Frame::Welcome(_)
                | Frame::Proof(_)
                | Frame::Refusal(_)),
            ) => Err(Rejection::Unexpected(frame.name())),
            (PeerState::Client(_), Frame::StatsRequest) => Ok(Admitted::StatsRequest),
            (PeerState::Client(_), Frame::Batch(batch)) => match batch.kind() {
                BatchKind::Requests => Ok(Admitted::Requests(batch)),
                BatchKind::Replies => Err(Rejection::Unexpected("replies")),
            },
            (PeerState::Replica(_), Frame::Batch(batch)) => match batch.kind() {
                BatchKind::Requests => Err(Rejection::ReplicaSentClientFrame("requests")),
                BatchKind::Replies => Err(Rejection::Unexpected("replies")),
            },
            (PeerState::Client(_), Frame::Message(message)) => match message.body {
                Body::Request(_) => Ok(Admitted::Request(message)),
                Body::Reply(_) => Err(Rejection::Unexpected("reply")),
                _ => Err(Rejection::ClientSentReplicaMessage(message.body.name())),
            },
            (PeerState::Replica(_), Frame::StatsRequest) => {
                Err(Rejection::ReplicaSentClientFrame("stats_request"))
            }
            (PeerState::Replica(hello), Frame::Message(message)) => replica_message(hello, message),
        }
    }

    fn on_hello(&self, state: &mut PeerState, hello: Hello) -> Result<Admitted, Rejection> {
        if let Some((code, reason)) = self.terms.difference(&hello.terms) {
            let refusal = Refusal::new(code, reason);
            if hello.terms.cluster != self.terms.cluster {
                return Err(Rejection::OtherCluster {
                    refusal,
                    cluster: hello.terms.cluster,
                });
            }
            return Err(Rejection::Refused(refusal));
        }
        match hello.peer {
            Peer::Replica(claimed) if claimed == self.own => {
                return Err(Rejection::ReplicaIsSelf(claimed))
            }
            Peer::Replica(claimed)
                if hello.terms.members.is_empty() || hello.terms.limits.is_none() =>
            {
                return Err(refused(
                    RefusalCode::BadHello,
                    format!("replica {claimed}'s hello does not state its members and limits"),
                ));
            }
            Peer::Client(0) => return Err(Rejection::ClientZero),
            Peer::Replica(_) | Peer::Client(_) => {}
        }
        match (&self.key, hello.nonce) {
            (None, None) => {
                *state = established(hello.peer);
                Ok(Admitted::Hello {
                    peer: hello.peer,
                    welcome: Welcome {
                        replica: self.own,
                        keyed: None,
                    },
                    established: true,
                })
            }
            (Some(key), Some(connector_nonce)) => {
                let acceptor_nonce =
                    auth::fresh_nonce().map_err(|error| Rejection::Nonce(error.to_string()))?;
                let transcript = Transcript {
                    cluster: self.terms.cluster,
                    connector: hello.peer,
                    acceptor: self.own,
                    connector_nonce,
                    acceptor_nonce,
                };
                let mac = key.mac(Role::Acceptor, &transcript);
                *state = PeerState::AwaitingProof {
                    peer: hello.peer,
                    transcript,
                };
                Ok(Admitted::Hello {
                    peer: hello.peer,
                    welcome: Welcome {
                        replica: self.own,
                        keyed: Some((acceptor_nonce, mac)),
                    },
                    established: false,
                })
            }
            (Some(_), None) => Err(refused(
                RefusalCode::KeyRequired,
                "this cluster requires a cluster key (--cluster-key), and the hello has none"
                    .to_string(),
            )),
            (None, Some(_)) => Err(refused(
                RefusalCode::KeyUnexpected,
                "the hello is keyed, but this replica runs without a cluster key (--cluster-key)"
                    .to_string(),
            )),
        }
    }
}

/// A protocol message on a replica connection: anything but client frames.
fn replica_message(from: ReplicaId, message: Message) -> Result<Admitted, Rejection> {
    match message.body {
        Body::Request(_) => Err(Rejection::ReplicaSentClientFrame("request")),
        Body::Reply(_) => Err(Rejection::Unexpected("reply")),
        _ => Ok(Admitted::Replica { from, message }),
    }
}

/// Whether `message`, on a connection established with replica identity `from`, is
/// signed by `from`: its `replica` index names `from` in the configuration of its epoch
/// (`configuration`, when this replica knows that epoch), and every identity its body
/// names as the sender's (a learner's GetState, a StartEpoch) is `from`. Messages of an
/// epoch this replica does not know pass on to the core, which acts on nothing of them
/// but a StartEpoch.
pub fn check_sender(
    from: ReplicaId,
    message: &Message,
    configuration: Option<&Configuration>,
) -> Result<(), Rejection> {
    let named = match &message.body {
        Body::GetState(get_state) => get_state.learner,
        Body::StartEpoch(start_epoch) => Some(start_epoch.sender),
        Body::NewState(new_state) => Some(new_state.sender),
        Body::GetCheckpoint(get) => Some(get.asker),
        Body::CheckpointPart(part) => Some(part.responder),
        _ => None,
    };
    if let Some(named) = named.filter(|&named| named != from) {
        return Err(Rejection::IdentityMismatch {
            hello: from,
            what: message.body.name(),
            named,
        });
    }
    let Some(configuration) = configuration else {
        return Ok(());
    };
    let signed = if configuration.contains(message.replica) {
        configuration.id_of(message.replica) == from
    } else {
        // Not a member's index: only a replica outside that epoch (a learner, a replica
        // that retired) signs so.
        !configuration.contains_id(from)
    };
    if signed {
        Ok(())
    } else {
        Err(Rejection::SenderMismatch {
            hello: from,
            message: message.replica,
            epoch: message.epoch,
        })
    }
}

fn established(peer: Peer) -> PeerState {
    match peer {
        Peer::Replica(index) => PeerState::Replica(index),
        Peer::Client(client) => PeerState::Client(client),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Commit, Operation, Request};
    use crate::wire::Limits;
    use bytes::Bytes;

    fn members() -> Vec<std::net::SocketAddr> {
        ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect()
    }

    fn terms() -> Terms {
        Terms {
            cluster: 5,
            epoch: 0,
            members: members(),
            limits: Some(Limits::of(&crate::Config::new(5, 3))),
        }
    }

    /// Replica 1 of a cluster of 3, with or without a key.
    fn gate(key: Option<&[u8]>) -> Gate {
        Gate {
            own: 1,
            terms: terms(),
            key: key.map(|k| ClusterKey::from_bytes(k).unwrap()),
        }
    }

    fn hello(peer: Peer) -> Frame {
        let mut terms = terms();
        if let Peer::Client(_) = peer {
            terms.limits = None;
        }
        Frame::Hello(Hello {
            peer,
            terms,
            nonce: None,
        })
    }

    fn message(replica: ReplicaIndex, body: Body) -> Frame {
        Frame::Message(Message {
            epoch: 0,
            view: 0,
            replica,
            body,
        })
    }

    fn request() -> Frame {
        let body = Body::Request(Request {
            client: 7,
            session: 1,
            request: 1,
            operation: Operation::Apply,
            body: Bytes::from_static(b"x"),
        });
        message(0, body)
    }

    fn commit(replica: ReplicaIndex) -> Frame {
        message(
            replica,
            Body::Commit(Commit {
                commit: 3,
                actives_commit: 0,
                stamp: 0,
            }),
        )
    }

    /// Feeds `frames` to a fresh accepted connection of a keyless replica 1 and returns
    /// the outcome of the last one.
    fn check(frames: Vec<Frame>) -> Result<&'static str, Rejection> {
        let gate = gate(None);
        let mut state = PeerState::AwaitingHello;
        let mut last = Ok("none");
        for frame in frames {
            last = gate
                .admit(&mut state, frame)
                .map(|admitted| match admitted {
                    Admitted::Hello { .. } => "hello",
                    Admitted::Authenticated(_) => "authenticated",
                    Admitted::Welcomed { .. } => "welcomed",
                    Admitted::Request(_) => "request",
                    Admitted::Requests(_) => "requests",
                    Admitted::Replica { .. } => "replica",
                    Admitted::StatsRequest => "stats",
                });
            if last.is_err() {
                break;
            }
        }
        last
    }

    #[test]
    fn hello_comes_first() {
        assert_eq!(
            check(vec![request()]),
            Err(Rejection::FirstFrameNotHello("request"))
        );
        assert_eq!(
            check(vec![Frame::StatsRequest]),
            Err(Rejection::FirstFrameNotHello("stats_request"))
        );
        assert_eq!(check(vec![hello(Peer::Client(9))]), Ok("hello"));
        let twice = vec![hello(Peer::Client(9)), hello(Peer::Client(9))];
        assert_eq!(check(twice), Err(Rejection::HelloTwice));
    }

    #[test]
    fn replica_hello_must_name_another_replica() {
        // An identity no configuration we know lists: a learner, or a member of a later
        // epoch. The core decides what its messages are worth.
        assert_eq!(
            check(vec![hello(Peer::Replica(7)), commit(255)]),
            Ok("replica")
        );
        assert_eq!(
            check(vec![hello(Peer::Replica(1))]),
            Err(Rejection::ReplicaIsSelf(1))
        );
        assert_eq!(
            check(vec![hello(Peer::Client(0))]),
            Err(Rejection::ClientZero)
        );
        assert_eq!(
            check(vec![hello(Peer::Replica(2)), commit(2)]),
            Ok("replica")
        );
    }

    #[test]
    fn differing_terms_are_refused_with_the_difference() {
        let mut swapped = terms();
        swapped.members.swap(1, 2);
        let frame = Frame::Hello(Hello {
            peer: Peer::Replica(2),
            terms: swapped,
            nonce: None,
        });
        let Err(Rejection::Refused(refusal)) = check(vec![frame]) else {
            panic!("swapped members accepted")
        };
        assert_eq!(refusal.code, RefusalCode::MembersDiffer);
        assert!(
            refusal.reason.contains("at replica 1"),
            "{}",
            refusal.reason
        );
        let other_cluster = Frame::Hello(Hello {
            peer: Peer::Client(3),
            terms: Terms {
                cluster: 6,
                epoch: 0,
                members: vec![],
                limits: None,
            },
            nonce: None,
        });
        let Err(rejection) = check(vec![other_cluster]) else {
            panic!("another cluster accepted")
        };
        assert_eq!(rejection.refusal().unwrap().code, RefusalCode::WrongCluster);
        assert!(rejection.is_configuration());
    }

    #[test]
    fn a_first_frame_of_another_wire_version_is_refused_by_name() {
        let other = DecodeError::OtherVersion {
            version: wire::VERSION + 1,
            cluster: 6,
        };
        let rejection = undecodable(&PeerState::AwaitingHello, other).expect("owed a refusal");
        let refusal = rejection.refusal().expect("a refusal");
        assert_eq!(refusal.code, RefusalCode::VersionDiffers);
        assert_eq!(refusal.version, wire::VERSION);
        let named = format!(
            "wire version {} there, {} here",
            wire::VERSION + 1,
            wire::VERSION
        );
        assert!(refusal.reason.contains(&named), "{}", refusal.reason);
        // Sent in the speaker's cluster id, so that its decoder reads it.
        assert_eq!(rejection.refusal_cluster(), Some(6));
        assert!(rejection.is_configuration());
        // Past the first frame, or for any other decode error: closed without an answer.
        assert_eq!(undecodable(&PeerState::Replica(2), other), None);
        assert_eq!(undecodable(&PeerState::Client(9), other), None);
        let corrupt = DecodeError::HeaderChecksum;
        assert_eq!(undecodable(&PeerState::AwaitingHello, corrupt), None);
    }

    #[test]
    fn clients_never_send_replica_messages() {
        assert_eq!(
            check(vec![hello(Peer::Client(9)), request()]),
            Ok("request")
        );
        assert_eq!(
            check(vec![hello(Peer::Client(9)), Frame::StatsRequest]),
            Ok("stats")
        );
        let forged = check(vec![hello(Peer::Client(9)), commit(0)]);
        assert_eq!(forged, Err(Rejection::ClientSentReplicaMessage("commit")));
    }

    /// `message` alone in a batch frame, decoded as the gate receives it.
    fn batch_of(message: Frame) -> Frame {
        let Frame::Message(message) = message else {
            panic!("a message")
        };
        let mut out = bytes::BytesMut::new();
        let writer = crate::wire::BatchWriter::begin(&message, &mut out).expect("batchable");
        writer.seal(0, &mut out);
        crate::wire::decode(&mut out, 0, 1 << 20)
            .expect("valid")
            .expect("whole")
    }

    #[test]
    fn only_clients_send_batches_of_requests_and_nobody_sends_replies() {
        let requests = || batch_of(request());
        let replies = || {
            batch_of(message(
                0,
                Body::Reply(crate::protocol::Reply {
                    client: 7,
                    session: 1,
                    request: 1,
                    op: 2,
                    status: crate::protocol::ReplyStatus::Ok,
                    result: Bytes::new(),
                }),
            ))
        };
        assert_eq!(
            check(vec![hello(Peer::Client(9)), requests()]),
            Ok("requests")
        );
        assert_eq!(
            check(vec![hello(Peer::Client(9)), replies()]),
            Err(Rejection::Unexpected("replies"))
        );
        assert_eq!(
            check(vec![hello(Peer::Replica(2)), requests()]),
            Err(Rejection::ReplicaSentClientFrame("requests"))
        );
        assert_eq!(
            check(vec![hello(Peer::Replica(2)), replies()]),
            Err(Rejection::Unexpected("replies"))
        );
        let before_hello = check(vec![requests()]);
        assert_eq!(before_hello, Err(Rejection::FirstFrameNotHello("requests")));
    }

    #[test]
    fn replicas_sign_with_their_hello() {
        let Frame::Message(commit_by_0) = commit(0) else {
            unreachable!()
        };
        let epoch_0 = Configuration::initial(3);
        assert_eq!(
            check_sender(2, &commit_by_0, Some(&epoch_0)),
            Err(Rejection::SenderMismatch {
                hello: 2,
                message: 0,
                epoch: 0
            })
        );
        assert_eq!(check_sender(0, &commit_by_0, Some(&epoch_0)), Ok(()));
        // An epoch we do not know: the core decides.
        assert_eq!(check_sender(2, &commit_by_0, None), Ok(()));
        // Outside the epoch's members only a non-member signs as a non-member.
        let Frame::Message(outsider) = commit(crate::protocol::NOT_A_MEMBER) else {
            unreachable!()
        };
        assert_eq!(check_sender(9, &outsider, Some(&epoch_0)), Ok(()));
        assert!(check_sender(2, &outsider, Some(&epoch_0)).is_err());
        // A learner asks for state for itself only.
        let Frame::Message(get_state) = message(
            crate::protocol::NOT_A_MEMBER,
            Body::GetState(crate::protocol::GetState {
                op: 0,
                learner: Some(8),
            }),
        ) else {
            unreachable!()
        };
        assert_eq!(
            check_sender(9, &get_state, Some(&epoch_0)),
            Err(Rejection::IdentityMismatch {
                hello: 9,
                what: "get_state",
                named: 8
            })
        );
        assert_eq!(check_sender(8, &get_state, Some(&epoch_0)), Ok(()));
        // A checkpoint's parts and a NewState name who asks and who answers: only the
        // connection's own identity (the answer goes to the asker it names).
        let root = crate::service::Digest([0; crate::service::DIGEST_BYTES]);
        let named = [
            Body::GetCheckpoint(crate::protocol::GetCheckpoint {
                op: 1,
                root,
                asker: 8,
                part: crate::protocol::CheckpointRequest::Pages(vec![0]),
            }),
            Body::CheckpointPart(crate::protocol::CheckpointPart {
                op: 1,
                root,
                responder: 8,
                content: crate::protocol::CheckpointContent::Unavailable,
            }),
            Body::NewState(crate::protocol::NewState {
                sender: 8,
                commit: 0,
                op: 0,
                vouches: false,
                checkpoint: None,
                op_first: 1,
                entries: Vec::new(),
            }),
        ];
        for body in named {
            let what = body.name();
            let Frame::Message(message) = message(crate::protocol::NOT_A_MEMBER, body) else {
                unreachable!()
            };
            assert_eq!(
                check_sender(9, &message, Some(&epoch_0)),
                Err(Rejection::IdentityMismatch {
                    hello: 9,
                    what,
                    named: 8
                })
            );
            assert_eq!(check_sender(8, &message, Some(&epoch_0)), Ok(()));
        }
        let request = check(vec![hello(Peer::Replica(2)), request()]);
        assert_eq!(request, Err(Rejection::ReplicaSentClientFrame("request")));
        // Reads (strict or at any replica) are requests: admitted from clients alone.
        for operation in [Operation::Query, Operation::Read] {
            let read = message(
                0,
                Body::Request(Request {
                    client: 7,
                    session: 1,
                    request: 1,
                    operation,
                    body: Request::read_body(3, b"get k"),
                }),
            );
            let from_replica = check(vec![hello(Peer::Replica(2)), read.clone()]);
            assert_eq!(
                from_replica,
                Err(Rejection::ReplicaSentClientFrame("request"))
            );
            assert_eq!(check(vec![hello(Peer::Client(9)), read]), Ok("request"));
        }
        let stats_reply = check(vec![
            hello(Peer::Replica(2)),
            Frame::StatsReply(Bytes::new()),
        ]);
        assert_eq!(stats_reply, Err(Rejection::Unexpected("stats_reply")));
    }

    /// Replica 0 dials replica 1, both with `keys`; returns both ends' outcomes.
    fn keyed_handshake(
        connector_key: &[u8],
        acceptor_key: &[u8],
    ) -> Result<(PeerState, PeerState), Rejection> {
        let connector = Gate {
            own: 0,
            ..gate(Some(connector_key))
        };
        let acceptor = gate(Some(acceptor_key));
        let nonce = auth::fresh_nonce().unwrap();
        let mut dialed = PeerState::Dialed {
            replica: 1,
            nonce: Some(nonce),
        };
        let mut accepted = PeerState::AwaitingHello;
        let hello = Frame::Hello(Hello {
            peer: Peer::Replica(0),
            terms: terms(),
            nonce: Some(nonce),
        });
        let Admitted::Hello {
            welcome,
            established: false,
            ..
        } = acceptor.admit(&mut accepted, hello)?
        else {
            panic!("a keyed hello is established only after its proof")
        };
        let Admitted::Welcomed {
            proof: Some(proof), ..
        } = connector.admit(&mut dialed, Frame::Welcome(welcome))?
        else {
            panic!("a keyed welcome is answered with a proof")
        };
        acceptor.admit(&mut accepted, Frame::Proof(proof))?;
        Ok((dialed, accepted))
    }

    #[test]
    fn keyed_handshakes_prove_both_sides() {
        let key = b"0123456789abcdef";
        assert_eq!(
            keyed_handshake(key, key),
            Ok((PeerState::Linked(1), PeerState::Replica(0)))
        );
        // The connector checks the acceptor's proof first: a wrong key fails there.
        let Err(Rejection::Refused(refusal)) = keyed_handshake(key, b"0123456789abcdeX") else {
            panic!("different keys shook hands")
        };
        assert_eq!(refusal.code, RefusalCode::AuthenticationFailed);
    }

    #[test]
    fn a_keyed_replica_accepts_nothing_before_the_proof() {
        let gate = gate(Some(b"0123456789abcdef"));
        let mut state = PeerState::AwaitingHello;
        // Without a nonce: refused, saying a key is needed.
        let Err(Rejection::Refused(refusal)) = gate.admit(&mut state, hello(Peer::Client(4)))
        else {
            panic!("an unkeyed hello was accepted")
        };
        assert_eq!(refusal.code, RefusalCode::KeyRequired);
        let keyed = Frame::Hello(Hello {
            peer: Peer::Client(4),
            terms: Terms {
                limits: None,
                ..terms()
            },
            nonce: Some([7; 32]),
        });
        let mut state = PeerState::AwaitingHello;
        gate.admit(&mut state, keyed.clone()).unwrap();
        assert_eq!(
            gate.admit(&mut state, request()).unwrap_err(),
            Rejection::ProofExpected("request")
        );
        // A proof recorded from another handshake (another acceptor nonce) fails.
        let mut state = PeerState::AwaitingHello;
        gate.admit(&mut state, keyed).unwrap();
        let PeerState::AwaitingProof { transcript, .. } = state else {
            panic!("awaiting the proof")
        };
        let old = Transcript {
            acceptor_nonce: [0; 32],
            ..transcript
        };
        let replayed = gate.key.as_ref().unwrap().mac(Role::Connector, &old);
        let Err(Rejection::Refused(refusal)) = gate.admit(&mut state, Frame::Proof(replayed))
        else {
            panic!("a replayed proof was accepted")
        };
        assert_eq!(refusal.code, RefusalCode::AuthenticationFailed);
    }

    #[test]
    fn our_links_expect_a_welcome_from_the_replica_dialled() {
        let gate = gate(None);
        let mut state = PeerState::Dialed {
            replica: 2,
            nonce: None,
        };
        let wrong = Welcome {
            replica: 0,
            keyed: None,
        };
        let Err(Rejection::Refused(refusal)) = gate.admit(&mut state, Frame::Welcome(wrong)) else {
            panic!("a welcome from another replica was accepted")
        };
        assert_eq!(refusal.code, RefusalCode::MembersDiffer);
        let mut state = PeerState::Dialed {
            replica: 2,
            nonce: None,
        };
        let right = Welcome {
            replica: 2,
            keyed: None,
        };
        assert!(gate.admit(&mut state, Frame::Welcome(right)).is_ok());
        assert_eq!(state, PeerState::Linked(2));
        // The replica we dialled may answer on our link (we may be a learner).
        assert!(matches!(
            gate.admit(&mut state, commit(2)),
            Ok(Admitted::Replica { from: 2, .. })
        ));
        assert_eq!(
            gate.admit(&mut state, request()).unwrap_err(),
            Rejection::ReplicaSentClientFrame("request")
        );
        assert_eq!(
            gate.admit(&mut state, Frame::StatsRequest).unwrap_err(),
            Rejection::UnexpectedOnLink {
                replica: 2,
                frame: "stats_request"
            }
        );
    }
}
