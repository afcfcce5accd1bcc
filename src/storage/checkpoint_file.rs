//! A checkpoint's contents in a file of its own, `checkpoint-<op>` (paper 5.1: the
//! checkpoint replaces the log below it). Checkpoints do not go into the journal: they
//! are large and rare, and a compaction rewrites the journal's image, so a checkpoint in
//! it would be copied every time. The file is written atomically
//! (`checkpoint-<op>.tmp`, fsync, rename, fsync the directory) *before* the journal batch
//! whose marker names it, so a durable marker always finds its file.
//!
//! Layout: a 64-byte header (magic `VSRCKPT1`, op `u64`, timestamp `u64`, payload bytes
//! `u64`, payload crc32c `u32`, zeros, header crc32c `u32` at 60), then the payload: the
//! service's pages and the client table's, each a `u32` page count and per page its
//! SHA-256 digest, a `u32` length and its bytes. Reading checks both checksums, bounds
//! every count and length by the bytes present, and verifies every page's digest.

use super::codec::{CheckpointMarker, Reader};
use super::files;
use super::StorageError;
use crate::protocol::Checkpoint;
use crate::service::snapshot::{Digest, Page, Snapshot, DIGEST_BYTES};
use bytes::{BufMut, Bytes};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"VSRCKPT1";
const HEADER_BYTES: usize = 64;
const CHECKSUM_AT: usize = 60;
const PREFIX: &str = "checkpoint-";

/// The file holding the checkpoint at `op`. Zero-padded so names sort by op.
pub fn path(directory: &Path, op: u64) -> PathBuf {
    directory.join(format!("{PREFIX}{op:020}"))
}

/// The op of a file named like a checkpoint (temporary files excluded).
pub fn op_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Bytes written per `write` and synced before the next piece: a checkpoint file written
/// whole and synced at the end would make the journal's concurrent `fdatasync`s wait
/// behind the device's flush of all of it (the spare's zeros did: `spare.rs`); synced a
/// piece at a time, each flush the journal waits behind is small.
const PIECE_BYTES: usize = 4 << 20;

/// Writes `checkpoint` atomically and durably (`checkpoint-<op>.tmp`, synced, renamed,
/// the directory synced); returns the marker that names it. Streams the pages: the file
/// is never assembled in memory (a checkpoint may be as large as the state).
pub fn write(directory: &Path, checkpoint: &Checkpoint) -> Result<CheckpointMarker, StorageError> {
    // The payload's checksum first (the header names it and comes first), then the
    // file: the pages are read twice, never copied whole.
    let mut checksum = 0u32;
    let mut payload_bytes = 0u64;
    for piece in payload_pieces(checkpoint) {
        checksum = crc32c::crc32c_append(checksum, piece.as_ref());
        payload_bytes += piece.as_ref().len() as u64;
    }
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.put_slice(MAGIC);
    header.put_u64_le(checkpoint.op);
    header.put_u64_le(checkpoint.timestamp);
    header.put_u64_le(payload_bytes);
    header.put_u32_le(checksum);
    header.resize(CHECKSUM_AT, 0);
    let header_checksum = crc32c::crc32c(&header[..CHECKSUM_AT]);
    header.put_u32_le(header_checksum);
    let target = path(directory, checkpoint.op);
    let temporary = target.with_extension("tmp");
    let mut file = files::PieceWriter::create(&temporary, PIECE_BYTES)?;
    file.append(&header)?;
    for piece in payload_pieces(checkpoint) {
        file.append(piece.as_ref())?;
    }
    file.finish_as(directory, &target)?;
    super::counters::CHECKPOINT_FILE_BYTES.add(HEADER_BYTES as u64 + payload_bytes);
    super::counters::CHECKPOINT_FILES_FULL.add(1);
    Ok(CheckpointMarker {
        op: checkpoint.op,
        timestamp: checkpoint.timestamp,
        checksum,
    })
}

/// A piece of a checkpoint file's payload: a count or length field, a page's digest, or
/// its bytes (borrowed).
enum Piece<'a> {
    Length([u8; 4]),
    Digest([u8; DIGEST_BYTES]),
    Bytes(&'a [u8]),
}

impl AsRef<[u8]> for Piece<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            Piece::Length(bytes) => bytes,
            Piece::Digest(bytes) => bytes,
            Piece::Bytes(bytes) => bytes,
        }
    }
}

/// The payload in order: the service's pages, then the client table's; each snapshot a
/// `u32` page count, then per page its digest, a `u32` length and its bytes.
fn payload_pieces(checkpoint: &Checkpoint) -> impl Iterator<Item = Piece<'_>> {
    [&checkpoint.service, &checkpoint.clients]
        .into_iter()
        .flat_map(|snapshot| {
            let count = u32::try_from(snapshot.pages().len()).expect("pages fit a message");
            std::iter::once(Piece::Length(count.to_le_bytes())).chain(
                snapshot.pages().iter().flat_map(|page| {
                    let length = u32::try_from(page.len()).expect("a page fits a message");
                    [
                        Piece::Digest(page.digest().0),
                        Piece::Length(length.to_le_bytes()),
                        Piece::Bytes(page.bytes()),
                    ]
                }),
            )
        })
}

