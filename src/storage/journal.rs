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
//!         payload crc32c u32, file id u64, zeros, header crc32c u32 (at 60)
//! trailer: a byte-for-byte copy of the header, in the batch's last 64 bytes
//! ```
//!
//! Batches are padded to 4 KiB so that a torn write of a new batch never touches the
//! sectors of an earlier one (the journal is appended at 4 KiB boundaries). Sequence
//! numbers rise by one, also from one journal file to the next (a compaction's image
//! batch takes the next number). The file grows in [`CHUNK_BYTES`] chunks whose blocks
//! are written (zeros, or an earlier journal's batches) and synced before use, and a file
//! whose length is not a whole number of chunks was truncated (damage: a crash cannot do
//! that).
//!
//! # Recycled files: the file id
//!
//! A journal file is used more than once: when the journal is compacted, the file it
//! leaves becomes the next spare (`spare.rs`), so that no file is zero-filled again once
//! the journal has reached its size. Past its end a journal may therefore hold the
//! batches of the file's **earlier use**, intact and with valid checksums. Each use of a
//! file draws a random 64-bit **file id** ([`new_file_id`]); every batch of that use
//! carries it, and the first batch, at offset 0, names it (in a recycled file, or any
//! file a compaction or a rewrite made, that batch is written and synced before the file
//! becomes the journal). Replay accepts a batch only with the
//! file id of the batch at offset 0 *and* the next sequence number, so a batch of an
//! earlier use is never taken for the next one, even when its sequence number happens to
//! be the one expected (as RocksDB's recyclable log records carry their log number). A
//! random id, not a counter, so that no client can plant a batch that would pass: the
//! records hold client bytes, and the id is never sent anywhere.
//!
//! # Torn tail or damage
//!
//! Messages leave only after their batch's `fdatasync`, and a batch is written only
//! after the previous one's `fdatasync` returned. So a batch cut short by a crash is
//! always the last one, and nothing relied on it: dropping it is no loss. A batch that
//! was synced may have been acknowledged, and must never be dropped silently: it is
//! *damage*, and the replica recovers through the protocol (the image keeps what was
//! applied before it, `Stored::damage` says where). Replay tells them apart like this
//! ("this file's" means with the file id of the batch at offset 0; at offset 0 any id):
//!
//! | what is found at the next batch's place                           | verdict        |
//! |-------------------------------------------------------------------|----------------|
//! | this file's next header, payload checks                           | applied        |
//! | this file's next header, payload does not, trailer equals the header | damage      |
//! | anything else, and this file's header or trailer of this or a later batch after it | damage |
//! | this file's next header, payload does not, nothing of this file after it | torn tail: zeroed |
//! | zeros, an earlier use's batch, or bytes that are no header, and nothing of this file after them | the end |
//! | the file's length is not a whole number of chunks                | damage         |
//! | payload checks but its records do not decode or apply             | damage         |
//!
//! "The end" covers both a clean end (the earlier use's batches or zeros follow the last
//! batch) and a crash that cut the next batch short before its header's sector landed:
//! the two look alike, and neither needs repair. Whatever follows the end holds no header
//! or trailer of this file's use with the expected sequence number or a later one (else
//! it would be damage), and none with an earlier one (those are all before the end), so
//! no later replay can read it as part of the journal; the next batches, written from
//! the end on, overwrite it. A torn batch whose header landed is zeroed on open, over the
//! extent its header gives ([`Replay::torn_bytes`]), so that its header is not found
//! again; the rest is left as it is (zeroing up to 64 MiB of an earlier use on every
//! start would buy nothing).
//!
//! At offset 0 any file id is accepted, and anything of any use found after an
//! unreadable first batch makes it damage: a recycled file's first batch is written and
//! synced before the file becomes the journal, so it is never a torn write (only a new
//! directory's first batch can be, and its file holds nothing else).
//!
//! A torn batch written over an earlier use's batches is cut off at its own start: the
//! intact batches of the earlier use after it (or under its unwritten sectors) carry
//! another file id, count as nothing, and are never reported as damage.
//!
//! A payload that checks is applied even if its trailer is missing: the batch was
//! written whole (its trailer sector may simply not have landed), and using state that
//! was never acknowledged is safe. What the format cannot tell apart: a synced last
//! batch whose header *and* trailer both rotted looks like the end and is dropped
//! (one replica's silent loss of its latest batch), and so does a journal truncated
//! exactly at a chunk boundary past its last batch; and a crash that landed a batch's
//! last sector but not its first is reported as damage although nothing relied on it
//! (safe: the replica recovers from its peers).

