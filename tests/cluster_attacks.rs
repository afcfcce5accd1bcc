//! Attacks from a process that can reach a replica's port, against real `vsr replica`
//! processes on 127.0.0.1: impersonating a replica without the key, replaying a
//! handshake, announcing huge frames, holding idle connections, asking for stats without
//! reading, and a client or replica with the wrong configuration. In each, the cluster
//! keeps serving, memory stays bounded and the reason is logged.

mod common;

use bytes::{Bytes, BytesMut};
use common::client::TestClient;
use common::cluster::{free_addresses, TestCluster};
use common::wait_for;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vsr::auth::{ClusterKey, Role, Transcript};
use vsr::client::{Client, ClientError, ClientOptions, PipelinedClient};
use vsr::protocol::{Body, Commit, Message};
use vsr::service::kv::KvOp;
use vsr::wire::{
    self, Command as WireCommand, Frame, Header, Hello, Limits, Peer, Terms, HEADER_BYTES,
};

const SECOND: Duration = Duration::from_secs(1);
const KEY: &[u8] = b"a test key of at least sixteen bytes";

/// The next frame the replica sends on `stream`, or `None` once it closed the connection.
fn next_frame(stream: &mut TcpStream, buffer: &mut BytesMut, cluster: u128) -> Option<Frame> {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + 10 * SECOND;
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some(frame)) = wire::decode(buffer, cluster, 1 << 20) {
            return Some(frame);
        }
        assert!(
            Instant::now() < deadline,
            "the replica neither answered nor closed"
        );
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
}

/// Reads until the replica closes `stream` (bounded); what it sent is ignored.
fn expect_closed(stream: &mut TcpStream) {
    let mut buffer = BytesMut::new();
    while next_frame(stream, &mut buffer, 0).is_some() {}
}

/// The hello replica `index` of `cluster` sends (members and default limits).
fn replica_hello(cluster: &TestCluster, index: u8, nonce: Option<[u8; 32]>) -> BytesMut {
    let hello = Hello {
        peer: Peer::Replica(index.into()),
        terms: Terms {
            cluster: cluster.cluster,
            epoch: 0,
            members: cluster.addresses().to_vec(),
            limits: Some(Limits::of(&vsr::Config::new(cluster.cluster, 3))),
        },
        nonce,
    };
    let mut out = BytesMut::new();
    wire::encode_hello(&hello, &mut out);
    out
}

fn keyed_client(cluster: &TestCluster, key: Option<&[u8]>) -> Result<Client, ClientError> {
    let options = ClientOptions {
        cluster_id: cluster.cluster,
        cluster_key: key.map(|k| ClusterKey::from_bytes(k).unwrap()),
        request_timeout: 10 * SECOND,
        ..ClientOptions::default()
    };
    Client::connect(cluster.addresses(), options)
}

fn put(client: &mut Client, key: &str, value: &str) {
    let op = KvOp::Put(
        Bytes::copy_from_slice(key.as_bytes()),
        Bytes::copy_from_slice(value.as_bytes()),
    );
    client.call(op.encode()).expect("put");
}

