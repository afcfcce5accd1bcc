//! The client drivers against in-process fake replicas on 127.0.0.1: registration,
//! retries to every replica, following a view change, eviction, timeouts, reconnection
//! and the pipelined client. No processes; every wait is bounded.

use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vsr::client::{Client, ClientError, ClientOptions, Completion, PipelinedClient};
use vsr::protocol::{Body, ClientId, Message, Operation, Reply, ReplyStatus, Request, Session};
use vsr::wire::{self, Frame};

const CLUSTER: u128 = 7;

/// What the fake cluster does; tests change it while clients run.
#[derive(Default)]
struct Behaviour {
    /// The current view: only replica `view % n` answers.
    view: u32,
    /// Answer requests with `Evicted` (once per flag set).
    evict_next: bool,
    /// Drop every `Apply` (the primary is alive but never commits).
    silent: bool,
    /// Close the connection after the next reply.
    close_after_reply: bool,
}

#[derive(Default)]
struct State {
    behaviour: Behaviour,
    next_session: Session,
    /// Per client: session, latest request number and its reply (the client table).
    table: HashMap<ClientId, (Session, u32, Bytes)>,
    registers: usize,
    executed: usize,
    /// Requests received, per replica.
    received: Vec<usize>,
}

struct FakeCluster {
    addresses: Vec<SocketAddr>,
    state: Arc<Mutex<State>>,
}

impl FakeCluster {
    fn start(n: usize) -> FakeCluster {
        let state = Arc::new(Mutex::new(State {
            next_session: 1,
            received: vec![0; n],
            ..State::default()
        }));
        let mut addresses = Vec::new();
        for replica in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            addresses.push(listener.local_addr().unwrap());
            let state = state.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { return };
                    let state = state.clone();
                    std::thread::spawn(move || serve(replica, n, stream, state));
                }
            });
        }
        FakeCluster { addresses, state }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

fn serve(replica: usize, n: usize, mut stream: TcpStream, state: Arc<Mutex<State>>) {
    stream.set_nodelay(true).unwrap();
    let mut read = BytesMut::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let count = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(count) => count,
        };
        read.extend_from_slice(&chunk[..count]);
        let mut out = BytesMut::new();
        let mut close = false;
        while let Some(frame) =
            wire::decode(&mut read, CLUSTER, 1 << 20).expect("client frames decode")
        {
            // The client library sends its requests in batch frames; each counts alone.
            let messages: Vec<Message> = match frame {
                Frame::Message(message) => vec![message],
                Frame::Batch(batch) => batch.into_iter().collect(),
                _ => continue,
            };
            for message in messages {
                let Body::Request(request) = message.body else {
                    continue;
                };
                let mut state = state.lock().unwrap();
                state.received[replica] += 1;
                if let Some(reply) = answer(replica, n, &request, &mut state) {
                    wire::encode(&reply, CLUSTER, &mut out);
                    close |= std::mem::take(&mut state.behaviour.close_after_reply);
                }
            }
        }
        if stream.write_all(&out).is_err() || close {
            return;
        }
    }
}

