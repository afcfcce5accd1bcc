//! The write-ahead journal's format: an append-only sequence of **batches**, and the
//! replay that turns a journal file back into a [`Stored`] image.
//!
//! A batch holds the records ([`codec`](super::codec)) of one group commit: everything
//! the event loop handed the storage thread while the previous `fdatasync` ran. It is the
//! unit of atomicity: on restart a batch counts whole or not at all, which is what lets
//! the runtime capture writes at the end of a loop iteration (only the final image of a
//! batch matters, `Stored::apply` tolerates the repeats).
//!
//! ```text
//! | header (64) | payload (records) | zero padding | trailer (64) |   a multiple of 4 KiB
//! header: magic "VSRBATCH", sequence u64, payload bytes u64, batch bytes u64,
//!         payload crc32c u32, zeros, header crc32c u32 (at 60)
//! trailer: a byte-for-byte copy of the header, in the batch's last 64 bytes
//! ```
//!
//! Batches are padded to 4 KiB so that a torn write of a new batch never touches the
//! sectors of an earlier one (the journal is appended at 4 KiB boundaries), and
//! sequence numbers rise by one, so a stale batch is never mistaken for the next. The
//! file grows in zero-filled [`CHUNK_BYTES`] chunks, synced before use: the journal ends
//! at the first block of zeros, and a file whose length is not a whole number of chunks
//! was truncated (damage: a crash cannot do that).
//!
//! # Torn tail or damage
//!
//! Messages leave only after their batch's `fdatasync`, and a batch is written only
//! after the previous one's `fdatasync` returned. So a batch cut short by a crash is
//! always the last one, and nothing relied on it: dropping it is no loss. A batch that
//! was synced may have been acknowledged, and must never be dropped silently: it is
//! *damage*, and the replica recovers through the protocol (the image keeps what was
//! applied before it, `Stored::damage` says where). Replay tells them apart like this:
//!
//! | what is found at the next batch's place                           | verdict        |
//! |-------------------------------------------------------------------|----------------|
//! | header checks, payload checks                                     | applied        |
//! | header checks, payload does not, trailer equals the header       | damage         |
//! | anything else, and a valid header or trailer of this or a later batch after it | damage |
//! | anything else, and nothing valid after it                         | torn tail: zeroed |
//! | the file's length is not a whole number of chunks                | damage         |
//! | payload checks but its records do not decode or apply             | damage         |
//!
//! A payload that checks is applied even if its trailer is missing: the batch was
//! written whole (its trailer sector may simply not have landed), and using state that
//! was never acknowledged is safe. What the format cannot tell apart: a synced last
//! batch whose header *and* trailer both rotted looks like a torn tail and is dropped
//! (one replica's silent loss of its latest batch), and so does a journal truncated
//! exactly at a chunk boundary past its last batch; and a crash that landed a batch's last sector but not
//! its first is reported as damage although nothing relied on it (safe: the replica
//! recovers from its peers).

use super::codec::{self, CheckpointMarker, Record};
use crate::protocol::{Stored, StoredWrite};
use bytes::BufMut;

/// Batches start and end on this boundary.
pub const BLOCK_BYTES: usize = 4096;
/// The journal file grows in zero-filled chunks of this size, made durable before any
/// batch is written into them, so its length is always a whole number of chunks: a
/// crash never shortens it, and a journal whose length is not a multiple was cut short
/// by something other than a crash (damage, not a torn tail).
pub const CHUNK_BYTES: u64 = 4 << 20;
/// The header, and the trailer that copies it.
pub const HEADER_BYTES: usize = 64;
const MAGIC: &[u8; 8] = b"VSRBATCH";
const CHECKSUM_AT: usize = 60;

/// A batch header as read from disk, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    sequence: u64,
    payload_bytes: u64,
    batch_bytes: u64,
    payload_checksum: u32,
}

