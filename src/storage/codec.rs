//! The records of a journal batch: one [`StoredWrite`] each, in a small explicit encoding
//! (little-endian, like the wire). Each record is a tag byte, a `u32` body length and the
//! body, so a reader bounds every record by the bytes present before it looks inside.
//!
//! | tag | record              | body                                                       |
//! |----:|---------------------|------------------------------------------------------------|
//! |   1 | checkpoint marker   | op `u64`, timestamp `u64`, checksum of the file's payload `u32` |
//! |   2 | log reset           | base `u64`                                                 |
//! |   3 | log truncate        | after `u64`                                                |
//! |   4 | log append          | from `u64`, then an entry list as on the wire              |
//! |   5 | durable state       | epoch `u32`, view `u32`, last normal view `u32`, recovering `u8`, joined `u8` |
//! |   6 | commit              | op `u64`                                                   |
//! |   7 | configuration       | epoch start op `u64`, then the configuration (`Configuration::encode`) |
//! |   8 | log start (witness) | base `u64`, the base's timestamp `u64` (format version 3)  |
//! |   9 | actives' commit     | op `u64` (format version 3; the latest wins since 6)       |
//! |  10 | checkpoint dropped  | empty (format version 5)                                   |
//! |  11 | former witness log  | kept `u8` (0: none, 1: base `u64`, then an entry list) (format version 5) |
//!
//! An entry list is a `u32` count, then per entry client `u64`, session `u64`, request
//! `u32`, timestamp `u64`, operation `u8`, body length `u32` and the body (the wire's
//! layout, which `wire` keeps private). A checkpoint's pages are not here: they live in
//! their own file ([`checkpoint_file`](super::checkpoint_file)), and the marker names it
//! by op and checksum.

use crate::protocol::{
    Checkpoint, DurableState, Entry, FormerWitnessLog, Operation, StoredWrite, ENTRY_HEADER_BYTES,
};
use crate::service::snapshot::Snapshot;
use bytes::{BufMut, Bytes};

const CHECKPOINT: u8 = 1;
const LOG_RESET: u8 = 2;
const LOG_TRUNCATE: u8 = 3;
const LOG_APPEND: u8 = 4;
const STATE: u8 = 5;
const COMMIT: u8 = 6;
const CONFIGURATION: u8 = 7;
const LOG_START: u8 = 8;
const ACTIVES_COMMIT: u8 = 9;
const CHECKPOINT_DROPPED: u8 = 10;
const FORMER_WITNESS_LOG: u8 = 11;
const RECORD_HEADER_BYTES: usize = 1 + 4;

/// A checkpoint as the journal names it: which file, and what its payload must hash to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointMarker {
    /// The checkpoint's op.
    pub op: u64,
    /// Its timestamp.
    pub timestamp: u64,
    /// The crc32c of the checkpoint file's payload.
    pub checksum: u32,
}

impl CheckpointMarker {
    /// A stand-in for the checkpoint while the journal is replayed: `Stored::apply` looks
    /// only at a checkpoint's op, and the real pages are read once, for the last marker.
    pub fn placeholder(&self) -> Checkpoint {
        Checkpoint {
            op: self.op,
            timestamp: self.timestamp,
            service: Snapshot::empty(),
            clients: Snapshot::empty(),
        }
    }
}

/// Bytes of an entry's fields before its body in a `LogAppend` record.
pub const ENTRY_BYTES: u64 = 8 + 8 + 4 + 8 + 1 + 4;

