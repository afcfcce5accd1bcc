//! Why the decoder refused a frame: one variant per reason, so the runtime can log and count
//! rejections by cause before it closes the connection.

/// A frame the decoder refused. Every error is fatal for the connection it came from: the
/// byte stream cannot be resynchronised once a frame boundary is in doubt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The header's checksum does not match: nothing in it (not even the size) is trusted.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// The body's checksum does not match the header's `checksum_body`.
    #[error("body checksum mismatch")]
    BodyChecksum,
    /// The frame belongs to another cluster.
    #[error("frame for cluster {got:#x}, expected cluster {expected:#x}")]
    WrongCluster {
        /// This node's cluster id.
        expected: u128,
        /// The frame's cluster id.
        got: u128,
    },
    /// The frame is of another wire version (`Header::version`): nothing past the header's
    /// checksum is read, since its layout may differ. On a connection's first frame the
    /// runtime answers with a refusal naming both versions, in the frame's cluster id.
    #[error("wire version {version} there, {} here", super::VERSION)]
    OtherVersion {
        /// The frame's version.
        version: u8,
        /// The frame's cluster id (what a refusal is sent in).
        cluster: u128,
    },
    /// The header names a command this version does not know.
    #[error("unknown command code {0}")]
    UnknownCommand(u8),
    /// The frame is larger than this node accepts (checked before waiting for the body).
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The size the header claims.
        size: u32,
        /// The largest frame accepted (`message_bytes_max`).
        max: u32,
    },
    /// The header claims a size smaller than the header itself.
    #[error("frame size is smaller than the header")]
    TooSmall,
    /// A number no correct peer sends (a view or op at the edge of its type, a commit above
    /// the op it commits up to, ...): the sender is buggy or hostile.
    #[error("field out of range: {0}")]
    OutOfRange(&'static str),
    /// Both checksums passed but the contents are not a valid frame of its command (a bug or
    /// a different version on the other side, not line noise).
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}
