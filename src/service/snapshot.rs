//! Snapshots as pages (paper 5.1): the representation of a service's state in a
//! checkpoint.
//!
//! A [`Snapshot`] is an ordered list of [`Page`]s, each a `Bytes` with its SHA-256
//! [`Digest`]. Pages are the unit everything after a checkpoint works in: a Merkle tree over
//! the digests names a checkpoint ([`super::merkle`]), a replica that needs one fetches the
//! pages it lacks and verifies each against its digest before anything reads it
//! (`protocol::replica::fetch_checkpoint`), all without [`StateMachine`](super::StateMachine)
//! knowing.
//!
//! Invariants:
//! - **A page's digest is the digest of its bytes.** The fields are private: a page is made
//!   by [`Page::new`] (which hashes) or [`Page::verified`] (which checks a digest that came
//!   with the bytes, e.g. a fetched page), so nothing that holds a `Page` re-checks it.
//! - **Pages are shared, not copied.** Cloning a page or a snapshot bumps reference counts;
//!   a service that keeps the pages of its last snapshot hands out the unchanged ones again
//!   at no cost, and so re-hashes only what changed.
//! - **A page fits a message.** A page holds at most [`PAGE_BYTES_TARGET`] bytes, or one
//!   item of the service that cannot be split and came in one operation (so at most
//!   `Config::request_body_bytes_max` bytes); `Config::validate` keeps `message_bytes_max`
//!   above four times that.
//!
//! A page-diff installer matches pages by digest, not by position: it reuses every page
//! whose digest it already holds (wherever that page sits in its own snapshot) and fetches
//! the others, so a service may add or remove pages in the middle of its list.

use bytes::{Bytes, BytesMut};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::sync::Arc;

/// The size pages are cut to: small enough that a page fits the smallest message any valid
/// configuration allows, large enough that a digest (32 bytes) costs under 1 %.
pub const PAGE_BYTES_TARGET: usize = 4096;

/// Bytes of a [`Digest`].
pub const DIGEST_BYTES: usize = 32;

/// A page's SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; DIGEST_BYTES]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }
}

impl fmt::Debug for Digest {
    /// The first 8 bytes in hex: enough to tell pages apart in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// One page of a snapshot: its bytes and their digest.
#[derive(Clone, PartialEq, Eq)]
pub struct Page {
    bytes: Bytes,
    digest: Digest,
}

/// A page whose bytes do not hash to the digest that came with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("page digest mismatch")]
pub struct DigestMismatch;

impl Page {
    /// A page of `bytes`, hashed.
    pub fn new(bytes: Bytes) -> Page {
        let digest = Digest::of(&bytes);
        Page { bytes, digest }
    }

    /// A page of `bytes` that claims `digest` (from the wire, or a manifest): refused
    /// unless the bytes hash to it.
    pub fn verified(bytes: Bytes, digest: Digest) -> Result<Page, DigestMismatch> {
        if Digest::of(&bytes) != digest {
            return Err(DigestMismatch);
        }
        Ok(Page { bytes, digest })
    }

    /// The bytes of `pages` copied into one buffer of their total size, and the pages
    /// again as slices of it, in order, each with its digest carried over: the bytes are
    /// the same, copied here, so they are neither hashed again nor compared. A service
    /// that keeps received pages in storage of its own pays one copy and keeps no
    /// reference to the buffers they came in. Each digest stays the digest of its bytes.
    pub fn copied_together(pages: &[Page]) -> (Bytes, Vec<Page>) {
        let mut buffer = Vec::with_capacity(pages.iter().map(Page::len).sum());
        pages
            .iter()
            .for_each(|page| buffer.extend_from_slice(&page.bytes));
        // Of its exact size: no spare capacity to hand back or to keep.
        let buffer = Bytes::from(buffer);
        let mut at = 0;
        let copies = (pages.iter())
            .map(|page| {
                at += page.len();
                Page {
                    bytes: buffer.slice(at - page.len()..at),
                    digest: page.digest,
                }
            })
            .collect();
        (buffer, copies)
    }

