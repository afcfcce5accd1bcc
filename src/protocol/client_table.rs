//! The client table (paper 4.1), changed only by committed operations.
//!
//! Two pitfalls of the paper's table are avoided by construction:
//! - sessions are registered through the log, and a session number is the op its
//!   registration committed at, so numbers only increase and a restarted client can never
//!   collide with the request numbers of its earlier life;
//! - the table records only *committed* requests; requests that are merely prepared live in
//!   the primary's in-flight set, so a request dropped by a view change never locks its
//!   client out.
//!
//! The table is bounded: registering when full evicts the session whose latest committed
//! op is smallest. Every replica executes the same log, so every replica evicts the same.

use super::message::{ClientId, Op, RequestNumber, Session, View};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// Hashing of client ids, keyed per process. Client ids are the clients' own choice,
/// so a map keyed by them must not let a client pick ids that land in one bucket: with
/// an unkeyed multiply, ids that agree in their low bits share a bucket (the low bits of
/// a product depend only on the low bits of its factors), and a few thousand such
/// sessions would make every probe of the client table, the in-flight set and the
/// route table a scan. A mix of xor-shifts and multiplies keyed with a secret spreads
/// every bit of the id over the whole hash, for two multiplies. The key is
/// drawn once per process: nothing depends on the maps' iteration order (the snapshot
/// sorts, eviction takes a unique minimum, the requests turned away by a
/// RECONFIGURATION are kept in order), so the simulator stays deterministic.
#[derive(Clone, Copy, Debug)]
pub struct ClientIdHashing {
    key: (u64, u64),
}

impl ClientIdHashing {
    /// Hashing with a given key (tests); maps use the process's key (`Default`).
    pub fn with_key(key: (u64, u64)) -> ClientIdHashing {
        ClientIdHashing { key }
    }
}

impl Default for ClientIdHashing {
    fn default() -> ClientIdHashing {
        static KEY: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
        let key = *KEY.get_or_init(|| {
            // std's random state is seeded from the operating system's randomness.
            let random = std::hash::RandomState::new();
            (random.hash_one(0x5eed_u64), random.hash_one(0xc11e_u64))
        });
        ClientIdHashing { key }
    }
}

impl BuildHasher for ClientIdHashing {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            key: self.key,
            state: 0,
        }
    }
}

/// The hasher of [`ClientIdHashing`].
#[derive(Clone, Copy, Debug)]
pub struct IdHasher {
    key: (u64, u64),
    state: u64,
}

impl IdHasher {
    /// A keyed xor-shift-multiply mix (the finaliser of MurmurHash3 with a secret odd
    /// multiplier): the shifts carry the id's high bits into the low (bucket) bits and
    /// the multiplies carry every bit into the high (tag) bits.
    fn mix(&self, value: u64) -> u64 {
        let mut x = value ^ self.key.0;
        x ^= x >> 32;
        x = x.wrapping_mul(self.key.1 | 1);
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^ (x >> 32)
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.state = self.mix(self.state ^ u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.state = self.mix(self.state ^ value);
    }
}

/// A map keyed by client id.
pub type ClientMap<V> = HashMap<ClientId, V, ClientIdHashing>;

/// An opaque token a driver hands in with a client's request
/// ([`Replica::on_client_request`](super::Replica::on_client_request)) and gets back with
/// the reply to it ([`Effect::Reply`](super::Effect::Reply)): for the runtime, the
/// connection the request came in on. The core keeps and returns it, never looks inside,
/// and never lets it change what it decides: it is not replicated, not in a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteToken(pub u64);

/// One client's committed state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientEntry {
    /// The session number.
    pub session: Session,
    /// The latest committed request number (0: only registered).
    pub request: RequestNumber,
    /// The op of the latest committed request (or of the registration).
    pub op: Op,
    /// The reply to the latest committed request.
    pub reply: Bytes,
    /// The client's registration attempt that opened this session (the request number of
    /// its Register), so a retry of that attempt is answered from the table while a later
    /// attempt opens a new session.
    pub registration: RequestNumber,
    /// The driver's route token of this session's latest request this replica admitted
    /// as primary, with that request's number and the view it was admitted in: its reply
    /// is routed by the token if it executes in that view. Local to this replica (not
    /// committed state, never in a snapshot).
    route: Option<(RequestNumber, View, RouteToken)>,
}

impl ClientEntry {
    /// Records the reply of the next request of this session.
    pub fn record(&mut self, request: RequestNumber, op: Op, reply: Bytes) {
        assert_eq!(
            request,
            self.request + 1,
            "requests of a session execute in order"
        );
        self.request = request;
        self.op = op;
        self.reply = reply;
    }