use super::codec::{self, CheckpointMarker, Record};
use crate::protocol::{Stored, StoredWrite};
use bytes::BufMut;

/// Batches start and end on this boundary.
pub const BLOCK_BYTES: usize = 4096;
/// The journal file grows in chunks of this size whose blocks are written and durable
/// before any batch goes into them, so its length is always a whole number of chunks: a
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
    file_id: u64,
}

/// A fresh file id for a new use of a journal file: random, from the operating system's
/// generator (or, should it fail, from the clock and the process).
pub fn new_file_id() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        use std::hash::{BuildHasher, RandomState};
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        RandomState::new().hash_one((now, std::process::id()))
    })
}

/// The bytes of one batch of `sequence` in the use of a file named `file_id`, whose
/// records `records` appends, padded; appended to `out`.
pub fn encode_batch(
    sequence: u64,
    file_id: u64,
    out: &mut Vec<u8>,
    records: impl FnOnce(&mut Vec<u8>),
) {
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
        cursor.put_u64_le(file_id);
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
        file_id: u64_at(36),
    };
    // A header that checks but whose sizes disagree was not written by this format.
    (header.payload_bytes < u64::MAX / 2 && header.batch_bytes == batch_bytes(header.payload_bytes))
        .then_some(header)
}

/// Which batch replay expects next: this file's id and the next sequence number (`None`
/// before the batch at offset 0, which names the file id).
#[derive(Clone, Copy, Debug)]
struct Expected {
    file_id: u64,
    sequence: u64,
}

impl Expected {
    /// Whether `header` is the batch expected here.
    fn is(expected: Option<Expected>, header: &Header) -> bool {
        expected.is_none_or(|e| header.file_id == e.file_id && header.sequence == e.sequence)
    }

    /// Whether `header` is this file's, of the batch expected here or a later one.
    fn is_or_after(expected: Option<Expected>, header: &Header) -> bool {
        expected.is_none_or(|e| header.file_id == e.file_id && header.sequence >= e.sequence)
    }
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
    /// The file id of this use of the file (that of the batch at offset 0), if any batch
    /// was applied: the next batch must carry it.
    pub file_id: Option<u64>,
    /// Bytes after `valid_bytes` that are a torn batch of this file (to zero), if no
    /// damage: its extent as its header gives it, within the file.
    pub torn_bytes: u64,
    /// Whether non-zero bytes that are not part of the journal follow its end: an earlier
    /// use's batches, or a batch cut short before its header landed (left as they are:
    /// the next batches overwrite them).
    pub leftover: bool,
    /// Batches applied.
    pub batches: u64,
}

