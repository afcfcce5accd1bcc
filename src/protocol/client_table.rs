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
///
/// `repr(C)`, so that the table can lay its slots out for the cache (see [`Slot`]):
/// what every probe reads and the request path writes (session, request number, route)
/// comes before the op and the reply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ClientEntry {
    /// The session number.
    pub session: Session,
    /// The latest committed request number (0: only registered).
    pub request: RequestNumber,
    /// The client's registration attempt that opened this session (the request number of
    /// its Register), so a retry of that attempt is answered from the table while a later
    /// attempt opens a new session.
    pub registration: RequestNumber,
    /// The driver's route token of this session's latest request this replica admitted
    /// as primary, with that request's number and the view it was admitted in: its reply
    /// is routed by the token if it executes in that view. Local to this replica (not
    /// committed state, never in a snapshot).
    route: Option<(RequestNumber, View, RouteToken)>,
    /// The op of the latest committed request (or of the registration).
    pub op: Op,
    /// The reply to the latest committed request.
    pub reply: Bytes,
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

/// One session as stored: the client id and its entry, aligned to a cache line. At
/// thousands of sessions nearly every probe misses the cache, so what a probe costs is
/// the lines it touches: the id, the session, the request number and the route token
/// (all a request reads and writes before it is ordered, and all the admission of a
/// committed one reads) lie in the slot's first line; only recording a reply (or
/// answering a retry from the table) reaches the second, where the reply is.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
struct Slot {
    client: ClientId,
    entry: ClientEntry,
}

// The layout the comment above relies on: the probed and routed fields in the first
// 64 bytes, and a slot no larger than two lines.
const _: () = {
    let hot_end = std::mem::offset_of!(Slot, entry) + std::mem::offset_of!(ClientEntry, op);
    assert!(hot_end <= 64);
    assert!(std::mem::size_of::<Slot>() == 128);
};

/// A position in the index: the slot of a session in `slots`, and 32 bits of its id's
/// hash, so that a probe passing another session's position rejects it without reading
/// that session's slot.
#[derive(Clone, Copy, Debug)]
struct Position {
    tag: u32,
    slot: u32,
}

impl Position {
    const EMPTY: Position = Position {
        tag: 0,
        slot: u32::MAX,
    };

    fn is_empty(self) -> bool {
        self.slot == u32::MAX
    }
}

/// The client table.
///
/// Stored as an open-addressing index of 8-byte positions (linear probing, at most half
/// full, eight positions per cache line) over a dense array of cache-line-aligned slots:
/// a lookup reads one line of the index, which at 4096 sessions is 64 KiB and mostly
/// stays cached, and the first line of one slot. (A `HashMap<ClientId, ClientEntry>`
/// read its control bytes and an 88-byte bucket that straddled two lines wherever it
/// fell.) The index is keyed with [`ClientIdHashing`], as the maps were: a client cannot
/// choose ids that share positions, so probes stay short whatever ids clients pick.
/// The slots' order depends on the order of registrations and evictions alone, never on
/// the hash key, though nothing relies on it: the snapshot sorts, and eviction takes a
/// unique minimum (two sessions never share an op).
#[derive(Clone, Default)]
pub struct ClientTable {
    /// Every session, densely.
    slots: Vec<Slot>,
    /// Positions of the slots by their ids' hashes: a power of two long (or empty), at
    /// least twice as long as `slots`, so a probe always ends at an empty position.
    index: Vec<Position>,
    hashing: ClientIdHashing,
    clients_max: usize,
    /// While the core handles a client's request: that client and the driver's route
    /// token for it (`Replica::on_client_request`). A reply to that client made in the
    /// same input carries the token.
    input_route: Option<(ClientId, RouteToken)>,
}

/// The sessions by id, as the map the table was printed (the index says nothing).
impl std::fmt::Debug for ClientTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTable")
            .field("clients", &self.iter().collect::<HashMap<_, _>>())
            .field("clients_max", &self.clients_max)
            .field("input_route", &self.input_route)
            .finish()
    }
}

