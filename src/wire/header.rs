//! The fixed-size frame header: its layout, pinned at compile time, and its checksum.
//!
//! The wire layout of [`Header`] is exactly its `#[repr(C)]` layout read as little-endian
//! integers: every offset below is `offset_of!` the field, and the `const` assertions at the
//! bottom of this file fail the build if a field moves, grows, or padding appears. Reading
//! and writing go field by field through `from_le_bytes`/`to_le_bytes`, so there is no
//! `unsafe` and the format does not depend on the host's endianness.

use core::mem::{offset_of, size_of};

/// The size of every frame header in bytes. A frame is a header followed by
/// `size - HEADER_BYTES` bytes of body.
pub const HEADER_BYTES: usize = 96;

/// The wire version this binary speaks: byte 39 of every frame it sends. Two nodes speak
/// only when their versions are equal; a node that hears another version in a connection's
/// first frame refuses it with [`super::RefusalCode::VersionDiffers`], naming both.
///
/// Raise it whenever a frame's layout or meaning changes in a way an older binary would
/// misread. Version 0 is every binary from before the byte was a version (it was zero);
/// 2: a `DoViewChange` carries the actives' commit its sender knows (in `nonce`, which
/// a version 1 binary requires to be zero).
pub const VERSION: u8 = 2;

/// What a frame carries: one code per protocol message, plus the connection-level frames.
///
/// Code 0 is never valid, so a zeroed header is rejected even if its checksum matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Command {
    /// [`crate::protocol::Body::Request`].
    Request = 1,
    /// [`crate::protocol::Body::Reply`].
    Reply = 2,
    /// [`crate::protocol::Body::Prepare`].
    Prepare = 3,
    /// [`crate::protocol::Body::PrepareOk`].
    PrepareOk = 4,
    /// [`crate::protocol::Body::Commit`].
    Commit = 5,
    /// [`crate::protocol::Body::StartViewChange`].
    StartViewChange = 6,
    /// [`crate::protocol::Body::DoViewChange`].
    DoViewChange = 7,
    /// [`crate::protocol::Body::StartView`].
    StartView = 8,
    /// [`crate::protocol::Body::Recovery`].
    Recovery = 9,
    /// [`crate::protocol::Body::RecoveryResponse`].
    RecoveryResponse = 10,
    /// [`crate::protocol::Body::GetState`].
    GetState = 11,
    /// [`crate::protocol::Body::NewState`].
    NewState = 12,
    /// [`super::Frame::Batch`] of client requests (`wire::batch`).
    Requests = 13,
    /// [`super::Frame::Batch`] of replies to clients (`wire::batch`).
    Replies = 14,
    /// [`crate::protocol::Body::StartEpoch`].
    StartEpoch = 15,
    /// [`crate::protocol::Body::EpochStarted`].
    EpochStarted = 16,
    /// [`crate::protocol::Body::GetCheckpoint`].
    GetCheckpoint = 17,
    /// [`crate::protocol::Body::CheckpointPart`].
    CheckpointPart = 18,
    /// [`super::Frame::Hello`]: the first frame on a connection names the speaker.
    Hello = 32,
    /// [`super::Frame::StatsRequest`].
    StatsRequest = 33,
    /// [`super::Frame::StatsReply`].
    StatsReply = 34,
    /// [`super::Frame::Welcome`]: the acceptor's answer to a hello.
    Welcome = 35,
    /// [`super::Frame::Proof`]: the connector's proof of the cluster key.
    Proof = 36,
    /// [`super::Frame::Refusal`]: why a handshake failed.
    Refusal = 37,
}

impl Command {
    /// The command for a wire code, if any.
    pub fn from_u8(code: u8) -> Option<Command> {
        use Command::*;
        Some(match code {
            1 => Request,
            2 => Reply,
            3 => Prepare,
            4 => PrepareOk,
            5 => Commit,
            6 => StartViewChange,
            7 => DoViewChange,
            8 => StartView,
            9 => Recovery,
            10 => RecoveryResponse,
            11 => GetState,
            12 => NewState,
            13 => Requests,
            14 => Replies,
            15 => StartEpoch,
            16 => EpochStarted,
            17 => GetCheckpoint,
            18 => CheckpointPart,
            32 => Hello,
            33 => StatsRequest,
            34 => StatsReply,
            35 => Welcome,
            36 => Proof,
            37 => Refusal,
            _ => return None,
        })
    }

    /// Whether this command opens a connection. A hello is read before its cluster id is
    /// compared (the handshake compares it and names both ids), so that a node of another
    /// cluster hears why it is refused; the refusal is sent in that node's cluster id.
    pub fn is_greeting(self) -> bool {
        matches!(self, Command::Hello)
    }

