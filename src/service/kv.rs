//! The key-value service: put, get, delete and compare-and-swap over byte strings.
//!
//! Operations and results have a small binary encoding ([`KvOp::encode`],
//! [`KvResult::encode`]) so that clients and the simulator's reference model share it.
//! The map is a `BTreeMap`, so a snapshot lists keys in order and is deterministic.

use super::{SnapshotError, StateMachine};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::BTreeMap;

/// A key-value operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Set `key` to `value`.
    Put(Bytes, Bytes),
    /// Read `key`.
    Get(Bytes),
    /// Remove `key`.
    Delete(Bytes),
    /// Set `key` to `new` only if its value is `old` (`None`: only if absent).
    Cas(Bytes, Option<Bytes>, Bytes),
}

/// The result of a key-value operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResult {
    /// A put, delete or successful compare-and-swap.
    Ok,
    /// The value read.
    Value(Bytes),
    /// The key is absent.
    Nil,
    /// A compare-and-swap failed; the current value (`None`: absent).
    CasFail(Option<Bytes>),
    /// The operation could not be decoded.
    Invalid,
}

const PUT: u8 = 1;
const GET: u8 = 2;
const DELETE: u8 = 3;
const CAS: u8 = 4;

fn put_field(buf: &mut BytesMut, field: &[u8]) {
    buf.put_u32_le(field.len() as u32);
    buf.put_slice(field);
}

fn put_option(buf: &mut BytesMut, field: Option<&Bytes>) {
    match field {
        None => buf.put_u8(0),
        Some(value) => {
            buf.put_u8(1);
            put_field(buf, value);
        }
    }
}

fn take_field(buf: &mut Bytes) -> Option<Bytes> {
    if buf.remaining() < 4 {
        return None;
    }
    let len = buf.get_u32_le() as usize;
    (buf.remaining() >= len).then(|| buf.split_to(len))
}

fn take_option(buf: &mut Bytes) -> Option<Option<Bytes>> {
    if !buf.has_remaining() {
        return None;
    }
    match buf.get_u8() {
        0 => Some(None),
        1 => take_field(buf).map(Some),
        _ => None,
    }
}

impl KvOp {
    /// The operation's bytes.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            KvOp::Put(key, value) => {
                buf.put_u8(PUT);
                put_field(&mut buf, key);
                put_field(&mut buf, value);
            }
            KvOp::Get(key) => {
                buf.put_u8(GET);
                put_field(&mut buf, key);
            }
            KvOp::Delete(key) => {
                buf.put_u8(DELETE);
                put_field(&mut buf, key);
            }
            KvOp::Cas(key, old, new) => {
                buf.put_u8(CAS);
                put_field(&mut buf, key);
                put_option(&mut buf, old.as_ref());
                put_field(&mut buf, new);
            }
        }
        buf.freeze()
    }

    /// Decodes an operation; `None` if the bytes are not one (trailing bytes included).
    pub fn decode(bytes: &Bytes) -> Option<KvOp> {
        let mut buf = bytes.clone();
        if !buf.has_remaining() {
            return None;
        }
        let op = match buf.get_u8() {
            PUT => KvOp::Put(take_field(&mut buf)?, take_field(&mut buf)?),
            GET => KvOp::Get(take_field(&mut buf)?),
            DELETE => KvOp::Delete(take_field(&mut buf)?),
            CAS => KvOp::Cas(
                take_field(&mut buf)?,
                take_option(&mut buf)?,
                take_field(&mut buf)?,
            ),
            _ => return None,
        };
        (!buf.has_remaining()).then_some(op)
    }

    /// Whether the operation only reads.
    pub fn is_read_only(&self) -> bool {
        matches!(self, KvOp::Get(_))
    }
}

const OK: u8 = 1;
const VALUE: u8 = 2;
const NIL: u8 = 3;
const CAS_FAIL: u8 = 4;
const INVALID: u8 = 5;

impl KvResult {
    /// The result's bytes.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            KvResult::Ok => buf.put_u8(OK),
            KvResult::Value(value) => {
                buf.put_u8(VALUE);
                put_field(&mut buf, value);
            }
            KvResult::Nil => buf.put_u8(NIL),
            KvResult::CasFail(current) => {
                buf.put_u8(CAS_FAIL);
                put_option(&mut buf, current.as_ref());
            }
            KvResult::Invalid => buf.put_u8(INVALID),
        }
        buf.freeze()
    }

    /// Decodes a result; `None` if the bytes are not one.
    pub fn decode(bytes: &Bytes) -> Option<KvResult> {
        let mut buf = bytes.clone();
        if !buf.has_remaining() {
            return None;
        }
        let result = match buf.get_u8() {
            OK => KvResult::Ok,
            VALUE => KvResult::Value(take_field(&mut buf)?),
            NIL => KvResult::Nil,
            CAS_FAIL => KvResult::CasFail(take_option(&mut buf)?),
            INVALID => KvResult::Invalid,
            _ => return None,
        };
        (!buf.has_remaining()).then_some(result)
    }
}