impl ClientTable {
    /// An empty table holding at most `clients_max` sessions.
    pub fn new(clients_max: usize) -> ClientTable {
        assert!(clients_max > 0);
        ClientTable {
            slots: Vec::new(),
            index: Vec::new(),
            hashing: ClientIdHashing::default(),
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
        self.slots.iter().map(|slot| (&slot.client, &slot.entry))
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The client's entry.
    pub fn get(&self, client: ClientId) -> Option<&ClientEntry> {
        let (_, slot) = self.find(client)?;
        Some(&self.slots[slot].entry)
    }

    /// The client's entry, to note a route token in it.
    pub fn get_mut(&mut self, client: ClientId) -> Option<&mut ClientEntry> {
        let (_, slot) = self.find(client)?;
        Some(&mut self.slots[slot].entry)
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
        let entry = ClientEntry {
            session: op,
            request: 0,
            registration,
            route: None,
            op,
            reply: Bytes::new(),
        };
        if let Some((_, slot)) = self.find(client) {
            self.slots[slot].entry = entry;
            return None;
        }
        let mut evicted = None;
        if self.slots.len() >= self.clients_max {
            let oldest = self
                .slots
                .iter()
                .min_by_key(|slot| slot.entry.op)
                .expect("a full table is not empty")
                .client;
            self.remove(oldest);
            evicted = Some(oldest);
        }
        self.insert_new(client, entry);
        assert!(self.slots.len() <= self.clients_max);
        evicted
    }

    /// What to do with a committed request.
    pub fn admit(&self, client: ClientId, session: Session, request: RequestNumber) -> Admission {
        match self.get(client) {
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
        let entry = self.get_mut(client).expect("record for an admitted client");
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
        match self.get_mut(client) {
            Some(entry) if entry.session == session && request == entry.request + 1 => Ok(entry),
            Some(entry) if entry.session == session && request <= entry.request => {
                Err(Admission::Duplicate)
            }
            _ => Err(Admission::Evicted),
        }
    }

    /// Starts loading the index line where a probe for `client` begins, ahead of
    /// [`prefetch`](Self::prefetch) for it. A hint only: it reads nothing and changes
    /// nothing. (The index is 64 KiB at 4096 sessions: on a busy core it does not stay
    /// cached either.)
    #[inline]
    pub fn prefetch_index(&self, client: ClientId) {
        if self.index.is_empty() {
            return;
        }
        let at = self.hash(client) as usize & (self.index.len() - 1);
        prefetch_line((&self.index[at] as *const Position).cast());
    }

    /// Starts loading `client`'s slot into the cache, ahead of a probe that will read it
    /// (the execution of a committed batch hints its next ops: `Replica::execute_entry`).
    /// A hint only: it reads the index, not the slot, and changes nothing; a tag that
    /// matches another id's position only loads a line for nothing. At thousands of
    /// sessions each op's slot would otherwise be a cache miss waited for in turn;
    /// prefetched a few ops ahead, the misses overlap.
    #[inline]
    pub fn prefetch(&self, client: ClientId) {
        if let Some((_, position)) = self.probe(client).next() {
            // Both lines: admission reads the first, recording a reply writes the second.
            let slot: *const Slot = &self.slots[position.slot as usize];
            prefetch_line(slot.cast());
            prefetch_line(slot.cast::<u8>().wrapping_add(64));
        }
    }

    /// The table as bytes, sorted by client id so that equal tables give equal bytes.
    pub fn snapshot(&self) -> Bytes {
        let mut slots: Vec<&Slot> = self.slots.iter().collect();
        slots.sort_unstable_by_key(|slot| slot.client);
        let mut buf = BytesMut::new();
        buf.put_u32_le(slots.len() as u32);
        for Slot { client, entry } in slots {
            buf.put_u64_le(*client);
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
        let mut table = ClientTable::new(self.clients_max);
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
            let entry = ClientEntry {
                session,
                request,
                registration,
                route: None,
                op,
                reply,
            };
            // An id twice (not a snapshot this table wrote): the later entry stands, as
            // it did when the table was a map.
            match table.find(id) {
                Some((_, slot)) => table.slots[slot].entry = entry,
                None => table.insert_new(id, entry),
            }
        }
        if buf.has_remaining() {
            return None;
        }
        self.slots = table.slots;
        self.index = table.index;
        Some(())
    }

    /// The hash of `client`: its low bits pick the home position, its high 32 bits are
    /// the tag.
    fn hash(&self, client: ClientId) -> u64 {
        self.hashing.hash_one(client)
    }

    /// The index position and the slot of `client`, if present.
    #[inline]
    fn find(&self, client: ClientId) -> Option<(usize, usize)> {
        self.probe(client)
            .find(|(_, position)| self.slots[position.slot as usize].client == client)
            .map(|(at, position)| (at, position.slot as usize))
    }

    /// The occupied positions a probe for `client` passes whose tag is `client`'s, in
    /// probe order (from its home position to the first empty one), without reading
    /// the slots: `find` checks each one's id, `prefetch` takes the first.
    #[inline]
    fn probe(&self, client: ClientId) -> impl Iterator<Item = (usize, Position)> + '_ {
        let hash = self.hash(client);
        let tag = (hash >> 32) as u32;
        let mask = self.index.len().wrapping_sub(1);
        let mut at = hash as usize & mask;
        // Ends: the index is at most half full, so an empty position comes (an empty
        // index has none to pass).
        let mut done = self.index.is_empty();
        std::iter::from_fn(move || {
            while !done {
                let position = self.index[at];
                if position.is_empty() {
                    done = true;
                    break;
                }
                let passed = at;
                at = (at + 1) & mask;
                if position.tag == tag {
                    return Some((passed, position));
                }
            }
            None
        })
    }

    /// Adds `client`, absent, with `entry`; grows the index first if it would be more
    /// than half full.
    fn insert_new(&mut self, client: ClientId, entry: ClientEntry) {
        debug_assert!(self.find(client).is_none());
        if (self.slots.len() + 1) * 2 > self.index.len() {
            self.grow();
        }
        let slot = self.slots.len();
        assert!(slot < u32::MAX as usize, "slot numbers fit the index");
        self.slots.push(Slot { client, entry });
        self.place(client, slot as u32);
    }

    /// Puts `slot`, the slot of `client`, at the first empty position from its home.
    fn place(&mut self, client: ClientId, slot: u32) {
        let hash = self.hash(client);
        let mask = self.index.len() - 1;
        let mut at = hash as usize & mask;
        while !self.index[at].is_empty() {
            at = (at + 1) & mask;
        }
        self.index[at] = Position {
            tag: (hash >> 32) as u32,
            slot,
        };
    }

    /// Doubles the index (at least 16 positions) and places every slot again.
    fn grow(&mut self) {
        let len = (self.index.len() * 2).max(16);
        self.index.clear();
        self.index.resize(len, Position::EMPTY);
        for slot in 0..self.slots.len() {
            self.place(self.slots[slot].client, slot as u32);
        }
    }

    /// Removes `client`, present: its position by shifting back the ones after it that
    /// may move (so no probe needs tombstones), its slot by moving the last slot into it.
    fn remove(&mut self, client: ClientId) {
        let (mut hole, slot) = self.find(client).expect("removing a present client");
        let mask = self.index.len() - 1;
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            let position = self.index[at];
            if position.is_empty() {
                break;
            }
            // A position may fill the hole if the hole lies between its home and it: its
            // probe passes the hole before reaching it.
            let home = self.hash(self.slots[position.slot as usize].client) as usize & mask;
            if (at.wrapping_sub(home) & mask) >= (at.wrapping_sub(hole) & mask) {
                self.index[hole] = position;
                hole = at;
            }
        }
        self.index[hole] = Position::EMPTY;
        let last = self.slots.len() - 1;
        if slot != last {
            let moved = self.slots[last].client;
            let (at, _) = self.find(moved).expect("every slot has a position");
            self.index[at].slot = slot as u32;
        }
        self.slots.swap_remove(slot);
    }
}

/// Asks the CPU to load the cache line at `address` (a no-op where there is no
/// prefetch instruction to ask with).
#[inline(always)]
fn prefetch_line(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults, whatever the address, and changes
    // no memory; SSE, the feature it needs, is part of every x86_64 CPU.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
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

    impl ClientTable {
        /// Every slot has exactly one position, reached from its home without crossing
        /// an empty one, and the index is at most half full.
        fn check_index(&self) {
            let occupied = self.index.iter().filter(|p| !p.is_empty()).count();
            assert_eq!(occupied, self.slots.len());
            assert!(self.slots.is_empty() || self.slots.len() * 2 <= self.index.len());
            for (number, slot) in self.slots.iter().enumerate() {
                let (at, found) = self.find(slot.client).expect("every slot is found");
                assert_eq!(found, number);
                let hash = self.hash(slot.client);
                assert_eq!(self.index[at].tag, (hash >> 32) as u32);
            }
        }
    }

    #[test]
    fn ids_that_agree_in_their_low_bits_make_no_long_runs() {
        // Clients choosing ids with equal low bits (the bits that would pick an unkeyed
        // position) still land apart: the keyed hash decides positions. 4,096 sessions
        // in 8,192 positions; the longest probe stays short.
        for shift in [0, 32, 52] {
            let mut table = ClientTable::new(4096);
            table.hashing =
                ClientIdHashing::with_key((0x0123_4567_89ab_cdef, 0x0fed_cba9_8765_4321));
            for varied in 0..4096u64 {
                table.register((varied << shift) ^ 0xdead_beef_0bad_cafe, varied + 1, 1);
            }
            assert_eq!(table.index.len(), 8192);
            table.check_index();
            let mask = table.index.len() - 1;
            let longest = table
                .slots
                .iter()
                .map(|slot| {
                    let (at, _) = table.find(slot.client).unwrap();
                    at.wrapping_sub(table.hash(slot.client) as usize) & mask
                })
                .max()
                .unwrap();
            assert!(
                longest < 40,
                "shift {shift}: a probe of {longest} positions"
            );
        }
    }

    /// A table's state as the map it replaced would have held it: by id.
    type Model = HashMap<ClientId, (Session, RequestNumber, Op, RequestNumber, Bytes)>;

    /// The snapshot encoding, written out field by field: the checkpoint format.
    fn encode(model: &Model) -> Bytes {
        let mut ids: Vec<_> = model.keys().copied().collect();
        ids.sort();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            let (session, request, op, registration, reply) = &model[&id];
            bytes.extend_from_slice(&id.to_le_bytes());
            bytes.extend_from_slice(&session.to_le_bytes());
            bytes.extend_from_slice(&request.to_le_bytes());
            bytes.extend_from_slice(&op.to_le_bytes());
            bytes.extend_from_slice(&registration.to_le_bytes());
            bytes.extend_from_slice(&(reply.len() as u32).to_le_bytes());
            bytes.extend_from_slice(reply);
        }
        Bytes::from(bytes)
    }