#[test]
fn without_the_key_no_one_speaks_as_a_replica_and_handshakes_do_not_replay() {
    let mut cluster = TestCluster::start_keyed(3, "kv", &[], Some(KEY));
    cluster.wait_until_serving(30 * SECOND);
    let primary = cluster.primary().expect("one primary");
    let address = cluster.addresses()[primary];
    let other = ((primary + 1) % 3) as u8;
    let key = ClusterKey::from_bytes(KEY).unwrap();

    // A hello without a key, then a forged commit: refused before the commit is read.
    let mut stream = TcpStream::connect(address).unwrap();
    let mut frames = replica_hello(&cluster, other, None);
    let forged = Message {
        epoch: 0,
        view: 0,
        replica: other,
        body: Body::Commit(Commit {
            commit: 1_000_000,
            actives_commit: 0,
            stamp: 0,
        }),
    };
    wire::encode(&forged, cluster.cluster, &mut frames);
    stream.write_all(&frames).unwrap();
    let mut buffer = BytesMut::new();
    match next_frame(&mut stream, &mut buffer, cluster.cluster) {
        Some(Frame::Refusal(refusal)) => assert!(refusal.reason.contains("requires a cluster key")),
        other => panic!("expected a refusal, got {other:?}"),
    }
    expect_closed(&mut stream);

    // A keyed hello without the key: a made-up proof fails.
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .write_all(&replica_hello(&cluster, other, Some([1; 32])))
        .unwrap();
    let mut buffer = BytesMut::new();
    let Some(Frame::Welcome(_)) = next_frame(&mut stream, &mut buffer, cluster.cluster) else {
        panic!("a keyed hello is welcomed with a challenge")
    };
    let mut proof = BytesMut::new();
    wire::encode_proof(&[7; 32], cluster.cluster, &mut proof);
    stream.write_all(&proof).unwrap();
    match next_frame(&mut stream, &mut buffer, cluster.cluster) {
        Some(Frame::Refusal(refusal)) => assert!(refusal.reason.contains("does not verify")),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // A genuine handshake, recorded, then replayed on a new connection: the replica's
    // fresh nonce makes the recorded proof worthless.
    let nonce = [3; 32];
    let hello = replica_hello(&cluster, other, Some(nonce));
    let mut stream = TcpStream::connect(address).unwrap();
    stream.write_all(&hello).unwrap();
    let mut buffer = BytesMut::new();
    let Some(Frame::Welcome(welcome)) = next_frame(&mut stream, &mut buffer, cluster.cluster)
    else {
        panic!("welcomed")
    };
    let (acceptor_nonce, _) = welcome.keyed.expect("a keyed welcome");
    let transcript = Transcript {
        cluster: cluster.cluster,
        connector: Peer::Replica(other.into()),
        acceptor: primary as u64,
        connector_nonce: nonce,
        acceptor_nonce,
    };
    let mut recorded = hello.clone();
    wire::encode_proof(
        &key.mac(Role::Connector, &transcript),
        cluster.cluster,
        &mut recorded,
    );
    drop(stream);
    let mut replay = TcpStream::connect(address).unwrap();
    replay.write_all(&recorded).unwrap();
    let mut buffer = BytesMut::new();
    let mut refused = false;
    while let Some(frame) = next_frame(&mut replay, &mut buffer, cluster.cluster) {
        refused |= matches!(frame, Frame::Refusal(_));
    }
    assert!(refused, "a replayed handshake was not refused");

    // Clients: without the key refused at once, with it served.
    let started = Instant::now();
    let error = keyed_client(&cluster, None)
        .err()
        .expect("a keyless client is refused");
    assert!(matches!(error, ClientError::Refused(_)), "{error}");
    assert!(
        started.elapsed() < 5 * SECOND,
        "the refusal took {:?}",
        started.elapsed()
    );
    let mut client = keyed_client(&cluster, Some(KEY)).unwrap();
    put(&mut client, "k", "v");
    let wrong = keyed_client(&cluster, Some(b"another key of sixteen bytes")).err();
    assert!(wrong.is_some(), "a client with another key was served");

    let log = cluster.log(primary);
    assert!(log.contains("requires a cluster key"), "{log}");
    // Replicas hold their messages until their own handshakes are done (a message sent
    // before the proof was once refused, and the cluster could not start).
    for i in 0..3 {
        assert!(
            !cluster.log(i).contains("expected the proof"),
            "{}",
            cluster.log(i)
        );
    }
    let stats = cluster.stats(primary).unwrap();
    assert_eq!(stats.u64("view_changes"), 0, "{}", stats.json);
    assert!(stats.u64("commit") < 1_000_000);
}

/// A header announcing a large body, followed by all of it but one byte.
fn announce(cluster: u128, size: u32) -> Vec<u8> {
    let mut header = Header {
        size,
        cluster,
        command: WireCommand::StatsReply as u8,
        ..Header::default()
    };
    let mut bytes = vec![0u8; HEADER_BYTES];
    header.write_sealed((&mut bytes[..]).try_into().unwrap());
    bytes
}

#[test]
fn announced_frames_one_byte_short_keep_memory_bounded() {
    let mut cluster = TestCluster::start(3, "kv");
    cluster.wait_until_serving(30 * SECOND);
    let primary = cluster.primary().expect("one primary");
    let address = cluster.addresses()[primary];
    let before = cluster.rss_kib(primary);

    // 16 MiB announced before any hello: refused from the header alone.
    let mut streams = Vec::new();
    for _ in 0..32 {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .write_all(&announce(cluster.cluster, 16 << 20))
            .unwrap();
        let _ = stream.write_all(&vec![0u8; 256 << 10]);
        streams.push(stream);
    }
    for stream in &mut streams {
        expect_closed(stream);
    }
    // The largest frame still accepted, minus one byte, on 64 connections: each holds at
    // most one request's worth (about 64 KiB) until the handshake deadline.
    let request_max = HEADER_BYTES + 37 + (64 << 10);
    let mut held = Vec::new();
    for _ in 0..64 {
        let mut stream = TcpStream::connect(address).unwrap();
        let mut bytes = announce(cluster.cluster, request_max as u32);
        bytes.resize(request_max - 1, 0);
        let _ = stream.write_all(&bytes);
        held.push(stream);
    }
    let mut client =
        TestClient::connect(cluster.addresses(), cluster.cluster, 10 * SECOND).unwrap();
    client.put(b"still", b"serving", 10 * SECOND).unwrap();
    let grown_kib = cluster.rss_kib(primary).saturating_sub(before);
    // 64 × (64 KiB buffered + 64 KiB read chunk) = 8 MiB; allow 4× for the allocator.
    assert!(grown_kib < 32 << 10, "primary grew by {grown_kib} KiB");
    let log = cluster.log(primary);
    assert!(log.contains("exceeds the maximum"), "{log}");
    assert_eq!(cluster.stats(primary).unwrap().u64("view_changes"), 0);
}

#[test]
fn idle_connections_do_not_lock_clients_or_replicas_out() {
    let extra = ["--connections-max", "32", "--handshake-timeout-ms", "60000"];
    let mut cluster = TestCluster::start_with(3, "kv", &extra);
    cluster.wait_until_serving(30 * SECOND);
    let primary = cluster.primary().expect("one primary");
    let address = cluster.addresses()[primary];
    // Far more idle connections than slots: the oldest are closed to make room.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    let mut client =
        TestClient::connect(cluster.addresses(), cluster.cluster, 10 * SECOND).unwrap();
    for i in 0..20u8 {
        client.put(&[b'k', i], b"v", 10 * SECOND).unwrap();
    }
    // A backup restarted now still links to the primary: replica slots are reserved.
    let backup = (primary + 1) % 3;
    cluster.kill9(backup);
    cluster.restart(backup);
    cluster.wait_until_serving(30 * SECOND);
    let stats = cluster.stats(primary).unwrap();
    assert_eq!(stats.u64("view_changes"), 0, "{}", stats.json);
    assert!(cluster.log(primary).contains("closed to make room"));
    drop(idle);
}

#[test]
fn per_address_limit_and_handshake_deadline_close_idle_connections() {
    let extra = [
        "--connections-per-ip",
        "40",
        "--handshake-timeout-ms",
        "500",
    ];
    let mut cluster = TestCluster::start_with(3, "kv", &extra);
    cluster.wait_until_serving(30 * SECOND);
    let primary = cluster.primary().expect("one primary");
    let address = cluster.addresses()[primary];
    let mut idle: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    // Every one of them is closed: at once beyond the limit, the rest at the deadline.
    let started = Instant::now();
    for stream in &mut idle {
        expect_closed(stream);
    }
    assert!(started.elapsed() < 10 * SECOND);
    let log = cluster.log(primary);
    assert!(
        log.contains("connections from this address already"),
        "{log}"
    );
    assert!(log.contains("no handshake within"), "{log}");
    let mut client =
        TestClient::connect(cluster.addresses(), cluster.cluster, 10 * SECOND).unwrap();
    client.put(b"k", b"v", 10 * SECOND).unwrap();
}

#[test]
fn stats_requesters_that_never_read_do_not_stall_the_cluster() {
    let mut cluster = TestCluster::start(3, "kv");
    cluster.wait_until_serving(30 * SECOND);
    let primary = cluster.primary().expect("one primary");
    let address = cluster.addresses()[primary];
    let mut flood = BytesMut::new();
    common::encode_hello(Peer::Client(77), cluster.cluster, &mut flood);
    for _ in 0..20_000 {
        wire::encode_stats_request(cluster.cluster, &mut flood);
    }
    let mut requesters: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    for stream in &mut requesters {
        stream.set_nonblocking(true).unwrap();
        let _ = stream.write(&flood);
    }
    let mut client =
        TestClient::connect(cluster.addresses(), cluster.cluster, 10 * SECOND).unwrap();
    let started = Instant::now();
    for i in 0..50u8 {
        client.put(&[b's', i], b"v", 10 * SECOND).unwrap();
    }
    assert!(
        started.elapsed() < 10 * SECOND,
        "50 puts took {:?}",
        started.elapsed()
    );
    let stats = cluster.stats(primary).unwrap();
    assert_eq!(stats.u64("view_changes"), 0, "{}", stats.json);
    assert!(cluster.log(primary).contains("stats requests too frequent"));
    drop(requesters);
}

fn vsr_kv(args: &[&str]) -> (bool, String, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_vsr"))
        .arg("kv")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text, started.elapsed())
}