    /// The page's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The digest of [`Page::bytes`].
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the page holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Page({} bytes, {:?})", self.bytes.len(), self.digest)
    }
}

/// A service's state as an ordered list of pages (see the module docs). Cloning shares
/// the list.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pages: Arc<[Page]>,
}

impl Snapshot {
    /// A snapshot of `pages`, in order.
    pub fn new(pages: Vec<Page>) -> Snapshot {
        Snapshot {
            pages: pages.into(),
        }
    }

    /// Whether `self` and `other` share one list of pages (one is a clone of the other),
    /// which makes them equal without comparing a page.
    pub fn shares_pages_with(&self, other: &Snapshot) -> bool {
        Arc::ptr_eq(&self.pages, &other.pages)
    }

    /// A snapshot without pages (a service with no state).
    pub fn empty() -> Snapshot {
        Snapshot::default()
    }

    /// `blob` cut into pages of [`PAGE_BYTES_TARGET`] bytes (the last one shorter), for
    /// state kept as one byte string. The pages are slices of `blob`: nothing is copied.
    /// An empty blob gives no pages.
    pub fn from_blob(blob: &Bytes) -> Snapshot {
        let pages = (0..blob.len())
            .step_by(PAGE_BYTES_TARGET)
            .map(|start| Page::new(blob.slice(start..blob.len().min(start + PAGE_BYTES_TARGET))))
            .collect();
        Snapshot::new(pages)
    }

    /// The pages joined into one byte string: the inverse of [`Snapshot::from_blob`]. A
    /// snapshot of one page costs nothing; more are copied once.
    pub fn to_blob(&self) -> Bytes {
        match &self.pages[..] {
            [] => Bytes::new(),
            [page] => page.bytes.clone(),
            pages => {
                let mut blob = BytesMut::with_capacity(self.bytes());
                pages
                    .iter()
                    .for_each(|page| blob.extend_from_slice(&page.bytes));
                blob.freeze()
            }
        }
    }

    /// The pages, in order.
    pub fn pages(&self) -> &[Page] {
        &self.pages
    }

    /// The bytes of all pages (without digests).
    pub fn bytes(&self) -> usize {
        self.pages.iter().map(Page::len).sum()
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.pages.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_verified_against_its_digest() {
        let page = Page::new(Bytes::from_static(b"page"));
        assert_eq!(page.digest(), Digest::of(b"page"));
        assert_eq!(
            Page::verified(page.bytes().clone(), page.digest()),
            Ok(page.clone())
        );
        assert_eq!(
            Page::verified(Bytes::from_static(b"pagE"), page.digest()),
            Err(DigestMismatch)
        );
    }

    #[test]
    fn pages_copied_together_are_the_same_pages_in_one_buffer() {
        let pages = [&b"one"[..], b"", b"three"].map(|b| Page::new(Bytes::copy_from_slice(b)));
        let (buffer, copies) = Page::copied_together(&pages);
        assert_eq!(&buffer[..], b"onethree");
        assert_eq!(copies, pages);
        for (copy, page) in copies.iter().zip(&pages) {
            assert_eq!(
                Page::verified(copy.bytes().clone(), copy.digest()),
                Ok(page.clone())
            );
            assert!(buffer.as_ptr_range().contains(&copy.bytes().as_ptr()) || copy.is_empty());
        }
        assert_eq!(Page::copied_together(&[]), (Bytes::new(), Vec::new()));
    }

    #[test]
    fn blobs_are_cut_into_pages_and_joined_again() {
        for len in [
            0,
            1,
            PAGE_BYTES_TARGET,
            PAGE_BYTES_TARGET + 1,
            3 * PAGE_BYTES_TARGET,
        ] {
            let blob = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
            let snapshot = Snapshot::from_blob(&blob);
            assert_eq!(snapshot.pages().len(), len.div_ceil(PAGE_BYTES_TARGET));
            assert!(snapshot
                .pages()
                .iter()
                .all(|p| p.len() <= PAGE_BYTES_TARGET));
            assert_eq!(snapshot.to_blob(), blob);
            assert_eq!(snapshot.bytes(), len);
        }
    }
}