/// The bytes of one batch of `sequence` whose records `records` appends, padded; appended
/// to `out`.
pub fn encode_batch(sequence: u64, out: &mut Vec<u8>, records: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.resize(start + HEADER_BYTES, 0);
    records(out);
    let payload_bytes = out.len() - start - HEADER_BYTES;
    let batch_bytes = batch_bytes(payload_bytes as u64) as usize;
    let payload_checksum = crc32c::crc32c(&out[start + HEADER_BYTES..]);
    let mut header = [0u8; HEADER_BYTES];
    {
        let mut cursor = &mut header[..];
        cursor.put_slice(MAGIC);
        cursor.put_u64_le(sequence);
        cursor.put_u64_le(payload_bytes as u64);
        cursor.put_u64_le(batch_bytes as u64);
        cursor.put_u32_le(payload_checksum);
    }
    let header_checksum = crc32c::crc32c(&header[..CHECKSUM_AT]);
    header[CHECKSUM_AT..].copy_from_slice(&header_checksum.to_le_bytes());
    out[start..start + HEADER_BYTES].copy_from_slice(&header);
    out.resize(start + batch_bytes - HEADER_BYTES, 0);
    out.extend_from_slice(&header);
}

/// Header, payload and trailer, rounded up to whole blocks.
fn batch_bytes(payload_bytes: u64) -> u64 {
    (payload_bytes + 2 * HEADER_BYTES as u64).div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64
}