/// Replays the journal `bytes` (the file named `name`, for messages). Damage is reported
/// in `image.damage`, naming the file and the offset.
pub fn replay(bytes: &[u8], name: &str) -> Replay {
    let mut replay = Replay::default();
    let mut expected: Option<Expected> = None;
    let mut position = 0usize;
    while position < bytes.len() {
        if bytes[position..].iter().all(|&byte| byte == 0) {
            break; // The unused rest of a zero-filled chunk.
        }
        let header = parse_header(&bytes[position..]).filter(|h| Expected::is(expected, h));
        let verdict = match header {
            Some(header) => check_batch(bytes, position, header),
            None => Err(None),
        };
        let header = match verdict {
            Ok(header) => header,
            Err(damage) => {
                let damage = damage.or_else(|| written_after(bytes, position, expected));
                match (damage, header) {
                    (Some(reason), _) => {
                        replay.image.damage = Some(format!(
                            "journal {name}: batch at offset {position}: {reason}"
                        ));
                    }
                    // This file's next batch, cut short: zero what its header claims.
                    (None, Some(torn)) => {
                        replay.torn_bytes = torn.batch_bytes.min((bytes.len() - position) as u64)
                    }
                    // No batch of this file here: the end.
                    (None, None) => replay.leftover = true,
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
        expected = Some(Expected {
            file_id: header.file_id,
            sequence: header.sequence + 1,
        });
    }
    replay.next_sequence = expected.map_or(1, |e| e.sequence);
    replay.file_id = expected.map(|e| e.file_id);
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

/// Whether anything was written after `position`: the header or trailer of a batch of
/// this file's use with the sequence expected there or a later one. Only then can an
/// unreadable batch have been synced (the next write waits for the previous sync), which
/// makes it damage. Batches of the file's earlier uses do not count: they are older.
fn written_after(bytes: &[u8], position: usize, expected: Option<Expected>) -> Option<String> {
    let mut block = position.next_multiple_of(BLOCK_BYTES);
    while block < bytes.len() {
        let candidates = [block, (block + BLOCK_BYTES).saturating_sub(HEADER_BYTES)];
        for at in candidates {
            // The unreadable batch's own header is what is being judged.
            if at == position || at + HEADER_BYTES > bytes.len() {
                continue;
            }
            if let Some(found) = parse_header(&bytes[at..]) {
                if Expected::is_or_after(expected, &found) {
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

    /// The file id of the use under test, and that of the file's earlier use.
    pub(crate) const ID: u64 = 0x5eed_0001_d00d_f11e;
    const EARLIER: u64 = 0x0bad_0000_0000_0001;

    /// `count` entries from op `from`, each with a body of `body_bytes`.
    fn entries(from: u64, count: u64, body_bytes: impl Fn(u64) -> usize) -> StoredWrite {
        StoredWrite::LogAppend {
            from,
            entries: (from..from + count)
                .map(|op| Entry {
                    client: op,
                    session: 1,
                    request: op as u32,
                    timestamp: op,
                    operation: Operation::Apply,
                    body: Bytes::from(vec![op as u8; body_bytes(op)]),
                })
                .collect(),
        }
    }

    pub(crate) fn append(from: u64, count: u64) -> StoredWrite {
        entries(from, count, |op| (op % 300) as usize)
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

    /// The writes of the `n`th batch (from 0) of [`journal`]: 7 entries of 0.2-1 KiB (the
    /// first batch spans one block, the fourth two), a view change every other batch, a
    /// commit.
    fn writes(n: u64) -> Vec<StoredWrite> {
        vec![
            entries(n * 7 + 1, 7, |op| 200 + 30 * op as usize),
            state(n as u32 / 2),
            StoredWrite::Commit(n * 7),
        ]
    }

    /// A journal of `batches` batches of the use `ID`, and the image after each.
    pub(crate) fn journal(batches: u64) -> (Vec<u8>, Vec<Stored>) {
        let mut bytes = Vec::new();
        let mut images = vec![Stored::default()];
        for n in 0..batches {
            let mut image = images.last().unwrap().clone();
            for write in writes(n) {
                image.apply(write).unwrap();
            }
            images.push(image);
            encode_batch(n + 1, ID, &mut bytes, |out| {
                writes(n)
                    .iter()
                    .for_each(|write| codec::encode(write, 0, out))
            });
        }
        (bytes, images)
    }

    /// `bytes` of the file's earlier use: intact batches of the id `EARLIER`, each of
    /// `count` entries of `body_bytes`, whose sequence numbers start at 1 like the use
    /// under test (so they include the numbers it expects: only the id tells them apart).
    /// The ops are others, so that applying one would show.
    fn earlier_use(bytes: usize, count: u64, body_bytes: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut sequence = 1;
        while out.len() < bytes {
            let write = entries(1000 + sequence * count, count, |_| body_bytes);
            encode_batch(sequence, EARLIER, &mut out, |out| {
                codec::encode(&write, 0, out)
            });
            sequence += 1;
        }
        out.truncate(bytes);
        out
    }

    /// What can lie under a new batch: zeros, or an earlier use's batches of one block
    /// each (a header at every block), or of three blocks (the next batch's place mostly
    /// in the middle of one).
    fn underneath(bytes: usize) -> [(&'static str, Vec<u8>); 3] {
        [
            ("zeros", vec![0; bytes]),
            ("one-block batches", earlier_use(bytes, 1, 100)),
            ("three-block batches", earlier_use(bytes, 3, 3000)),
        ]
    }

    /// `new` written over `old` (as long as `old`).
    fn over(new: &[u8], old: &[u8]) -> Vec<u8> {
        let mut bytes = old.to_vec();
        bytes[..new.len()].copy_from_slice(new);
        bytes
    }

    /// Where the batch of `sequence` (from 1) starts in [`journal`], and where its payload
    /// ends.
    fn batch_at(sequence: u64) -> (usize, usize) {
        let start = journal(sequence - 1).0.len();
        let bytes = journal(sequence).0;
        let header = parse_header(&bytes[start..]).unwrap();
        (start, start + HEADER_BYTES + header.payload_bytes as usize)
    }

    #[test]
    fn batches_are_whole_blocks_and_replay_in_order() {
        let (bytes, images) = journal(5);
        assert_eq!(bytes.len() % BLOCK_BYTES, 0);
        let (_, last_payload_end) = batch_at(5);
        assert!(
            bytes.len() - batch_at(5).0 >= 2 * BLOCK_BYTES,
            "multi-block batches"
        );
        assert!(last_payload_end < bytes.len());
        for (what, old) in underneath(bytes.len() + 20 * BLOCK_BYTES) {
            let replay = replay(&over(&bytes, &old), "j");
            assert_eq!(replay.image, images[5], "{what}");
            assert_eq!(replay.valid_bytes, bytes.len() as u64, "{what}");
            assert_eq!(replay.file_id, Some(ID));
            assert_eq!(
                (replay.next_sequence, replay.torn_bytes, replay.batches),
                (6, 0, 5),
                "{what}"
            );
            // The earlier use's batches after the end are no damage and no torn tail.
            assert_eq!(replay.leftover, what != "zeros", "{what}");
        }
        // A use that starts later in the sequence (after a compaction) reads the same.
        let mut later = Vec::new();
        encode_batch(41, ID, &mut later, |out| {
            codec::encode(&append(1, 3), 0, out)
        });
        encode_batch(42, ID, &mut later, |out| {
            codec::encode(&append(4, 3), 0, out)
        });
        let replay = replay(&later, "j");
        assert_eq!((replay.batches, replay.next_sequence), (2, 43));
    }

    #[test]
    fn an_empty_journal_is_empty() {
        for bytes in [&[][..], &[0; 3 * BLOCK_BYTES]] {
            let replay = replay(bytes, "j");
            assert_eq!(replay.image, Stored::default());
            assert_eq!((replay.valid_bytes, replay.next_sequence), (0, 1));
            assert_eq!(
                (replay.file_id, replay.torn_bytes, replay.leftover),
                (None, 0, false)
            );
        }
    }

    /// The verdicts on a last batch (the 4th) of which only the bytes `landed` says were
    /// written over `old` (the file, as long as it is): applied if its payload landed
    /// whole, damage exactly when its trailer landed without its payload, otherwise the
    /// end of the journal at its start, zeroed if its header landed. Never an earlier
    /// use's batch.
    fn check_torn(old: &[u8], landed: impl Fn(usize) -> bool, what: &str) {
        thread_local! {
            static JOURNAL: ((Vec<u8>, Vec<Stored>), (usize, usize)) = (journal(4), batch_at(4));
        }
        let ((bytes, images), (start, payload_end)) = JOURNAL.with(Clone::clone);
        let mut torn = old.to_vec();
        torn[..start].copy_from_slice(&bytes[..start]);
        for at in start..bytes.len().min(torn.len()) {
            if landed(at) {
                torn[at] = bytes[at];
            }
        }
        let replay = replay(&torn, "j");
        // What the replay sees: these bytes equal to the batch's (landed, or the same).
        let same = |from: usize, to: usize| torn.get(from..to) == Some(&bytes[from..to]);
        let header_landed = same(start, start + HEADER_BYTES);
        let payload_landed = same(start, payload_end);
        let trailer_landed = same(bytes.len() - HEADER_BYTES, bytes.len());
        if payload_landed {
            // Nothing relied on it, and nothing forbids using it.
            assert_eq!(replay.image, images[4], "{what}");
            assert_eq!(replay.valid_bytes, bytes.len() as u64, "{what}");
            assert_eq!(replay.next_sequence, 5, "{what}");
            return;
        }
        let mut expected = images[3].clone();
        expected.damage = replay.image.damage.clone();
        assert_eq!(replay.image, expected, "{what}");
        assert_eq!(replay.valid_bytes, start as u64, "{what}");
        assert_eq!(replay.next_sequence, 4, "{what}");
        // A landed trailer proves nothing, but it cannot be told from a synced batch
        // whose payload rotted: damage, which is safe (the replica recovers from its peers).
        assert_eq!(
            replay.image.damage.is_some(),
            trailer_landed,
            "{what}: {:?}",
            replay.image.damage
        );
        if replay.image.damage.is_none() {
            let batch_bytes = (bytes.len() - start).min(torn.len() - start) as u64;
            let expected_torn = if header_landed { batch_bytes } else { 0 };
            assert_eq!(replay.torn_bytes, expected_torn, "{what}");
            let leftover = !header_landed && torn[start..].iter().any(|&byte| byte != 0);
            assert_eq!(replay.leftover, leftover, "{what}");
        }
    }

    #[test]
    fn a_torn_last_batch_at_every_byte_is_cut_off_not_damage() {
        let (bytes, _) = journal(4);
        let (start, _) = batch_at(4);
        for (what, old) in underneath(bytes.len() + 8 * BLOCK_BYTES) {
            for cut in start..bytes.len() {
                // The first `cut` bytes landed, over what was there; or the file ends
                // there (a journal grown in place and cut short, over zeros).
                check_torn(&old, |at| at < cut, &format!("{what}, cut at {cut}"));
                if what == "zeros" {
                    check_torn(&old[..cut], |_| true, &format!("file cut at {cut}"));
                }
            }
        }
    }

    #[test]
    fn a_torn_last_batch_of_any_sectors_never_lets_an_earlier_use_in() {
        // The device may land any of a write's 512-byte sectors and not the others.
        let (bytes, _) = journal(4);
        let (start, _) = batch_at(4);
        let sectors = (bytes.len() - start) / 512;
        let mut prng = 0x2545_f491_4f6c_dd1du64;
        for (what, old) in underneath(bytes.len() + 8 * BLOCK_BYTES) {
            for round in 0..1500 {
                prng ^= prng << 13;
                prng ^= prng >> 7;
                prng ^= prng << 17;
                // Some rounds land nearly everything, some nearly nothing.
                let mask = match round % 3 {
                    0 => prng,
                    1 => prng | prng.rotate_left(17),
                    _ => prng & prng.rotate_left(17),
                };
                let landed = |at: usize| (mask >> (((at - start) / 512) % 64)) & 1 == 1;
                check_torn(
                    &old,
                    landed,
                    &format!("{what}, sectors {mask:#x} of {sectors}"),
                );
            }
            // The corners: only the header's sector, only the trailer's, both.
            let last = bytes.len() - 1;
            let corners: [&dyn Fn(usize) -> bool; 3] =
                [&|at| at < start + 512, &|at| at > last - 512, &|at| {
                    at < start + 512 || at > last - 512
                }];
            for (n, landed) in corners.into_iter().enumerate() {
                check_torn(&old, landed, &format!("{what}, corner {n}"));
            }
        }
    }

    #[test]
    fn an_earlier_use_s_batch_with_the_expected_sequence_is_the_end_not_a_batch() {
        // The very batch that would come next, but of the file's earlier use.
        let (bytes, images) = journal(3);
        let mut old = earlier_use(bytes.len() + 16 * BLOCK_BYTES, 2, 500);
        let mut stale = Vec::new();
        encode_batch(4, EARLIER, &mut stale, |out| {
            writes(3)
                .iter()
                .for_each(|write| codec::encode(write, 0, out))
        });
        old[bytes.len()..bytes.len() + stale.len()].copy_from_slice(&stale);
        let replay = replay(&over(&bytes, &old), "j");
        assert_eq!(replay.image, images[3]);
        assert_eq!((replay.batches, replay.next_sequence), (3, 4));
        assert_eq!(replay.valid_bytes, bytes.len() as u64);
        assert_eq!((replay.torn_bytes, replay.leftover), (0, true));
        // The same batch with this use's id is the next batch.
        let (next, next_images) = journal(4);
        let replay = super::replay(&over(&next, &old), "j");
        assert_eq!(replay.image, next_images[4]);
    }

    #[test]
    fn a_flipped_bit_in_a_middle_batch_is_damage_never_dropped() {
        let (bytes, images) = journal(4);
        let (second, second_payload_end) = batch_at(2);
        let (third, _) = batch_at(3);
        for (what, old) in underneath(bytes.len() + 8 * BLOCK_BYTES) {
            let bytes = over(&bytes, &old);
            // Header and payload bits (padding carries no information and no checksum).
            for at in (second..second_payload_end).step_by(97) {
                let mut damaged = bytes.clone();
                damaged[at] ^= 1 << (at % 8);
                let replay = replay(&damaged, "journal");
                let damage = replay
                    .image
                    .damage
                    .clone()
                    .unwrap_or_else(|| panic!("{what}: bit at {at} not noticed"));
                assert!(damage.contains(&format!("offset {second}")), "{damage}");
                assert!(damage.contains("journal"), "{damage}");
                // Only what came before the damage is kept.
                let mut expected = images[1].clone();
                expected.damage = replay.image.damage.clone();
                assert_eq!(replay.image, expected, "{what}");
            }
            // The same in the last batch, whose trailer proves it was written whole.
            let (fourth, _) = batch_at(4);
            let mut damaged = bytes.clone();
            damaged[fourth + HEADER_BYTES + 3] ^= 4;
            let damage = replay(&damaged, "j").image.damage.unwrap();
            assert!(damage.contains("written whole"), "{what}: {damage}");
            // A damaged header whose own trailer survived is damage too.
            let mut damaged = bytes.clone();
            damaged[third + 9] ^= 1;
            let damage = replay(&damaged, "j").image.damage.unwrap();
            assert!(damage.contains("was written after it"), "{what}: {damage}");
        }
    }

    #[test]
    fn an_unreadable_first_batch_of_a_used_file_is_damage() {
        // The batch at offset 0 is synced before the file becomes the journal: whatever
        // follows it (an earlier use's batches too) shows it is not a torn first write.
        let (bytes, _) = journal(1);
        for at in [9, HEADER_BYTES + 5] {
            let mut damaged = over(&bytes, &earlier_use(bytes.len() + 8 * BLOCK_BYTES, 1, 10));
            damaged[at] ^= 0x10;
            let replay = replay(&damaged, "j");
            assert!(replay.image.damage.is_some(), "byte {at}");
            assert_eq!(replay.image.op(), 0);
            // In a fresh file, it is the first write, torn.
            let mut fresh = bytes.clone();
            fresh.resize(bytes.len() + 8 * BLOCK_BYTES, 0);
            fresh[at] ^= 0x10;
            fresh[bytes.len() - 1] ^= 0x10; // Its trailer did not land either.
            assert_eq!(super::replay(&fresh, "j").image.damage, None, "byte {at}");
        }
    }

    #[test]
    fn a_batch_whose_records_do_not_decode_or_apply_is_damage() {
        /// Records that go in a batch, and the damage they are reported as.
        type Case = (fn(&mut Vec<u8>), &'static str);
        let cases: [Case; 2] = [
            (
                |out| out.extend_from_slice(&[0xee; 100]),
                "records do not decode",
            ),
            // A log reset above the checkpoint (there is none): a write no replica makes.
            (
                |out| codec::encode(&StoredWrite::LogReset { base: 99 }, 0, out),
                "log reset to 99",
            ),
        ];
        for (records, reason) in cases {
            let (mut bytes, images) = journal(2);
            encode_batch(3, ID, &mut bytes, records);
            bytes.extend_from_slice(&journal(4).0[batch_at(4).0..]); // A later batch.
            let replay = replay(&bytes, "j");
            let damage = replay.image.damage.clone().expect("damage");
            assert!(damage.contains(reason), "{damage}");
            assert!(damage.contains("batch 3"), "{damage}");
            let mut expected = images[2].clone();
            expected.damage = Some(damage);
            assert_eq!(replay.image, expected);
        }
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
