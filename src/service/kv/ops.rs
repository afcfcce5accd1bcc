//! The kv service's operations and results, and their binary encoding: shared by clients,
//! the replicas and the simulator's reference model. A field is a `u32` little-endian
//! length and its bytes; the same field layout is a record's in a snapshot page.

use bytes::{Buf, BufMut, Bytes, BytesMut};

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

/// Appends `field` with its length.
pub(super) fn put_field(buf: &mut impl BufMut, field: &[u8]) {
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

/// Takes one length-prefixed field off the front of `buf`; `None` if it is truncated.
pub(super) fn take_field(buf: &mut Bytes) -> Option<Bytes> {
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

/// The key of a get's bytes (what `KvOp::Get(key).encode()` makes), read in place;
/// `None` for any other bytes, exactly as `KvOp::decode` refuses or reads another
/// operation from them.
pub(super) fn get_key(bytes: &[u8]) -> Option<&[u8]> {
    let (&GET, rest) = bytes.split_first()? else {
        return None;
    };
    let (len, key) = rest.split_first_chunk::<4>()?;
    (u32::from_le_bytes(*len) as usize == key.len()).then_some(key)
}

/// `KvResult::Value(value).encode()`, in one allocation of its exact size.
pub(super) fn encoded_value(value: &[u8]) -> Bytes {
    let mut bytes = Vec::with_capacity(1 + 4 + value.len());
    bytes.push(VALUE);
    put_field(&mut bytes, value);
    Bytes::from(bytes)
}

/// `KvResult::Nil.encode()`, without allocating.
pub(super) fn encoded_nil() -> Bytes {
    Bytes::from_static(&[NIL])
}

/// `KvResult::Invalid.encode()`, without allocating.
pub(super) fn encoded_invalid() -> Bytes {
    Bytes::from_static(&[INVALID])
}

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