    /// Notes the route token (`None`: the driver gave none) of request `request`,
    /// admitted in `view`.
    pub fn set_route(&mut self, request: RequestNumber, view: View, route: Option<RouteToken>) {
        self.route = route.map(|route| (request, view, route));
    }

    /// The route token noted for request `request` in `view`, if the latest noted one is
    /// that: a token never outlives the view its request was admitted in.
    pub fn route_of(&self, request: RequestNumber, view: View) -> Option<RouteToken> {
        self.route
            .filter(|&(noted, in_view, _)| noted == request && in_view == view)
            .map(|(_, _, route)| route)
    }
}

/// What a committed request finds in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The next request of a live session: execute it.
    Execute,
    /// Already executed: do not execute again.
    Duplicate,
    /// The session is unknown (evicted): do not execute; tell the client.
    Evicted,
}

/// The client table.
#[derive(Clone, Debug, Default)]
pub struct ClientTable {
    clients: ClientMap<ClientEntry>,
    clients_max: usize,
    /// While the core handles a client's request: that client and the driver's route
    /// token for it (`Replica::on_client_request`). A reply to that client made in the
    /// same input carries the token.
    input_route: Option<(ClientId, RouteToken)>,
}

impl ClientTable {
    /// An empty table holding at most `clients_max` sessions.
    pub fn new(clients_max: usize) -> ClientTable {
        assert!(clients_max > 0);
        ClientTable {
            clients: ClientMap::default(),
            clients_max,
            input_route: None,
        }
    }

    /// Sets (or, with `None`, clears) the client and route token of the request being
    /// handled.
    pub fn set_input_route(&mut self, input: Option<(ClientId, RouteToken)>) {
        self.input_route = input;
    }

    /// The route token of the request being handled, if it is `client`'s.
    pub fn input_route(&self, client: ClientId) -> Option<RouteToken> {
        self.input_route
            .filter(|&(input, _)| input == client)
            .map(|(_, route)| route)
    }

    /// Every session, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&ClientId, &ClientEntry)> {
        self.clients.iter()
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The client's entry.
    pub fn get(&self, client: ClientId) -> Option<&ClientEntry> {
        self.clients.get(&client)
    }

    /// The client's entry, to note a route token in it.
    pub fn get_mut(&mut self, client: ClientId) -> Option<&mut ClientEntry> {
        self.clients.get_mut(&client)
    }

    /// Registers `client` with session `op` (committed at `op`); returns the session and
    /// the client evicted to make room, if any. Registering a client that is already
    /// present replaces its session (a new life of the same client id).
    pub fn register(
        &mut self,
        client: ClientId,
        op: Op,
        registration: RequestNumber,
    ) -> Option<ClientId> {
        let mut evicted = None;
        if !self.clients.contains_key(&client) && self.clients.len() >= self.clients_max {
            let (&oldest, _) = self
                .clients
                .iter()
                .min_by_key(|(_, entry)| entry.op)
                .expect("a full table is not empty");
            self.clients.remove(&oldest);
            evicted = Some(oldest);
        }
        let entry = ClientEntry {
            session: op,
            request: 0,
            op,
            reply: Bytes::new(),
            registration,
            route: None,
        };
        self.clients.insert(client, entry);
        assert!(self.clients.len() <= self.clients_max);
        evicted
    }

    /// What to do with a committed request.
    pub fn admit(&self, client: ClientId, session: Session, request: RequestNumber) -> Admission {
        match self.clients.get(&client) {
            Some(entry) if entry.session == session => {
                if request == entry.request + 1 {
                    Admission::Execute
                } else if request <= entry.request {
                    Admission::Duplicate
                } else {
                    Admission::Evicted
                }
            }
            _ => Admission::Evicted,
        }
    }

    /// Records the reply of an executed request.
    pub fn record(&mut self, client: ClientId, request: RequestNumber, op: Op, reply: Bytes) {
        let entry = self
            .clients
            .get_mut(&client)
            .expect("record for an admitted client");
        entry.record(request, op, reply);
    }

    /// Admits a committed request and, when it is to execute, hands out its entry so the
    /// caller can record the reply without a second lookup (the hot path of every replica).
    pub fn admit_mut(
        &mut self,
        client: ClientId,
        session: Session,
        request: RequestNumber,
    ) -> Result<&mut ClientEntry, Admission> {
        match self.clients.get_mut(&client) {
            Some(entry) if entry.session == session && request == entry.request + 1 => Ok(entry),
            Some(entry) if entry.session == session && request <= entry.request => {
                Err(Admission::Duplicate)
            }
            _ => Err(Admission::Evicted),
        }
    }