/// Reads the checkpoint `marker` names, or says why it cannot be used (the text names
/// the file).
pub fn read(directory: &Path, marker: &CheckpointMarker) -> Result<Checkpoint, String> {
    let path = path(directory, marker.op);
    let bytes = match files::read_if_exists(&path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(format!("checkpoint file {} is missing", path.display())),
        Err(error) => return Err(error.to_string()),
    };
    parse(Bytes::from(bytes), marker)
        .map_err(|reason| format!("checkpoint file {}: {reason}", path.display()))
}

/// `bytes` (the whole file) as the checkpoint `marker` names; the pages are slices of it.
fn parse(bytes: Bytes, marker: &CheckpointMarker) -> Result<Checkpoint, &'static str> {
    if bytes.len() < HEADER_BYTES {
        return Err("shorter than its header");
    }
    let (header, payload) = bytes.split_at(HEADER_BYTES);
    let stored_checksum = u32::from_le_bytes(header[CHECKSUM_AT..].try_into().expect("4 bytes"));
    if &header[..8] != MAGIC || crc32c::crc32c(&header[..CHECKSUM_AT]) != stored_checksum {
        return Err("header fails its checksum");
    }
    let mut reader = Reader {
        bytes: &header[8..],
    };
    let op = reader.u64()?;
    let timestamp = reader.u64()?;
    let payload_bytes = reader.u64()?;
    let checksum = reader.u32()?;
    if payload_bytes != payload.len() as u64 || crc32c::crc32c(payload) != checksum {
        return Err("payload fails its checksum (cut short or corrupt)");
    }
    if op != marker.op || timestamp != marker.timestamp || checksum != marker.checksum {
        return Err("does not match the checkpoint the journal names");
    }
    let payload = bytes.slice(HEADER_BYTES..);
    let mut reader = Reader { bytes: &payload };
    let service = read_pages(&mut reader, &payload)?;
    let clients = read_pages(&mut reader, &payload)?;
    if !reader.bytes.is_empty() {
        return Err("trailing bytes after the pages");
    }
    Ok(Checkpoint {
        op,
        timestamp,
        service,
        clients,
    })
}

/// Pages as `payload_pieces` laid them out; each page is a slice of `whole` (no copy) checked
/// against its digest.
fn read_pages(reader: &mut Reader, whole: &Bytes) -> Result<Snapshot, &'static str> {
    let count = reader.u32()? as usize;
    if count > reader.bytes.len() / (DIGEST_BYTES + 4) {
        return Err("page count exceeds the file");
    }
    let mut pages = Vec::with_capacity(count);
    for _ in 0..count {
        let digest = Digest(reader.array()?);
        let length = reader.u32()? as usize;
        let bytes = reader.take(length)?;
        let page = Page::verified(whole.slice_ref(bytes), digest)
            .map_err(|_| "a page does not match its digest")?;
        pages.push(page);
    }
    Ok(Snapshot::new(pages))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn checkpoint(op: u64) -> Checkpoint {
        Checkpoint {
            op,
            timestamp: op * 3,
            service: Snapshot::new(vec![
                Page::new(Bytes::from(vec![1u8; 100])),
                Page::new(Bytes::from(vec![op as u8; 5000])),
            ]),
            clients: Snapshot::from_blob(&Bytes::from(vec![9u8; 10])),
        }
    }

    #[test]
    fn a_checkpoint_reads_back_and_any_damage_is_refused() {
        let directory = crate::storage::data_dir::tests::temp_dir("checkpoint");
        let written = checkpoint(64);
        let marker = write(&directory, &written).unwrap();
        assert_eq!(read(&directory, &marker).unwrap(), written);
        assert!(!directory
            .join("checkpoint-00000000000000000064.tmp")
            .exists());
        assert_eq!(op_of("checkpoint-00000000000000000064"), Some(64));
        assert_eq!(op_of("checkpoint-00000000000000000064.tmp"), None);

        let file = path(&directory, 64);
        let bytes = std::fs::read(&file).unwrap();
        for at in (0..bytes.len()).step_by(97) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            std::fs::write(&file, &damaged).unwrap();
            let error = read(&directory, &marker).unwrap_err();
            assert!(error.contains(&file.display().to_string()), "{error}");
            std::fs::write(&file, &bytes[..at]).unwrap();
            read(&directory, &marker).unwrap_err();
        }
        std::fs::write(&file, &bytes).unwrap();
        let other = CheckpointMarker {
            checksum: marker.checksum ^ 1,
            ..marker
        };
        assert!(read(&directory, &other)
            .unwrap_err()
            .contains("does not match"));
        std::fs::remove_file(&file).unwrap();
        assert!(read(&directory, &marker).unwrap_err().contains("missing"));
    }
}