/// The fake primary: registers, executes (the result echoes the operation), answers a
/// retry from the client table, and misbehaves as `Behaviour` says.
fn answer(replica: usize, n: usize, request: &Request, state: &mut State) -> Option<Message> {
    let view = state.behaviour.view;
    if replica != view as usize % n {
        return None; // Not the primary.
    }
    // Like the real replicas: a registration commits at op = its session number, and a
    // session's requests commit at higher ops (the client tells replies apart by this).
    let registering = request.operation == Operation::Register;
    let reply = |session: u64, status, result: Bytes| Message {
        epoch: 0,
        view,
        replica: replica as u8,
        body: Body::Reply(Reply {
            client: request.client,
            session,
            request: request.request,
            op: if registering {
                session
            } else {
                session + request.request as u64
            },
            status,
            result,
        }),
    };
    if std::mem::take(&mut state.behaviour.evict_next) {
        state.table.remove(&request.client);
        return Some(reply(request.session, ReplyStatus::Evicted, Bytes::new()));
    }
    match request.operation {
        Operation::Register => {
            state.registers += 1;
            let session = state.next_session;
            state.next_session += 1;
            state
                .table
                .insert(request.client, (session, 0, Bytes::new()));
            Some(reply(session, ReplyStatus::Ok, Bytes::new()))
        }
        // A read at any replica (or at the primary under a lease): answered at the op
        // it has seen, never ordered.
        Operation::Read | Operation::LeaseRead => {
            let mut answer = reply(request.session, ReplyStatus::Read, request.read_query());
            if let Body::Reply(read) = &mut answer.body {
                read.op = request.read_seen()?;
            }
            Some(answer)
        }
        // The fake replica takes a reconfiguration or a strict read like any request.
        Operation::Apply | Operation::Query | Operation::Reconfigure => {
            if state.behaviour.silent {
                return None;
            }
            let (session, latest, result) = state.table.get(&request.client)?.clone();
            if session != request.session {
                return Some(reply(request.session, ReplyStatus::Evicted, Bytes::new()));
            }
            if request.request == latest {
                return Some(reply(session, ReplyStatus::Ok, result));
            }
            state.executed += 1;
            let result = Bytes::from([b"echo:".as_slice(), &request.body].concat());
            state
                .table
                .insert(request.client, (session, request.request, result.clone()));
            Some(reply(session, ReplyStatus::Ok, result))
        }
    }
}

fn options(request_timeout: Duration) -> ClientOptions {
    ClientOptions {
        cluster_id: CLUSTER,
        request_timeout,
        connect_timeout: Duration::from_millis(500),
        message_bytes_max: 1 << 20,
        request_body_bytes_max: 1024,
        cluster_key: None,
        witnesses: Default::default(),
    }
}

fn check_call(client: &mut Client, operation: &str) {
    let result = client
        .call(Bytes::copy_from_slice(operation.as_bytes()))
        .expect(operation);
    assert_eq!(result, format!("echo:{operation}").as_bytes());
}

#[test]
fn calls_register_and_execute_once() {
    let cluster = FakeCluster::start(3);
    let mut client = Client::connect(&cluster.addresses, options(Duration::from_secs(5))).unwrap();
    for i in 0..100 {
        check_call(&mut client, &format!("op{i}"));
    }
    cluster.with(|s| {
        assert_eq!(s.registers, 1);
        assert_eq!(s.executed, 100);
        assert_eq!(
            s.received[1] + s.received[2],
            0,
            "requests went to the primary only"
        );
    });
}