    /// The table as bytes, sorted by client id so that equal tables give equal bytes.
    pub fn snapshot(&self) -> Bytes {
        let mut ids: Vec<&ClientId> = self.clients.keys().collect();
        ids.sort_unstable();
        let mut buf = BytesMut::new();
        buf.put_u32_le(ids.len() as u32);
        for id in ids {
            let entry = &self.clients[id];
            buf.put_u64_le(*id);
            buf.put_u64_le(entry.session);
            buf.put_u32_le(entry.request);
            buf.put_u64_le(entry.op);
            buf.put_u32_le(entry.registration);
            buf.put_u32_le(entry.reply.len() as u32);
            buf.put_slice(&entry.reply);
        }
        buf.freeze()
    }

    /// Replaces the table with a snapshot; `None` if the bytes are not one.
    pub fn restore(&mut self, snapshot: &Bytes) -> Option<()> {
        let mut buf = snapshot.clone();
        if buf.remaining() < 4 {
            return None;
        }
        let count = buf.get_u32_le() as usize;
        if count > self.clients_max {
            return None;
        }
        let mut clients = ClientMap::default();
        for _ in 0..count {
            if buf.remaining() < 36 {
                return None;
            }
            let id = buf.get_u64_le();
            let session = buf.get_u64_le();
            let request = buf.get_u32_le();
            let op = buf.get_u64_le();
            let registration = buf.get_u32_le();
            let len = buf.get_u32_le() as usize;
            if buf.remaining() < len {
                return None;
            }
            // A copy: a slice would keep the whole snapshot (for a transferred one, the
            // received message) alive for as long as the client stays idle.
            let reply = Bytes::copy_from_slice(&buf.split_to(len));
            clients.insert(
                id,
                ClientEntry {
                    session,
                    request,
                    op,
                    reply,
                    registration,
                    route: None,
                },
            );
        }
        if buf.has_remaining() {
            return None;
        }
        self.clients = clients;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_agree_in_their_low_bits_spread_over_the_buckets() {
        // What a client could do to an unkeyed multiply: ids equal in their low 32 bits
        // all hashed to one bucket of any table up to 2^32 buckets. Here 4,096 ids that
        // differ only in 12 bits, wherever those bits are.
        let hashing = ClientIdHashing::with_key((0x0123_4567_89ab_cdef, 0x0fed_cba9_8765_4321));
        for shift in [0, 20, 32, 52] {
            let hashes: Vec<u64> = (0..4096u64)
                .map(|varied| hashing.hash_one((varied << shift) ^ 0xdead_beef_0bad_cafe))
                .collect();
            let buckets: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 4095).collect();
            // 4,096 uniform draws over 4,096 buckets fill about 2,589 of them.
            assert!(
                buckets.len() > 2_400,
                "shift {shift}: {} buckets",
                buckets.len()
            );
            // The control bits hashbrown compares (the top 7) spread too.
            let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
            assert_eq!(tags.len(), 128, "shift {shift}");
        }
    }

    #[test]
    fn the_process_key_hashes_alike_in_every_map() {
        let (one, other) = (ClientIdHashing::default(), ClientIdHashing::default());
        assert_eq!(one.hash_one(42u64), other.hash_one(42u64));
        assert_ne!(one.hash_one(42u64), one.hash_one(43u64));
    }

    #[test]
    fn admits_in_order_and_rejects_duplicates_and_strangers() {
        let mut table = ClientTable::new(2);
        assert_eq!(table.register(7, 10, 1), None);
        assert_eq!(table.admit(7, 10, 1), Admission::Execute);
        table.record(7, 1, 11, Bytes::from_static(b"r1"));
        assert_eq!(table.admit(7, 10, 1), Admission::Duplicate);
        assert_eq!(table.admit(7, 10, 3), Admission::Evicted);
        assert_eq!(
            table.admit(7, 9, 2),
            Admission::Evicted,
            "an older session is gone"
        );
        assert_eq!(table.admit(8, 10, 1), Admission::Evicted);
    }

    #[test]
    fn eviction_takes_the_least_recently_committed_session() {
        let mut table = ClientTable::new(2);
        table.register(1, 1, 1);
        table.register(2, 2, 1);
        table.record(1, 1, 3, Bytes::new());
        assert_eq!(table.register(3, 4, 1), Some(2));
        assert!(table.get(1).is_some() && table.get(3).is_some());
    }

    #[test]
    fn snapshot_round_trips_and_is_canonical() {
        let mut a = ClientTable::new(4);
        let mut b = ClientTable::new(4);
        for (id, op) in [(5, 1), (3, 2), (9, 3)] {
            a.register(id, op, 1);
        }
        for (id, op) in [(9, 3), (5, 1), (3, 2)] {
            b.register(id, op, 1);
        }
        assert_eq!(a.snapshot(), b.snapshot());
        let mut c = ClientTable::new(4);
        c.restore(&a.snapshot()).unwrap();
        assert_eq!(c.snapshot(), a.snapshot());
        assert!(c.restore(&Bytes::from_static(b"xx")).is_none());
    }
}
