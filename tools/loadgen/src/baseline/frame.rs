//! The baseline's wire format: length-prefixed frames, nothing else.
//! - client → primary: `[u32 len][u32 session][payload]` (`len` counts session + payload)
//! - primary → backup: `[u32 len][u64 seq][payload]` (`len` counts seq + payload)
//! - backup → primary: `[u64 seq]`, a cumulative acknowledgement of every seq ≤ it
//! - primary → client: `[u32 len = 4][u32 session]`

/// Largest frame body accepted; a bigger length is a broken peer.
pub const BODY_BYTES_MAX: usize = 64 << 20;

/// Appends a client request frame.
pub fn put_request(buf: &mut Vec<u8>, session: u32, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u32).to_le_bytes());
    buf.extend_from_slice(&session.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Appends a forwarded request frame.
pub fn put_forward(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    buf.extend_from_slice(&((8 + payload.len()) as u32).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Appends a reply frame.
pub fn put_reply(buf: &mut Vec<u8>, session: u32) {
    buf.extend_from_slice(&4u32.to_le_bytes());
    buf.extend_from_slice(&session.to_le_bytes());
}

/// The next complete length-prefixed frame body in `buf[*pos..]`, advancing `pos`;
/// `Ok(None)` if incomplete; an error for an impossible length.
pub fn next_frame<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    header_bytes: usize,
) -> Result<Option<&'a [u8]>, String> {
    let rest = &buf[*pos..];
    if rest.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    if !(header_bytes..=BODY_BYTES_MAX).contains(&len) {
        return Err(format!("bad frame length {len}"));
    }
    if rest.len() < 4 + len {
        return Ok(None);
    }
    *pos += 4 + len;
    Ok(Some(&rest[4..4 + len]))
}

/// Reads a little-endian u32 from the start of `bytes`.
pub fn u32_at(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"))
}

/// Reads a little-endian u64 from the start of `bytes`.
pub fn u64_at(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split() {
        let mut buf = Vec::new();
        put_request(&mut buf, 7, b"hello");
        put_forward(&mut buf, 9, b"xy");
        let mut pos = 0;
        let first = next_frame(&buf, &mut pos, 4).unwrap().unwrap();
        assert_eq!((u32_at(first), &first[4..]), (7, &b"hello"[..]));
        let second = next_frame(&buf, &mut pos, 8).unwrap().unwrap();
        assert_eq!((u64_at(second), &second[8..]), (9, &b"xy"[..]));
        assert_eq!(next_frame(&buf, &mut pos, 4), Ok(None));
        let mut pos = 0;
        assert_eq!(next_frame(&buf[..6], &mut pos, 4), Ok(None));
        assert!(next_frame(&[0, 0, 0, 0], &mut 0, 4).is_err());
    }
}
