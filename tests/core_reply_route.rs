//! Reply route tokens: a driver hands the core an opaque token with each client request
//! (`Replica::on_client_request`) and gets it back in the reply to it (`Effect::Reply`'s
//! `route`), so it needs no lookup of its own to find the client. One primary driven by
//! hand.

use bytes::Bytes;
use vsr::protocol::client_table::RouteToken;
use vsr::protocol::{Body, Effect, Message, Operation, PrepareOk, Replica, Reply, Request, Start};
use vsr::service::Null;
use vsr::Config;

const CLIENT: u64 = 7;

fn request(session: u64, number: u32, operation: Operation) -> Message {
    let request = Request {
        client: CLIENT,
        session,
        request: number,
        operation,
        body: Bytes::from_static(b"x"),
    };
    Message {
        epoch: 0,
        view: 0,
        replica: 0,
        body: Body::Request(request),
    }
}

/// Feeds `input`, flushes, completes every write; returns the replies with their tokens.
fn run(
    primary: &mut Replica<Null>,
    input: impl FnOnce(&mut Replica<Null>, &mut Vec<Effect>),
) -> Vec<(Reply, Option<RouteToken>)> {
    let mut effects = Vec::new();
    input(primary, &mut effects);
    primary.flush(&mut effects);
    let mut out = Vec::new();
    while !effects.is_empty() {
        for effect in std::mem::take(&mut effects) {
            match effect {
                Effect::Write { id, .. } => primary.on_persisted(id, &mut effects),
                Effect::Reply { route, message, .. } => match message.body {
                    Body::Reply(reply) => out.push((reply, route)),
                    other => panic!("a reply effect holds {other:?}"),
                },
                _ => {}
            }
        }
    }
    primary.invariants();
    out
}

fn send(
    primary: &mut Replica<Null>,
    message: Message,
    token: Option<u64>,
) -> Vec<(Reply, Option<RouteToken>)> {
    run(primary, |p, e| {
        p.on_client_request(message, token.map(RouteToken), e)
    })
}

/// Backup 1 acknowledges everything the primary holds: it commits.
fn commit(primary: &mut Replica<Null>) -> Vec<(Reply, Option<RouteToken>)> {
    let ok = PrepareOk {
        op: primary.op(),
        commit: 0,
        stamp: 0,
    };
    let message = Message {
        epoch: 0,
        view: 0,
        replica: 1,
        body: Body::PrepareOk(ok),
    };
    run(primary, |p, e| p.on_message(message, e))
}

fn routes(replies: &[(Reply, Option<RouteToken>)]) -> Vec<(u32, Option<u64>)> {
    replies
        .iter()
        .map(|(reply, route)| (reply.request, route.map(|route| route.0)))
        .collect()
}

#[test]
fn a_reply_carries_the_token_of_the_request_it_answers() {
    let mut primary = Replica::new(Config::new(1, 3), 0, Null, Start::Fresh);
    primary.set_clock(1_000);
    // A registration's reply has no token: there is no session to keep one in until it
    // executes (a driver keeps its own route for it).
    assert!(send(&mut primary, request(0, 1, Operation::Register), Some(1)).is_empty());
    let registered = commit(&mut primary);
    assert_eq!(routes(&registered), [(1, None)]);
    let session = registered[0].0.session;

    // A write's reply, once it executes, carries the token it came with.
    assert!(send(&mut primary, request(session, 1, Operation::Apply), Some(2)).is_empty());
    assert_eq!(routes(&commit(&mut primary)), [(1, Some(2))]);
    // A retry of it is answered from the client table with the retry's token.
    let again = send(&mut primary, request(session, 1, Operation::Apply), Some(3));
    assert_eq!(routes(&again), [(1, Some(3))]);

    // A retry of a request in flight (a new connection) moves its reply there.
    assert!(send(&mut primary, request(session, 2, Operation::Apply), Some(4)).is_empty());
    assert!(send(&mut primary, request(session, 2, Operation::Apply), Some(5)).is_empty());
    assert_eq!(routes(&commit(&mut primary)), [(2, Some(5))]);

    // A request with no token (the driver could give none) leaves its reply without one,
    // not with the token of the session's earlier request.
    assert!(send(&mut primary, request(session, 3, Operation::Apply), None).is_empty());
    assert_eq!(routes(&commit(&mut primary)), [(3, None)]);

    // A refusal is answered with the token of the request it refuses.
    let evicted = send(
        &mut primary,
        request(session + 1, 1, Operation::Apply),
        Some(6),
    );
    assert_eq!(routes(&evicted), [(1, Some(6))]);
}