/// Appends `write` as one record. A checkpoint is written as its marker, with the
/// checksum of its file's payload (the file must be written first).
pub fn encode(write: &StoredWrite, checkpoint_checksum: u32, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    let tag = match write {
        StoredWrite::Checkpoint(checkpoint) => {
            out.put_u64_le(checkpoint.op);
            out.put_u64_le(checkpoint.timestamp);
            out.put_u32_le(checkpoint_checksum);
            CHECKPOINT
        }
        StoredWrite::LogReset { base } => {
            out.put_u64_le(*base);
            LOG_RESET
        }
        StoredWrite::LogStart { base, timestamp } => {
            out.put_u64_le(*base);
            out.put_u64_le(*timestamp);
            LOG_START
        }
        StoredWrite::LogTruncate { after } => {
            out.put_u64_le(*after);
            LOG_TRUNCATE
        }
        StoredWrite::LogAppend { from, entries } => {
            put_log_append(*from, entries, out);
            LOG_APPEND
        }
        StoredWrite::State(state) => {
            out.put_u32_le(state.epoch);
            out.put_u32_le(state.view);
            out.put_u32_le(state.last_normal_view);
            out.put_u8(state.recovering as u8);
            out.put_u8(state.joined as u8);
            STATE
        }
        StoredWrite::Commit(op) => {
            out.put_u64_le(*op);
            COMMIT
        }
        StoredWrite::ActivesCommit(op) => {
            out.put_u64_le(*op);
            ACTIVES_COMMIT
        }
        StoredWrite::CheckpointDropped => CHECKPOINT_DROPPED,
        StoredWrite::FormerWitnessLog(kept) => {
            match kept {
                None => out.put_u8(0),
                Some(kept) => {
                    out.put_u8(1);
                    put_log_append(kept.base, &kept.entries, out);
                }
            }
            FORMER_WITNESS_LOG
        }
        StoredWrite::Configuration {
            configuration,
            epoch_start,
        } => {
            out.put_u64_le(*epoch_start);
            let mut encoded = bytes::BytesMut::with_capacity(configuration.encoded_len());
            configuration.encode(&mut encoded);
            out.put_slice(&encoded);
            CONFIGURATION
        }
    };
    let body_bytes = len_u32(out.len() - start - RECORD_HEADER_BYTES);
    out[start] = tag;
    out[start + 1..start + RECORD_HEADER_BYTES].copy_from_slice(&body_bytes.to_le_bytes());
}

/// Appends `StoredWrite::LogAppend { from, entries }` as one record, from borrowed
/// entries (a compaction encodes the image's entries without copying them into a write).
pub fn encode_log_append(from: u64, entries: &[Entry], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    put_log_append(from, entries, out);
    let body_bytes = len_u32(out.len() - start - RECORD_HEADER_BYTES);
    out[start] = LOG_APPEND;
    out[start + 1..start + RECORD_HEADER_BYTES].copy_from_slice(&body_bytes.to_le_bytes());
}

fn put_log_append(from: u64, entries: &[Entry], out: &mut Vec<u8>) {
    out.put_u64_le(from);
    out.put_u32_le(len_u32(entries.len()));
    for entry in entries {
        out.put_u64_le(entry.client);
        out.put_u64_le(entry.session);
        out.put_u32_le(entry.request);
        out.put_u64_le(entry.timestamp);
        out.put_u8(entry.operation as u8);
        out.put_u32_le(len_u32(entry.body.len()));
        out.put_slice(&entry.body);
    }
}

fn len_u32(len: usize) -> u32 {
    // A record is part of one batch, whose payload is bounded far below 4 GiB by the
    // core's message and log limits.
    u32::try_from(len).expect("a journal record below 4 GiB")
}

/// A record as read back: a write, or the marker of a checkpoint whose pages are in its
/// file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Any write but a checkpoint.
    Write(StoredWrite),
    /// A checkpoint, by marker.
    Checkpoint(CheckpointMarker),
}

/// Decodes every record of a batch's payload. Entry bodies are copied out, so the entries
/// a restarted replica keeps do not pin the buffer the journal was read into.
pub fn decode(payload: &[u8]) -> Result<Vec<Record>, &'static str> {
    let mut reader = Reader { bytes: payload };
    let mut records = Vec::new();
    while !reader.bytes.is_empty() {
        let tag = reader.u8()?;
        let body_bytes = reader.u32()? as usize;
        let body = reader.take(body_bytes)?;
        let mut body = Reader { bytes: body };
        records.push(body.record(tag)?);
        if !body.bytes.is_empty() {
            return Err("trailing bytes in a record");
        }
    }
    Ok(records)
}