#[test]
fn a_wrong_configuration_is_a_clear_error_at_once() {
    let mut cluster = TestCluster::start(3, "kv");
    cluster.wait_until_serving(30 * SECOND);
    let list = |addresses: &[SocketAddr]| {
        addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let right = list(cluster.addresses());
    let (ok, text, took) = vsr_kv(&["--cluster", &right, "--cluster-id", "99", "put", "k", "v"]);
    assert!(!ok && text.contains("cluster id differs"), "{text}");
    assert!(took < 5 * SECOND, "took {took:?}");
    let mut swapped = cluster.addresses().to_vec();
    swapped.swap(1, 2);
    let (ok, text, took) = vsr_kv(&["--cluster", &list(&swapped), "put", "k", "v"]);
    assert!(!ok && text.contains("member lists differ"), "{text}");
    assert!(took < 5 * SECOND, "took {took:?}");

    // A replica started with a member list that differs: one clear line in its log per
    // peer, not one per reconnect, and the cluster is not disturbed.
    let rogue = free_addresses(1)[0];
    let mut members = cluster.addresses().to_vec();
    members[1] = rogue;
    let mut child = Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args(["replica", "--cluster", &list(&members), "--replica", "1"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = format!("{} here, {rogue} there", cluster.addresses()[1]);
    let log0 = || cluster.log(0);
    wait_for("the rogue replica's refusal", 10 * SECOND, || {
        log0().contains(&line)
    });
    // Not a wait for a condition: the rogue keeps redialling for this long, and the
    // refusal must not be logged again on either side.
    std::thread::sleep(3 * SECOND);
    child.kill().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child.wait().unwrap();
    let refusals = stderr.matches("member lists differ").count();
    assert!((1..=2).contains(&refusals), "{refusals} lines:\n{stderr}");
    assert_eq!(log0().matches(&line).count(), 1, "{}", log0());
    let mut client =
        TestClient::connect(cluster.addresses(), cluster.cluster, 10 * SECOND).unwrap();
    client.put(b"k", b"v", 10 * SECOND).unwrap();
}

/// A node of another wire version (a newer binary, or one from before versions, which
/// sent 0 there) hears at once why it is refused, in a refusal its own decoder reads, and
/// every replica logs it; the cluster keeps serving.
#[test]
fn a_node_of_another_wire_version_is_refused_by_name() {
    let mut cluster = TestCluster::start(3, "kv");
    cluster.wait_until_serving(30 * SECOND);
    for (index, version) in [(0, wire::VERSION + 1), (1, 0), (2, wire::VERSION + 1)] {
        let hello = Hello {
            peer: if index == 1 {
                Peer::Replica(0)
            } else {
                Peer::Client(77)
            },
            terms: Terms {
                cluster: cluster.cluster,
                epoch: 0,
                members: cluster.addresses().to_vec(),
                limits: Some(Limits::of(&vsr::Config::new(cluster.cluster, 3))),
            },
            nonce: None,
        };
        let mut frame = BytesMut::new();
        wire::encode_hello(&hello, &mut frame);
        let header_bytes: &mut [u8; HEADER_BYTES] =
            (&mut frame[..HEADER_BYTES]).try_into().unwrap();
        let mut header = Header::read(header_bytes);
        header.version = version;
        header.write_sealed(header_bytes);
        let mut stream = TcpStream::connect(cluster.addresses()[index]).unwrap();
        stream.write_all(&frame).unwrap();
        let mut buffer = BytesMut::new();
        let named = format!("wire version {version} there, {} here", wire::VERSION);
        match next_frame(&mut stream, &mut buffer, cluster.cluster) {
            Some(Frame::Refusal(refusal)) => {
                assert_eq!(refusal.code, wire::RefusalCode::VersionDiffers);
                assert_eq!(refusal.version, wire::VERSION);
                assert!(refusal.reason.contains(&named), "{}", refusal.reason);
            }
            other => panic!("replica {index}, version {version}: {other:?}"),
        }
        expect_closed(&mut stream);
        wait_for("the refusal in the replica's log", 10 * SECOND, || {
            cluster.log(index).contains(&named)
        });
    }
    let mut client =
        TestClient::connect(cluster.addresses(), cluster.cluster, 10 * SECOND).unwrap();
    client.put(b"k", b"v", 10 * SECOND).unwrap();
}

/// Without a cluster key anyone can say it is a replica (the README's security section says
/// so); the messages that used to crash replicas (issue: hardening) must then be dropped,
/// never panic a replica. Each replica gets, from a process posing as another replica: a
/// GetState at the largest op, a StartView whose log lacks committed ops, a
/// StartViewChange at the largest view, DoViewChanges whose logs lack committed ops, a
/// NewState past the op it vouches for, and Prepares of absurd op ranges. Every replica
/// keeps running and the cluster keeps serving, with the data it had.
#[test]
fn forged_replica_messages_are_dropped_and_the_cluster_keeps_serving() {
    use vsr::protocol::{
        DoViewChange, Entry, GetState, NewState, Operation, Prepare, StartView, StartViewChange,
        VIEW_MAX,
    };
    let mut cluster = TestCluster::start(3, "kv");
    cluster.wait_until_serving(30 * SECOND);
    let mut client = keyed_client(&cluster, None).unwrap();
    for i in 0..20 {
        put(&mut client, &format!("k{i}"), "v");
    }
    let entry = |timestamp| Entry {
        client: 9,
        session: 1,
        request: 1,
        timestamp,
        operation: Operation::Apply,
        body: Bytes::from_static(b"forged"),
    };
    let bodies = |view: u32, sender: u64| -> Vec<(u32, Body)> {
        vec![
            (
                view,
                Body::GetState(GetState {
                    op: u64::MAX,
                    learner: None,
                }),
            ),
            (
                view,
                Body::GetState(GetState {
                    op: 1 << 62,
                    learner: None,
                }),
            ),
            (
                view + 1,
                Body::StartView(StartView {
                    op: 1,
                    commit: 0,
                    op_first: 1,
                    entries: vec![entry(1)],
                }),
            ),
            (
                u32::MAX,
                Body::StartViewChange(StartViewChange { sender_view: 0 }),
            ),
            (
                VIEW_MAX,
                Body::StartViewChange(StartViewChange {
                    sender_view: VIEW_MAX,
                }),
            ),
            (
                view + 3,
                Body::DoViewChange(DoViewChange {
                    last_normal_view: view + 2,
                    op: 0,
                    commit: 0,
                    actives_commit: 0,
                    entries: Vec::new(),
                }),
            ),
            (
                view,
                Body::NewState(NewState {
                    sender,
                    commit: 5,
                    op: 5,
                    vouches: true,
                    checkpoint: None,
                    op_first: 4,
                    entries: vec![entry(1), entry(2), entry(3)],
                }),
            ),
            (
                view,
                Body::Prepare(Prepare {
                    op_first: (1 << 62) - 1,
                    commit: 1 << 62,
                    actives_commit: 0,
                    stamp: 0,
                    entries: vec![entry(1), entry(2)],
                }),
            ),
        ]
    };
    for target in 0..3 {
        let view = cluster.stats(target).unwrap().u64("view") as u32;
        let posing_as = ((target + 1) % 3) as u8;
        for (message_view, body) in bodies(view, posing_as as u64) {
            // One connection per message: the replica closes a connection that sends
            // something no correct replica sends.
            let mut stream = TcpStream::connect(cluster.addresses()[target]).unwrap();
            let mut frames = replica_hello(&cluster, posing_as, None);
            let message = Message {
                epoch: 0,
                view: message_view,
                replica: posing_as,
                body,
            };
            wire::encode(&message, cluster.cluster, &mut frames);
            stream.write_all(&frames).unwrap();
            drop(stream);
        }
    }
    for replica in 0..3 {
        assert!(
            cluster.is_running(replica),
            "replica {replica} exited:\n{}",
            cluster.log(replica)
        );
    }
    cluster.wait_until_serving(30 * SECOND);
    for replica in 0..3 {
        let view = cluster.stats(replica).unwrap().u64("view");
        assert!(
            view < 1024,
            "a forged ask moved replica {replica} to view {view}"
        );
    }
    let mut client = keyed_client(&cluster, None).unwrap();
    put(&mut client, "after", "1");
    let get = KvOp::Get(Bytes::from_static(b"k19")).encode();
    let value = client.call(get).expect("get");
    assert_eq!(
        value,
        vsr::service::kv::KvResult::Value(Bytes::from_static(b"v")).encode()
    );
}

/// A client with another cluster id, or with an address list that is not the cluster's
/// (in another order, with a member that is not one, with one too many or too few), hears
/// the replicas' refusal at once through every front end: `Client`, `PipelinedClient` (over
/// several connection slots) and `vsr kv`; never a timeout after `request_timeout`.
#[test]
fn every_client_hears_a_wrong_configuration_at_once() {
    let mut cluster = TestCluster::start(3, "kv");
    cluster.wait_until_serving(30 * SECOND);
    let members = cluster.addresses().to_vec();
    let stranger = free_addresses(1)[0];
    let wrong_lists = [
        (
            "members in another order",
            vec![members[0], members[2], members[1]],
        ),
        (
            "a stranger as replica 2",
            vec![members[0], members[1], stranger],
        ),
        (
            "a stranger as replica 0",
            vec![stranger, members[1], members[2]],
        ),
        (
            "a fourth member",
            vec![members[0], members[1], members[2], stranger],
        ),
        ("two members only", vec![members[0], members[1]]),
    ];
    let mut cases = vec![(
        "another cluster id",
        members.clone(),
        cluster.cluster + 1,
        "cluster id differs",
    )];
    for (what, list) in wrong_lists {
        cases.push((what, list, cluster.cluster, "member lists differ"));
    }
    // Far above the bound checked below: a refusal reported only at the deadline fails.
    let options = |cluster_id| ClientOptions {
        cluster_id,
        request_timeout: 30 * SECOND,
        ..ClientOptions::default()
    };
    for (what, list, cluster_id, reason) in cases {
        let check = |client: &str, result: Result<(), ClientError>, took: Duration| {
            match &result {
                Err(ClientError::Refused(text)) => {
                    assert!(text.contains(reason), "{client}, {what}: {text}")
                }
                other => panic!("{client}, {what}: {other:?} after {took:?}"),
            }
            assert!(
                took < 5 * SECOND,
                "{client}, {what}: refused after {took:?}"
            );
        };
        let started = Instant::now();
        let result = Client::connect(&list, options(cluster_id)).map(drop);
        check("Client", result, started.elapsed());
        let started = Instant::now();
        let result = PipelinedClient::connect(&list, options(cluster_id), 8, 2).map(drop);
        check("PipelinedClient", result, started.elapsed());

        let text_list = list
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let id = cluster_id.to_string();
        let (ok, text, took) = vsr_kv(&[
            "--cluster",
            &text_list,
            "--cluster-id",
            &id,
            "--timeout-ms",
            "30000",
            "get",
            "k",
        ]);
        assert!(!ok && text.contains(reason), "vsr kv, {what}: {text}");
        assert!(took < 5 * SECOND, "vsr kv, {what}: took {took:?}");
    }
    // The right configuration is served.
    let mut client = Client::connect(&members, options(cluster.cluster)).unwrap();
    put(&mut client, "k", "v");
}
