//! Who may say what on a connection: the gate between a decoded frame and the core.
//!
//! The first frame on every connection is a `Hello` naming the speaker. A connection that
//! said `Client` may send only requests and stats requests, never replica messages; one
//! that said `Replica(i)` must name another replica of this cluster, and every message on
//! it must carry `i` as its sender. Anything else closes that connection only (one bad
//! peer never takes the replica down). The cluster id is checked earlier, by the decoder.

use crate::protocol::{Body, ClientId, Message, ReplicaIndex};
use crate::wire::{Frame, Peer};
use thiserror::Error;

/// What a connection has said about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Nothing yet: the next frame must be a `Hello`.
    AwaitingHello,
    /// Another replica of this cluster.
    Replica(ReplicaIndex),
    /// A client (or a tool such as `vsr stats`).
    Client(ClientId),
}

/// A frame that passed the gate, and what to do with it.
#[derive(Debug)]
pub enum Admitted {
    /// The speaker introduced itself (the state is already updated).
    Hello(Peer),
    /// A client's request, for the core.
    Request(Message),
    /// A replica's protocol message, for the core.
    Replica(Message),
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
    /// A `Hello` naming a replica that is not in the configuration.
    #[error("hello claims replica {claimed}, but the cluster has {count} replicas")]
    ReplicaOutOfRange {
        /// The index claimed.
        claimed: ReplicaIndex,
        /// The cluster size.
        count: u8,
    },
    /// A `Hello` naming this very replica.
    #[error("hello claims to be this replica ({0})")]
    ReplicaIsSelf(ReplicaIndex),
    /// Client id 0 is reserved.
    #[error("hello claims client id 0, which is reserved")]
    ClientZero,
    /// A client sent something only replicas send.
    #[error("a client connection sent a replica message ({0})")]
    ClientSentReplicaMessage(&'static str),
    /// A replica connection sent something only clients send.
    #[error("a replica connection sent a client frame ({0})")]
    ReplicaSentClientFrame(&'static str),
    /// A message whose sender field differs from what the connection's hello said.
    #[error("replica {hello} sent a message signed by replica {message}")]
    SenderMismatch {
        /// The hello's index.
        hello: ReplicaIndex,
        /// The message's `replica` field.
        message: ReplicaIndex,
    },
    /// A frame no replica ever accepts (a reply, a stats reply).
    #[error("unexpected frame for a replica: {0}")]
    Unexpected(&'static str),
}

fn frame_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello(_) => "hello",
        Frame::Message(message) => message.body.name(),
        Frame::StatsRequest => "stats_request",
        Frame::StatsReply(_) => "stats_reply",
    }
}

/// Checks `frame` against what the connection said so far, updating `state` on a hello.
/// `own` is this replica's index and `count` the cluster size.
pub fn admit(
    state: &mut PeerState,
    frame: Frame,
    own: ReplicaIndex,
    count: u8,
) -> Result<Admitted, Rejection> {
    match (*state, frame) {
        (PeerState::AwaitingHello, Frame::Hello(peer)) => {
            *state = match peer {
                Peer::Replica(claimed) if claimed >= count => {
                    return Err(Rejection::ReplicaOutOfRange { claimed, count })
                }
                Peer::Replica(claimed) if claimed == own => {
                    return Err(Rejection::ReplicaIsSelf(claimed))
                }
                Peer::Replica(claimed) => PeerState::Replica(claimed),
                Peer::Client(0) => return Err(Rejection::ClientZero),
                Peer::Client(client) => PeerState::Client(client),
            };
            Ok(Admitted::Hello(peer))
        }
        (PeerState::AwaitingHello, frame) => Err(Rejection::FirstFrameNotHello(frame_name(&frame))),
        (_, Frame::Hello(_)) => Err(Rejection::HelloTwice),
        (_, Frame::StatsReply(_)) => Err(Rejection::Unexpected("stats_reply")),
        (PeerState::Client(_), Frame::StatsRequest) => Ok(Admitted::StatsRequest),
        (PeerState::Client(_), Frame::Message(message)) => match message.body {
            Body::Request(_) => Ok(Admitted::Request(message)),
            Body::Reply(_) => Err(Rejection::Unexpected("reply")),
            _ => Err(Rejection::ClientSentReplicaMessage(message.body.name())),
        },
        (PeerState::Replica(_), Frame::StatsRequest) => {
            Err(Rejection::ReplicaSentClientFrame("stats_request"))
        }
        (PeerState::Replica(hello), Frame::Message(message)) => match message.body {
            Body::Request(_) => Err(Rejection::ReplicaSentClientFrame("request")),
            Body::Reply(_) => Err(Rejection::Unexpected("reply")),
            _ if message.replica != hello => Err(Rejection::SenderMismatch {
                hello,
                message: message.replica,
            }),
            _ => Ok(Admitted::Replica(message)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Commit, Operation, Request};
    use bytes::Bytes;

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
        message(replica, Body::Commit(Commit { commit: 3 }))
    }

    /// Feeds `frames` to a fresh connection of replica 1 in a cluster of 3 and returns
    /// the outcome of the last one.
    fn check(frames: Vec<Frame>) -> Result<&'static str, Rejection> {
        let mut state = PeerState::AwaitingHello;
        let mut last = Ok("none");
        for frame in frames {
            last = admit(&mut state, frame, 1, 3).map(|admitted| match admitted {
                Admitted::Hello(_) => "hello",
                Admitted::Request(_) => "request",
                Admitted::Replica(_) => "replica",
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
        assert_eq!(check(vec![Frame::Hello(Peer::Client(9))]), Ok("hello"));
        let twice = vec![Frame::Hello(Peer::Client(9)), Frame::Hello(Peer::Client(9))];
        assert_eq!(check(twice), Err(Rejection::HelloTwice));
    }

    #[test]
    fn replica_hello_must_name_another_replica() {
        let out_of_range = check(vec![Frame::Hello(Peer::Replica(3))]);
        assert_eq!(
            out_of_range,
            Err(Rejection::ReplicaOutOfRange {
                claimed: 3,
                count: 3
            })
        );
        assert_eq!(
            check(vec![Frame::Hello(Peer::Replica(1))]),
            Err(Rejection::ReplicaIsSelf(1))
        );
        assert_eq!(
            check(vec![Frame::Hello(Peer::Client(0))]),
            Err(Rejection::ClientZero)
        );
        assert_eq!(
            check(vec![Frame::Hello(Peer::Replica(2)), commit(2)]),
            Ok("replica")
        );
    }

    #[test]
    fn clients_never_send_replica_messages() {
        assert_eq!(
            check(vec![Frame::Hello(Peer::Client(9)), request()]),
            Ok("request")
        );
        assert_eq!(
            check(vec![Frame::Hello(Peer::Client(9)), Frame::StatsRequest]),
            Ok("stats")
        );
        let forged = check(vec![Frame::Hello(Peer::Client(9)), commit(0)]);
        assert_eq!(forged, Err(Rejection::ClientSentReplicaMessage("commit")));
    }

    #[test]
    fn replicas_sign_with_their_hello() {
        let mismatch = check(vec![Frame::Hello(Peer::Replica(2)), commit(0)]);
        assert_eq!(
            mismatch,
            Err(Rejection::SenderMismatch {
                hello: 2,
                message: 0
            })
        );
        let request = check(vec![Frame::Hello(Peer::Replica(2)), request()]);
        assert_eq!(request, Err(Rejection::ReplicaSentClientFrame("request")));
        let stats_reply = check(vec![
            Frame::Hello(Peer::Replica(2)),
            Frame::StatsReply(Bytes::new()),
        ]);
        assert_eq!(stats_reply, Err(Rejection::Unexpected("stats_reply")));
    }
}