    /// Whether frames of this command may have a body. A command without one has
    /// `size == HEADER_BYTES`, which the decoder checks before waiting for more bytes.
    pub fn has_body(self) -> bool {
        use Command::*;
        match self {
            Request | Reply | Prepare | DoViewChange | StartView | NewState | GetCheckpoint
            | CheckpointPart | Requests | Replies | StartEpoch | StatsReply | Hello | Welcome
            | Proof | Refusal => true,
            PrepareOk | Commit | StartViewChange | Recovery | RecoveryResponse | GetState
            | EpochStarted | StatsRequest => false,
        }
    }
}

/// A frame header, as integers. Fields a command does not use are zero on the wire (the
/// decoder rejects a frame otherwise); the table in the [`crate::wire`] docs says which
/// command uses which field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Header {
    /// crc32c of header bytes `4..HEADER_BYTES` (everything after this field, including
    /// `checksum_body`). Checked before any other field is trusted.
    pub checksum: u32,
    /// crc32c of the body (`size - HEADER_BYTES` bytes after the header).
    pub checksum_body: u32,
    /// Bytes in the frame, header included: `HEADER_BYTES ..= message_bytes_max`.
    pub size: u32,
    /// The sender's configuration epoch (paper 7).
    pub epoch: u32,
    /// The cluster this frame belongs to; a frame for another cluster is rejected.
    pub cluster: u128,
    /// The sender's view (paper 4).
    pub view: u32,
    /// The sending replica (0 from clients).
    pub replica: u8,
    /// A [`Command`] code.
    pub command: u8,
    /// A small per-command code: an `Operation`, a `ReplyStatus`, a flag, a peer kind.
    pub code: u8,
    /// The wire version the sender speaks ([`VERSION`]). A frame of another version is
    /// refused, except a `Refusal`, whose layout every version keeps (`wire` docs).
    pub version: u8,
    /// An op number (`PrepareOk`, `Reply`, `DoViewChange`, `StartView`, `GetState`, ...).
    pub op: u64,
    /// A commit number.
    pub commit: u64,
    /// The op number of the first entry in the body.
    pub op_first: u64,
    /// A client id (`Request`, `Reply`, a client's `Hello`).
    pub client: u64,
    /// A client session.
    pub session: u64,
    /// A recovery nonce (paper 4.3); in a `Prepare`, `Commit` or `PrepareOk`, the lease
    /// stamp (paper 6.3.1, `Prepare::stamp`).
    pub nonce: u64,
    /// A client request number.
    pub request: u32,
    /// `DoViewChange`: the latest view in which the sender's status was normal.
    pub last_normal_view: u32,
}

impl Default for Header {
    /// Every field zero, except `version`: this binary's [`VERSION`].
    fn default() -> Header {
        Header {
            checksum: 0,
            checksum_body: 0,
            size: 0,
            epoch: 0,
            cluster: 0,
            view: 0,
            replica: 0,
            command: 0,
            code: 0,
            version: VERSION,
            op: 0,
            commit: 0,
            op_first: 0,
            client: 0,
            session: 0,
            nonce: 0,
            request: 0,
            last_normal_view: 0,
        }
    }
}

/// A field's byte range on the wire.
macro_rules! range {
    ($field:ident, $ty:ty) => {
        offset_of!(Header, $field)..offset_of!(Header, $field) + size_of::<$ty>()
    };
}

/// Read one little-endian field out of the header bytes.
macro_rules! get {
    ($bytes:expr, $field:ident, $ty:ty) => {
        <$ty>::from_le_bytes($bytes[range!($field, $ty)].try_into().expect("field width"))
    };
}

/// Write one little-endian field into the header bytes.
macro_rules! put {
    ($bytes:expr, $self:ident, $field:ident, $ty:ty) => {
        $bytes[range!($field, $ty)].copy_from_slice(&$self.$field.to_le_bytes())
    };
}

impl Header {
    /// Reads a header from its wire bytes. No field is trusted until
    /// [`Header::checksum_valid`] has been checked on the same bytes.
    pub fn read(bytes: &[u8; HEADER_BYTES]) -> Header {
        Header {
            checksum: get!(bytes, checksum, u32),
            checksum_body: get!(bytes, checksum_body, u32),
            size: get!(bytes, size, u32),
            epoch: get!(bytes, epoch, u32),
            cluster: get!(bytes, cluster, u128),
            view: get!(bytes, view, u32),
            replica: bytes[offset_of!(Header, replica)],
            command: bytes[offset_of!(Header, command)],
            code: bytes[offset_of!(Header, code)],
            version: bytes[offset_of!(Header, version)],
            op: get!(bytes, op, u64),
            commit: get!(bytes, commit, u64),
            op_first: get!(bytes, op_first, u64),
            client: get!(bytes, client, u64),
            session: get!(bytes, session, u64),
            nonce: get!(bytes, nonce, u64),
            request: get!(bytes, request, u32),
            last_normal_view: get!(bytes, last_normal_view, u32),
        }
    }