/// A bounded cursor: every read checks the bytes present first.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, count: usize) -> Result<&'a [u8], &'static str> {
        if count > self.bytes.len() {
            return Err("a length runs past the end of its record");
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    pub(crate) fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn flag(&mut self) -> Result<bool, &'static str> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err("a flag is neither 0 nor 1"),
        }
    }

    fn record(&mut self, tag: u8) -> Result<Record, &'static str> {
        let write = match tag {
            CHECKPOINT => {
                return Ok(Record::Checkpoint(CheckpointMarker {
                    op: self.u64()?,
                    timestamp: self.u64()?,
                    checksum: self.u32()?,
                }))
            }
            LOG_RESET => StoredWrite::LogReset { base: self.u64()? },
            LOG_TRUNCATE => StoredWrite::LogTruncate { after: self.u64()? },
            LOG_START => StoredWrite::LogStart {
                base: self.u64()?,
                timestamp: self.u64()?,
            },
            LOG_APPEND => StoredWrite::LogAppend {
                from: self.u64()?,
                entries: self.entries()?,
            },
            STATE => StoredWrite::State(DurableState {
                epoch: self.u32()?,
                view: self.u32()?,
                last_normal_view: self.u32()?,
                recovering: self.flag()?,
                joined: self.flag()?,
            }),
            COMMIT => StoredWrite::Commit(self.u64()?),
            ACTIVES_COMMIT => StoredWrite::ActivesCommit(self.u64()?),
            CHECKPOINT_DROPPED => StoredWrite::CheckpointDropped,
            FORMER_WITNESS_LOG => StoredWrite::FormerWitnessLog(match self.flag()? {
                false => None,
                true => Some(FormerWitnessLog {
                    base: self.u64()?,
                    entries: self.entries()?,
                }),
            }),
            CONFIGURATION => {
                let epoch_start = self.u64()?;
                let rest = self.take(self.bytes.len())?;
                let configuration =
                    crate::protocol::Configuration::from_bytes(&Bytes::copy_from_slice(rest))
                        .ok_or("unreadable configuration")?;
                StoredWrite::Configuration {
                    configuration,
                    epoch_start,
                }
            }
            _ => return Err("unknown record tag"),
        };
        Ok(Record::Write(write))
    }

    fn entries(&mut self) -> Result<Vec<Entry>, &'static str> {
        let count = self.u32()? as usize;
        // Bounded by the bytes present before it sizes an allocation.
        if count > self.bytes.len() / ENTRY_HEADER_BYTES {
            return Err("entry count exceeds its record");
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let client = self.u64()?;
            let session = self.u64()?;
            let request = self.u32()?;
            let timestamp = self.u64()?;
            let operation = Operation::from_u8(self.u8()?)
                .filter(|operation| operation.is_ordered())
                .ok_or("unknown entry operation")?;
            let body_bytes = self.u32()? as usize;
            let body = Bytes::copy_from_slice(self.take(body_bytes)?);
            entries.push(Entry {
                client,
                session,
                request,
                timestamp,
                operation,
                body,
            });
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> Entry {
        Entry {
            client: n,
            session: n + 1,
            request: n as u32,
            timestamp: n * 10,
            operation: Operation::Apply,
            body: Bytes::from(vec![n as u8; n as usize]),
        }
    }

    #[test]
    fn every_record_reads_back() {
        let writes = vec![
            StoredWrite::LogReset { base: 4 },
            StoredWrite::LogTruncate { after: 9 },
            StoredWrite::LogStart {
                base: 7,
                timestamp: 70,
            },
            StoredWrite::LogAppend {
                from: 10,
                entries: (0..5).map(entry).collect(),
            },
            StoredWrite::State(DurableState {
                epoch: 1,
                view: 7,
                last_normal_view: 6,
                recovering: false,
                joined: true,
            }),
            StoredWrite::Commit(12),
            StoredWrite::ActivesCommit(11),
            StoredWrite::CheckpointDropped,
            StoredWrite::FormerWitnessLog(Some(FormerWitnessLog {
                base: 20,
                entries: (0..3).map(entry).collect(),
            })),
            StoredWrite::FormerWitnessLog(None),
        ];
        let mut out = Vec::new();
        for write in &writes {
            encode(write, 0, &mut out);
        }
        let marker = CheckpointMarker {
            op: 3,
            timestamp: 33,
            checksum: 0xabcd,
        };
        encode(
            &StoredWrite::Checkpoint(marker.placeholder()),
            0xabcd,
            &mut out,
        );
        let mut expected: Vec<Record> = writes.into_iter().map(Record::Write).collect();
        expected.push(Record::Checkpoint(marker));
        assert_eq!(decode(&out).unwrap(), expected);
        // Every cut short and every byte changed either fails or reads something: never
        // a panic.
        for cut in 0..out.len() {
            let _ = decode(&out[..cut]);
            let mut flipped = out.clone();
            flipped[cut] ^= 0xff;
            let _ = decode(&flipped);
        }
    }
}