/// An operation larger than the replicas take is refused at once, without a round trip
/// (the replicas close a connection that announces a larger frame), and the session goes
/// on.
#[test]
fn an_operation_above_the_replicas_limit_is_rejected_at_once() {
    let cluster = FakeCluster::start(3);
    let mut client = Client::connect(&cluster.addresses, options(Duration::from_secs(5))).unwrap();
    check_call(&mut client, "before");
    let started = std::time::Instant::now();
    let result = client.call(Bytes::from(vec![b'x'; 1025]));
    assert!(
        matches!(result, Err(ClientError::Rejected(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    check_call(&mut client, "after");
    cluster.with(|s| assert_eq!(s.executed, 2));
}

#[test]
fn follows_a_view_change() {
    let cluster = FakeCluster::start(3);
    let mut client = Client::connect(&cluster.addresses, options(Duration::from_secs(5))).unwrap();
    check_call(&mut client, "before");
    cluster.with(|s| s.behaviour.view = 4); // Replica 1 is primary now.
                                            // The old primary drops the request; the retry goes to every replica.
    let started = Instant::now();
    check_call(&mut client, "during");
    assert!(started.elapsed() >= vsr::client::TICK * vsr::client::RETRY_TIMEOUT_TICKS as u32 / 2);
    let received_before = cluster.with(|s| s.received.clone());
    for i in 0..20 {
        check_call(&mut client, &format!("after{i}"));
    }
    let received_after = cluster.with(|s| s.received.clone());
    // A retry of "during" sent to every replica may still be on its way to the old
    // primary when the snapshot is taken (CI saw one): allow those, never the 20 calls.
    assert!(
        received_after[0] <= received_before[0] + 2,
        "nothing more to the old primary: {received_before:?} -> {received_after:?}"
    );
    assert_eq!(
        received_after[1],
        received_before[1] + 20,
        "straight to the new primary"
    );
}

#[test]
fn eviction_is_reported_then_a_fresh_session_registers() {
    let cluster = FakeCluster::start(3);
    let mut client = Client::connect(&cluster.addresses, options(Duration::from_secs(5))).unwrap();
    check_call(&mut client, "a");
    cluster.with(|s| s.behaviour.evict_next = true);
    assert!(matches!(
        client.call(Bytes::from_static(b"b")),
        Err(ClientError::Evicted)
    ));
    check_call(&mut client, "c");
    cluster.with(|s| assert_eq!(s.registers, 2));
}

#[test]
fn a_silent_cluster_times_out_within_the_deadline_then_recovers() {
    let cluster = FakeCluster::start(3);
    let timeout = Duration::from_millis(400);
    let mut client = Client::connect(&cluster.addresses, options(timeout)).unwrap();
    cluster.with(|s| s.behaviour.silent = true);
    let started = Instant::now();
    assert!(matches!(
        client.call(Bytes::from_static(b"x")),
        Err(ClientError::Timeout)
    ));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_millis(300),
        "{elapsed:?}"
    );
    cluster.with(|s| s.behaviour.silent = false);
    check_call(&mut client, "y");
    cluster.with(|s| assert_eq!(s.registers, 2, "a timed-out session is replaced"));
}

#[test]
fn nobody_listening_is_disconnected_within_the_connect_timeout() {
    // Ports bound but not listening: connections are refused, and no other test (which
    // may be starting replicas on free ports right now) can take them meanwhile.
    let reserved: Vec<BoundPort> = (0..3).map(|_| BoundPort::new()).collect();
    let addresses: Vec<SocketAddr> = reserved.iter().map(|port| port.address).collect();
    let started = Instant::now();
    let result = Client::connect(&addresses, options(Duration::from_secs(5)));
    assert!(
        matches!(result, Err(ClientError::Disconnected)),
        "{:?}",
        result.err()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn reconnects_after_the_replica_closes() {
    let cluster = FakeCluster::start(3);
    let mut client = Client::connect(&cluster.addresses, options(Duration::from_secs(5))).unwrap();
    for i in 0..5 {
        cluster.with(|s| s.behaviour.close_after_reply = true);
        check_call(&mut client, &format!("op{i}"));
    }
    cluster.with(|s| assert_eq!(s.executed, 5));
}

#[test]
fn pipelined_sessions_complete_independently() {
    let cluster = FakeCluster::start(3);
    let sessions = 64;
    let mut client = PipelinedClient::connect(
        &cluster.addresses,
        options(Duration::from_secs(5)),
        sessions,
        4,
    )
    .unwrap();
    assert_eq!(client.sessions(), sessions);
    let rounds = 20;
    let mut remaining = vec![rounds; sessions];
    for session in 0..sessions {
        client
            .submit(session, Bytes::from(format!("s{session}r{rounds}")))
            .unwrap();
    }
    assert!(matches!(
        client.submit(0, Bytes::new()),
        Err(ClientError::Busy(0))
    ));
    let mut completions: Vec<Completion> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut outstanding = sessions;
    while outstanding > 0 {
        assert!(
            Instant::now() < deadline,
            "pipelined operations did not finish"
        );
        client
            .poll(&mut completions, Duration::from_millis(100))
            .unwrap();
        for Completion { session, result } in completions.drain(..) {
            let expected = format!("echo:s{session}r{}", remaining[session]);
            assert_eq!(result.unwrap(), expected.as_bytes());
            remaining[session] -= 1;
            if remaining[session] == 0 {
                outstanding -= 1;
            } else {
                client
                    .submit(
                        session,
                        Bytes::from(format!("s{session}r{}", remaining[session])),
                    )
                    .unwrap();
            }
        }
    }
    cluster.with(|s| {
        assert_eq!(s.registers, sessions);
        assert_eq!(s.executed, sessions * rounds);
    });
}

/// `poll_each` (the closed loop's poll) hands every completion over as it is read and
/// submits what the caller returns on the same session at once: every operation executes
/// exactly once, in each session's order. With more sessions than one tick visits
/// (their ticks then come a few at a time).
#[test]
fn pipelined_poll_each_resubmits_as_it_goes() {
    let cluster = FakeCluster::start(3);
    let sessions = 600;
    let mut client = PipelinedClient::connect(
        &cluster.addresses,
        options(Duration::from_secs(5)),
        sessions,
        4,
    )
    .unwrap();
    let rounds = 5;
    let mut remaining = vec![rounds; sessions];
    for session in 0..sessions {
        client
            .submit(session, Bytes::from(format!("s{session}r{rounds}")))
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut outstanding = sessions;
    while outstanding > 0 {
        assert!(
            Instant::now() < deadline,
            "pipelined operations did not finish"
        );
        let mut next = |Completion { session, result }: Completion, _at: Instant| {
            let expected = format!("echo:s{session}r{}", remaining[session]);
            assert_eq!(result.unwrap(), expected.as_bytes());
            remaining[session] -= 1;
            if remaining[session] == 0 {
                outstanding -= 1;
                return None;
            }
            Some(Bytes::from(format!("s{session}r{}", remaining[session])))
        };
        client
            .poll_each(Duration::from_millis(100), &mut next)
            .unwrap();
    }
    // Every session is idle again: a submit is accepted, and one more is refused.
    client.submit(0, Bytes::from_static(b"last")).unwrap();
    assert!(matches!(
        client.submit(0, Bytes::new()),
        Err(ClientError::Busy(0))
    ));
    cluster.with(|s| {
        assert_eq!(s.registers, sessions);
        assert_eq!(s.executed, sessions * rounds);
    });
}

#[test]
fn bad_arguments_are_typed_errors() {
    let options = options(Duration::from_secs(1));
    assert!(matches!(
        Client::connect(&[], options.clone()),
        Err(ClientError::InvalidArgument(_))
    ));
    let address: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let result = PipelinedClient::connect(&[address], options, 0, 1);
    assert!(matches!(result, Err(ClientError::InvalidArgument(_))));
}

#[test]
fn a_replica_speaking_gibberish_is_a_protocol_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.write_all(&[0xff; 512]);
        }
    });
    let started = Instant::now();
    let result = Client::connect(&[address], options(Duration::from_millis(500)));
    assert!(
        matches!(result, Err(ClientError::Protocol(_))),
        "{:?}",
        result.err()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A TCP socket bound to a free loopback port without `listen`: the port stays taken,
/// and connecting to it is refused.
struct BoundPort {
    fd: i32,
    address: SocketAddr,
}

impl BoundPort {
    fn new() -> BoundPort {
        // SAFETY: plain socket calls on a descriptor this struct owns; `sockaddr_in` is
        // plain old data, zero-initialised, and its size is passed with every call.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket");
            let mut address: libc::sockaddr_in = std::mem::zeroed();
            address.sin_family = libc::AF_INET as libc::sa_family_t;
            address.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let pointer = &mut address as *mut libc::sockaddr_in as *mut libc::sockaddr;
            assert_eq!(libc::bind(fd, pointer, size), 0, "bind");
            let mut size = size;
            assert_eq!(libc::getsockname(fd, pointer, &mut size), 0, "getsockname");
            let port = u16::from_be(address.sin_port);
            BoundPort {
                fd,
                address: SocketAddr::from(([127, 0, 0, 1], port)),
            }
        }
    }
}

impl Drop for BoundPort {
    fn drop(&mut self) {
        // SAFETY: `fd` is open and owned by this struct alone.
        unsafe { libc::close(self.fd) };
    }
}