    #[test]
    fn agrees_with_a_map_through_registrations_evictions_and_replies() {
        let mut random = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            random
        };
        for (clients_max, ids) in [(1, 3), (7, 12), (64, 100), (300, 1000)] {
            let mut table = ClientTable::new(clients_max);
            let mut model = Model::new();
            let mut op = 0;
            for _ in 0..20_000 {
                op += 1;
                // Ids spread over the whole range, as clients draw them, from a small set
                // so that sessions are registered again, evicted and come back.
                let client = (next() % ids).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                // The hints end and stay in bounds for present and absent ids alike (an
                // empty table first, then full ones), and change nothing the model sees.
                table.prefetch_index(client);
                table.prefetch(client);
                if next() % 3 == 0 || !model.contains_key(&client) {
                    let registration = next() as u32 % 4;
                    let evicted = table.register(client, op, registration);
                    if !model.contains_key(&client) && model.len() == clients_max {
                        let oldest = *model.iter().min_by_key(|(_, e)| e.2).unwrap().0;
                        model.remove(&oldest);
                        assert_eq!(evicted, Some(oldest));
                    } else {
                        assert_eq!(evicted, None);
                    }
                    model.insert(client, (op, 0, op, registration, Bytes::new()));
                } else {
                    let state = model.get_mut(&client).unwrap();
                    let reply = Bytes::from(op.to_le_bytes()[..(op % 9) as usize].to_vec());
                    let entry = table.admit_mut(client, state.0, state.1 + 1).unwrap();
                    entry.set_route(state.1 + 1, 3, Some(RouteToken(op)));
                    entry.record(state.1 + 1, op, reply.clone());
                    assert_eq!(entry.route_of(state.1 + 1, 3), Some(RouteToken(op)));
                    assert_eq!(table.admit(client, state.0, state.1), Admission::Duplicate);
                    state.1 += 1;
                    state.2 = op;
                    state.4 = reply;
                }
                if op % 97 == 0 {
                    table.check_index();
                    assert_eq!(table.len(), model.len());
                    for (&client, (session, request, op, registration, reply)) in &model {
                        let entry = table.get(client).expect("a live session");
                        assert_eq!(
                            (entry.session, entry.request, entry.op, entry.registration),
                            (*session, *request, *op, *registration)
                        );
                        assert_eq!(&entry.reply, reply);
                    }
                    let snapshot = table.snapshot();
                    assert_eq!(snapshot, encode(&model));
                    let mut restored = ClientTable::new(clients_max);
                    restored.restore(&snapshot).unwrap();
                    restored.check_index();
                    assert_eq!(restored.snapshot(), snapshot);
                }
            }
        }
    }

    #[test]
    fn restore_keeps_the_last_entry_of_an_id_given_twice() {
        let mut model = Model::new();
        model.insert(4, (1, 0, 1, 1, Bytes::new()));
        let mut bytes = encode(&model).to_vec();
        bytes[0] = 2;
        bytes.extend_from_slice(&4u64.to_le_bytes());
        bytes.extend_from_slice(&2u64.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&3u64.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.push(9);
        let mut table = ClientTable::new(2);
        table.restore(&Bytes::from(bytes)).unwrap();
        table.check_index();
        assert_eq!(table.len(), 1);
        let entry = table.get(4).unwrap();
        assert_eq!((entry.session, entry.request, entry.op), (2, 1, 3));
        assert_eq!(entry.reply, Bytes::from_static(&[9]));
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