/// A header that checks, or `None`.
fn parse_header(bytes: &[u8]) -> Option<Header> {
    let bytes = bytes.get(..HEADER_BYTES)?;
    let stored = u32::from_le_bytes(bytes[CHECKSUM_AT..].try_into().ok()?);
    if &bytes[..8] != MAGIC || crc32c::crc32c(&bytes[..CHECKSUM_AT]) != stored {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let header = Header {
        sequence: u64_at(8),
        payload_bytes: u64_at(16),
        batch_bytes: u64_at(24),
        payload_checksum: u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes")),
    };
    // A header that checks but whose sizes disagree was not written by this format.
    (header.payload_bytes < u64::MAX / 2 && header.batch_bytes == batch_bytes(header.payload_bytes))
        .then_some(header)
}

/// What replaying a journal found.
#[derive(Debug, Default)]
pub struct Replay {
    /// The image the valid batches describe (a checkpoint only as a placeholder: see
    /// `last_marker`).
    pub image: Stored,
    /// The marker of the image's checkpoint, whose file holds its pages.
    pub last_marker: Option<CheckpointMarker>,
    /// Bytes of the journal that hold valid batches; a torn tail starts here.
    pub valid_bytes: u64,
    /// The sequence number the next batch gets.
    pub next_sequence: u64,
    /// Bytes after `valid_bytes` that are a torn tail (to zero), if no damage.
    pub torn_bytes: u64,
    /// Batches applied.
    pub batches: u64,
}

/// Replays the journal `bytes` (the file named `name`, for messages). Damage is reported
/// in `image.damage`, naming the file and the offset.
pub fn replay(bytes: &[u8], name: &str) -> Replay {
    let mut replay = Replay::default();
    let mut expected: Option<u64> = None;
    let mut position = 0usize;
    while position < bytes.len() {
        if bytes[position..].iter().all(|&byte| byte == 0) {
            break; // The unused rest of the last chunk.
        }
        let header =
            parse_header(&bytes[position..]).filter(|h| expected.is_none_or(|s| h.sequence == s));
        let verdict = match header {
            Some(header) => check_batch(bytes, position, header),
            None => Err(None),
        };
        let header = match verdict {
            Ok(header) => header,
            Err(damage) => {
                let damage = damage.or_else(|| written_after(bytes, position, expected));
                match damage {
                    Some(reason) => {
                        replay.image.damage = Some(format!(
                            "journal {name}: batch at offset {position}: {reason}"
                        ));
                    }
                    None => replay.torn_bytes = (bytes.len() - position) as u64,
                }
                break;
            }
        };
        let payload = &bytes[position + HEADER_BYTES..][..header.payload_bytes as usize];
        if let Err(reason) = apply_batch(&mut replay, payload) {
            replay.image.damage = Some(format!(
                "journal {name}: batch {} at offset {position}: {reason}",
                header.sequence
            ));
            break;
        }
        position += header.batch_bytes as usize;
        replay.valid_bytes = position as u64;
        replay.batches += 1;
        expected = Some(header.sequence + 1);
    }
    replay.next_sequence = expected.unwrap_or(1);
    replay
}

/// A header that checks: is its payload whole? `Err(Some(reason))` is damage,
/// `Err(None)` is torn or damaged depending on what follows.
fn check_batch(bytes: &[u8], position: usize, header: Header) -> Result<Header, Option<String>> {
    let payload_end = position as u64 + HEADER_BYTES as u64 + header.payload_bytes;
    if payload_end <= bytes.len() as u64 {
        let payload = &bytes[position + HEADER_BYTES..payload_end as usize];
        if crc32c::crc32c(payload) == header.payload_checksum {
            // Whole, even if its padding or trailer did not land: the next batch goes at
            // its end (`valid_bytes` may then pass the file's length: a write there fills
            // the gap).
            return Ok(header);
        }
    }
    let end = position as u64 + header.batch_bytes;
    if end <= bytes.len() as u64 {
        let end = end as usize;
        if bytes[end - HEADER_BYTES..end] == bytes[position..position + HEADER_BYTES] {
            return Err(Some(format!(
                "batch {} fails its payload checksum, but its trailer shows it was written whole",
                header.sequence
            )));
        }
    }
    Err(None) // Cut short, unless something follows.
}

/// Whether anything was written after `position`: the header or trailer of a batch with
/// the sequence expected there or a later one. Only then can an unreadable batch have been
/// synced (the next write waits for the previous sync), which makes it damage.
fn written_after(bytes: &[u8], position: usize, expected: Option<u64>) -> Option<String> {
    let mut block = position.next_multiple_of(BLOCK_BYTES);
    while block < bytes.len() {
        let candidates = [block, (block + BLOCK_BYTES).saturating_sub(HEADER_BYTES)];
        for at in candidates {
            // The unreadable batch's own header is what is being judged.
            if at == position || at + HEADER_BYTES > bytes.len() {
                continue;
            }
            if let Some(found) = parse_header(&bytes[at..]) {
                if expected.is_none_or(|s| found.sequence >= s) {
                    return Some(format!(
                        "unreadable, but batch {} was written after it (its {} at offset {at})",
                        found.sequence,
                        if at == block { "header" } else { "trailer" }
                    ));
                }
            }
        }
        block += BLOCK_BYTES;
    }
    None
}

/// Folds one batch's records into the image.
fn apply_batch(replay: &mut Replay, payload: &[u8]) -> Result<(), String> {
    let records =
        codec::decode(payload).map_err(|reason| format!("records do not decode: {reason}"))?;
    for record in records {
        let write = match record {
            Record::Write(write) => write,
            Record::Checkpoint(marker) => {
                replay.last_marker = Some(marker);
                StoredWrite::Checkpoint(marker.placeholder())
            }
        };
        replay
            .image
            .apply(write)
            .map_err(|error| error.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::{DurableState, Entry, Operation};
    use bytes::Bytes;

    pub(crate) fn append(from: u64, count: u64) -> StoredWrite {
        StoredWrite::LogAppend {
            from,
            entries: (from..from + count)
                .map(|op| Entry {
                    client: op,
                    session: 1,
                    request: op as u32,
                    timestamp: op,
                    operation: Operation::Apply,
                    body: Bytes::from(vec![op as u8; (op % 300) as usize]),
                })
                .collect(),
        }
    }

    /// The state write of a replica normal in `view`.
    pub(crate) fn state(view: u32) -> StoredWrite {
        StoredWrite::State(DurableState {
            view,
            last_normal_view: view,
            joined: true,
            ..DurableState::default()
        })
    }

    /// A journal of `batches` batches; each appends 7 entries, some change the view.
    pub(crate) fn journal(batches: u64) -> (Vec<u8>, Vec<Stored>) {
        let mut bytes = Vec::new();
        let mut images = vec![Stored::default()];
        for n in 0..batches {
            let writes = vec![
                append(n * 7 + 1, 7),
                state(n as u32 / 2),
                StoredWrite::Commit(n * 7),
            ];
            let mut image = images.last().unwrap().clone();
            for write in &writes {
                image.apply(write.clone()).unwrap();
            }
            images.push(image);
            encode_batch(n + 1, &mut bytes, |out| {
                writes.iter().for_each(|write| codec::encode(write, 0, out))
            });
        }
        (bytes, images)
    }

    #[test]
    fn batches_are_whole_blocks_and_replay_in_order() {
        let (bytes, images) = journal(5);
        assert_eq!(bytes.len() % BLOCK_BYTES, 0);
        let replay = replay(&bytes, "j");
        assert_eq!(replay.image, images[5]);
        assert_eq!(replay.valid_bytes, bytes.len() as u64);
        assert_eq!(
            (replay.next_sequence, replay.torn_bytes, replay.batches),
            (6, 0, 5)
        );
    }

    #[test]
    fn a_torn_last_batch_at_every_byte_is_cut_off_not_damage() {
        let (bytes, images) = journal(4);
        let last_start = replay(&journal(3).0, "j").valid_bytes as usize;
        let payload_end = last_start + HEADER_BYTES + {
            let header = parse_header(&bytes[last_start..]).unwrap();
            header.payload_bytes as usize
        };
        for cut in last_start..bytes.len() {
            // Cut short, and (as after a crash on a preallocated or reused block) zeroed.
            let mut zeroed = bytes.clone();
            zeroed[cut..].fill(0);
            for torn in [&bytes[..cut], &zeroed[..]] {
                let replay = replay(torn, "j");
                assert_eq!(replay.image.damage, None, "cut at {cut}");
                let whole =
                    torn.len() >= payload_end && torn[..payload_end] == bytes[..payload_end];
                if whole {
                    // The payload landed whole: the batch counts (nothing relied on it,
                    // and nothing forbids using it).
                    assert_eq!(replay.image, images[4], "cut at {cut}");
                } else {
                    assert_eq!(replay.image, images[3], "cut at {cut}");
                    assert_eq!(replay.valid_bytes, last_start as u64);
                    let zeros = torn[last_start..].iter().all(|&byte| byte == 0);
                    let expected = if zeros { 0 } else { torn.len() - last_start };
                    assert_eq!(replay.torn_bytes, expected as u64);
                    assert_eq!(replay.next_sequence, 4);
                }
            }
        }
    }

    #[test]
    fn a_flipped_bit_in_a_middle_batch_is_damage_never_dropped() {
        let (bytes, images) = journal(4);
        let second = replay(&journal(1).0, "j").valid_bytes as usize;
        let third = replay(&journal(2).0, "j").valid_bytes as usize;
        // Header and payload bits (padding carries no information and no checksum).
        let payload_end =
            second + HEADER_BYTES + parse_header(&bytes[second..]).unwrap().payload_bytes as usize;
        for at in (second..payload_end).step_by(13) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << (at % 8);
            let replay = replay(&damaged, "journal");
            let damage = replay
                .image
                .damage
                .clone()
                .unwrap_or_else(|| panic!("bit at {at} not noticed"));
            assert!(damage.contains(&format!("offset {second}")), "{damage}");
            assert!(damage.contains("journal"), "{damage}");
            // Only what came before the damage is kept.
            let mut expected = images[1].clone();
            expected.damage = replay.image.damage.clone();
            assert_eq!(replay.image, expected);
        }
        // The same in the last batch, whose trailer proves it was written whole.
        let mut damaged = bytes.clone();
        damaged[bytes.len() - BLOCK_BYTES + HEADER_BYTES + 3] ^= 4;
        assert!(replay(&damaged, "j")
            .image
            .damage
            .unwrap()
            .contains("written whole"));
        // A damaged header whose own trailer survived is damage too.
        let mut damaged = bytes.clone();
        damaged[third + 9] ^= 1;
        assert!(replay(&damaged, "j")
            .image
            .damage
            .unwrap()
            .contains("was written after it"));
    }

    #[test]
    fn garbage_never_panics() {
        let (bytes, _) = journal(3);
        let mut prng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            prng ^= prng << 13;
            prng ^= prng >> 7;
            prng ^= prng << 17;
            let mut garbled = bytes.clone();
            let at = (prng % bytes.len() as u64) as usize;
            let len = ((prng >> 32) % 200) as usize;
            for (i, byte) in garbled[at..].iter_mut().take(len).enumerate() {
                *byte = (prng >> (i % 56)) as u8;
            }
            let _ = replay(&garbled, "j");
            let _ = replay(&garbled[..at], "j");
        }
        let _ = replay(&[0xff; 10_000], "j");
    }
}