/// An in-memory ordered key-value map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    map: BTreeMap<Bytes, Bytes>,
}

impl Kv {
    /// An empty map.
    pub fn new() -> Kv {
        Kv::default()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Executes one operation: the semantics every replica and the reference model share.
    pub fn execute(&mut self, op: KvOp) -> KvResult {
        match op {
            KvOp::Put(key, value) => {
                self.map.insert(key, value);
                KvResult::Ok
            }
            KvOp::Get(key) => self.read(&key),
            KvOp::Delete(key) => {
                self.map.remove(&key);
                KvResult::Ok
            }
            KvOp::Cas(key, old, new) => {
                let current = self.map.get(&key);
                if current == old.as_ref() {
                    self.map.insert(key, new);
                    KvResult::Ok
                } else {
                    KvResult::CasFail(current.cloned())
                }
            }
        }
    }

    fn read(&self, key: &Bytes) -> KvResult {
        match self.map.get(key) {
            Some(value) => KvResult::Value(value.clone()),
            None => KvResult::Nil,
        }
    }
}

impl StateMachine for Kv {
    fn apply(&mut self, _op: u64, _timestamp: u64, operation: &Bytes) -> Bytes {
        match KvOp::decode(operation) {
            Some(op) => self.execute(op).encode(),
            None => KvResult::Invalid.encode(),
        }
    }

    fn query(&self, query: &Bytes) -> Bytes {
        match KvOp::decode(query) {
            Some(KvOp::Get(key)) => self.read(&key).encode(),
            _ => KvResult::Invalid.encode(),
        }
    }

    fn snapshot(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u64_le(self.map.len() as u64);
        for (key, value) in &self.map {
            put_field(&mut buf, key);
            put_field(&mut buf, value);
        }
        buf.freeze()
    }

    fn restore(&mut self, snapshot: &Bytes) -> Result<(), SnapshotError> {
        let mut buf = snapshot.clone();
        if buf.remaining() < 8 {
            return Err(SnapshotError("kv snapshot shorter than its count"));
        }
        let count = buf.get_u64_le();
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let key = take_field(&mut buf).ok_or(SnapshotError("kv snapshot key truncated"))?;
            let value = take_field(&mut buf).ok_or(SnapshotError("kv snapshot value truncated"))?;
            map.insert(key, value);
        }
        if buf.has_remaining() {
            return Err(SnapshotError("kv snapshot has trailing bytes"));
        }
        self.map = map;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn operations_round_trip_and_execute() {
        let mut kv = Kv::new();
        let script = [
            (KvOp::Get(b("a")), KvResult::Nil),
            (KvOp::Cas(b("a"), None, b("1")), KvResult::Ok),
            (
                KvOp::Cas(b("a"), None, b("2")),
                KvResult::CasFail(Some(b("1"))),
            ),
            (KvOp::Put(b("a"), b("3")), KvResult::Ok),
            (KvOp::Get(b("a")), KvResult::Value(b("3"))),
            (KvOp::Cas(b("a"), Some(b("3")), b("4")), KvResult::Ok),
            (KvOp::Delete(b("a")), KvResult::Ok),
            (
                KvOp::Cas(b("a"), Some(b("4")), b("5")),
                KvResult::CasFail(None),
            ),
        ];
        for (op, expected) in script {
            assert_eq!(KvOp::decode(&op.encode()), Some(op.clone()));
            let result = kv.apply(0, 0, &op.encode());
            assert_eq!(KvResult::decode(&result), Some(expected));
        }
    }

    #[test]
    fn snapshot_restores_the_same_state() {
        let mut kv = Kv::new();
        kv.execute(KvOp::Put(b("x"), b("1")));
        kv.execute(KvOp::Put(b("y"), b("2")));
        let mut other = Kv::new();
        other.restore(&kv.snapshot()).unwrap();
        assert_eq!(kv, other);
        assert!(other.restore(&b("garbage")).is_err());
    }

    #[test]
    fn malformed_operations_are_invalid_not_panics() {
        let mut kv = Kv::new();
        let cases: [&[u8]; 4] = [b"", b"\x01", b"\x09abc", b"\x02\xff\xff\xff\xff"];
        for bytes in cases.map(Bytes::from_static) {
            assert_eq!(
                KvResult::decode(&kv.apply(0, 0, &bytes)),
                Some(KvResult::Invalid)
            );
        }
    }
}