    /// Writes every field, `checksum` included as it stands, into `bytes`.
    pub fn write(&self, bytes: &mut [u8; HEADER_BYTES]) {
        put!(bytes, self, checksum, u32);
        put!(bytes, self, checksum_body, u32);
        put!(bytes, self, size, u32);
        put!(bytes, self, epoch, u32);
        put!(bytes, self, cluster, u128);
        put!(bytes, self, view, u32);
        bytes[offset_of!(Header, replica)] = self.replica;
        bytes[offset_of!(Header, command)] = self.command;
        bytes[offset_of!(Header, code)] = self.code;
        bytes[offset_of!(Header, version)] = self.version;
        put!(bytes, self, op, u64);
        put!(bytes, self, commit, u64);
        put!(bytes, self, op_first, u64);
        put!(bytes, self, client, u64);
        put!(bytes, self, session, u64);
        put!(bytes, self, nonce, u64);
        put!(bytes, self, request, u32);
        put!(bytes, self, last_normal_view, u32);
    }

    /// Writes the header into `bytes` with `checksum` computed over what was written:
    /// the header is then ready to send (given a correct `checksum_body` and `size`).
    pub fn write_sealed(&mut self, bytes: &mut [u8; HEADER_BYTES]) {
        self.write(bytes);
        self.checksum = checksum(bytes);
        bytes[range!(checksum, u32)].copy_from_slice(&self.checksum.to_le_bytes());
    }

    /// Whether the checksum stored in `bytes` matches the rest of the header.
    pub fn checksum_valid(bytes: &[u8; HEADER_BYTES]) -> bool {
        get!(bytes, checksum, u32) == checksum(bytes)
    }
}

/// The header checksum: crc32c over everything after the `checksum` field.
fn checksum(bytes: &[u8; HEADER_BYTES]) -> u32 {
    crc32c::crc32c(&bytes[size_of::<u32>()..])
}

// The layout is the documented table in `wire/mod.rs`; these fail the build if it drifts.
const _: () = assert!(size_of::<Header>() == HEADER_BYTES);
const _: () = assert!(offset_of!(Header, checksum) == 0);
const _: () = assert!(offset_of!(Header, checksum_body) == 4);
const _: () = assert!(offset_of!(Header, size) == 8);
const _: () = assert!(offset_of!(Header, epoch) == 12);
const _: () = assert!(offset_of!(Header, cluster) == 16);
const _: () = assert!(offset_of!(Header, view) == 32);
const _: () = assert!(offset_of!(Header, replica) == 36);
const _: () = assert!(offset_of!(Header, command) == 37);
const _: () = assert!(offset_of!(Header, code) == 38);
const _: () = assert!(offset_of!(Header, version) == 39);
const _: () = assert!(offset_of!(Header, op) == 40);
const _: () = assert!(offset_of!(Header, commit) == 48);
const _: () = assert!(offset_of!(Header, op_first) == 56);
const _: () = assert!(offset_of!(Header, client) == 64);
const _: () = assert!(offset_of!(Header, session) == 72);
const _: () = assert!(offset_of!(Header, nonce) == 80);
const _: () = assert!(offset_of!(Header, request) == 88);
const _: () = assert!(offset_of!(Header, last_normal_view) == 92);
// The last field ends exactly at the end of the header: no trailing padding to leak.
const _: () = assert!(offset_of!(Header, last_normal_view) + size_of::<u32>() == HEADER_BYTES);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_inverts_write() {
        let mut header = Header {
            checksum_body: 0x0102_0304,
            size: 1234,
            epoch: 7,
            cluster: u128::MAX - 5,
            view: 9,
            replica: 2,
            command: Command::Prepare as u8,
            code: 3,
            op: 11,
            commit: 10,
            op_first: 8,
            client: 0xdead_beef,
            session: 44,
            nonce: 55,
            request: 66,
            last_normal_view: 77,
            ..Header::default()
        };
        let mut bytes = [0u8; HEADER_BYTES];
        header.write_sealed(&mut bytes);
        assert!(Header::checksum_valid(&bytes));
        assert_eq!(Header::read(&bytes), header);
        bytes[HEADER_BYTES - 1] ^= 1;
        assert!(!Header::checksum_valid(&bytes));
    }

    #[test]
    fn command_codes_round_trip() {
        for code in 0..=u8::MAX {
            if let Some(command) = Command::from_u8(code) {
                assert_eq!(command as u8, code);
            }
        }
        assert_eq!(Command::from_u8(0), None);
    }
}
