//! A Merkle tree over a snapshot's page digests (paper 5.1): one root digest names a
//! whole checkpoint, any aligned run of page digests can be checked against the root on
//! its own, and a checkpoint that changed a few pages rehashes only their paths to the
//! root. A NewState names a checkpoint by its root; the receiver fetches the manifest in
//! runs, each checked with [`verify_run`], then the pages it lacks
//! (`protocol::replica::fetch_checkpoint`).
//!
//! Shape: a complete binary tree over the leaves padded with [`EMPTY`] to a power of two
//! (`width`). Level 0 holds the leaves; a node is SHA-256 of a tag byte and its two
//! children; leaves are tagged apart from inner nodes (RFC 6962's rule), so a run of
//! leaves can never pass for an inner node or the reverse. The root also covers the
//! number of leaves, so a list padded with `EMPTY` digests by a liar does not verify
//! either.
//!
//! Invariants:
//! - `levels[0]` is the leaf digests followed by `EMPTY` up to `width`; `levels[k]` has
//!   `width >> k` nodes, each the hash of its two children in `levels[k - 1]`; the last
//!   level has one node.
//! - [`MerkleTree::update`] leaves the tree exactly as [`MerkleTree::new`] would build it
//!   from the same leaves (a property test checks it).

use super::snapshot::{Digest, DIGEST_BYTES};
use sha2::{Digest as _, Sha256};

/// The digest standing for a missing leaf (padding up to a power of two).
pub const EMPTY: Digest = Digest([0; DIGEST_BYTES]);

const LEAF_TAG: u8 = 0;
const NODE_TAG: u8 = 1;
const ROOT_TAG: u8 = 2;

/// A Merkle tree over page digests (module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleTree {
    /// The page digests, as given (compared on update: equal ones are not hashed again).
    pages: Vec<Digest>,
    /// `levels[0]` the hashed leaves, up to the single top node.
    levels: Vec<Vec<Digest>>,
}

impl MerkleTree {
    /// The tree over `leaves` (page digests, in snapshot order).
    ///
    /// Nodes above padding alone are all equal on a level: each level's is hashed once
    /// (up to half of a tree's nodes are, just past a power of two).
    pub fn new(leaves: &[Digest]) -> MerkleTree {
        let width = leaves.len().max(1).next_power_of_two();
        let mut padding = leaf(&EMPTY);
        let mut level: Vec<Digest> = leaves.iter().map(leaf).collect();
        level.resize(width, padding);
        let mut levels = vec![level];
        // Nodes from `filled` on cover padding alone.
        let mut filled = leaves.len();
        while levels.last().expect("one level at least").len() > 1 {
            let below = levels.last().expect("one level at least");
            filled = filled.div_ceil(2);
            padding = node(&padding, &padding);
            let mut above: Vec<Digest> = (below.chunks_exact(2).take(filled))
                .map(|pair| node(&pair[0], &pair[1]))
                .collect();
            above.resize(below.len() / 2, padding);
            levels.push(above);
        }
        MerkleTree {
            pages: leaves.to_vec(),
            levels,
        }
    }

    /// Brings the tree to `leaves`, rehashing only the paths above leaves that changed
    /// when the padded width stays the same (a checkpoint that changed a few pages);
    /// otherwise builds it again. Returns how many nodes were hashed.
    pub fn update(&mut self, leaves: &[Digest]) -> usize {
        if leaves.len().max(1).next_power_of_two() != self.width() {
            *self = MerkleTree::new(leaves);
            return self.levels.iter().map(Vec::len).sum();
        }
        let mut dirty: Vec<usize> = Vec::new();
        for index in 0..self.width() {
            let old = self.pages.get(index);
            let new = leaves.get(index);
            if old != new {
                self.levels[0][index] = leaf(new.unwrap_or(&EMPTY));
                dirty.push(index);
            }
        }
        self.pages.clear();
        self.pages.extend_from_slice(leaves);
        let mut hashed = dirty.len();
        for level in 1..self.levels.len() {
            dirty.iter_mut().for_each(|index| *index /= 2);
            dirty.dedup();
            for &index in &dirty {
                let below = &self.levels[level - 1];
                self.levels[level][index] = node(&below[2 * index], &below[2 * index + 1]);
            }
            hashed += dirty.len();
        }
        hashed
    }

    /// The root: the top node and the number of leaves, hashed together.
    pub fn root(&self) -> Digest {
        root_of(self.top(), self.pages.len())
    }

    /// How many leaves the tree holds (not counting padding).
    pub fn leaves(&self) -> usize {
        self.pages.len()
    }

    /// The page digests it was built over, in order.
    pub fn pages(&self) -> &[Digest] {
        &self.pages
    }

    /// The number of leaves padded to a power of two.
    pub fn width(&self) -> usize {
        self.levels[0].len()
    }

    /// The node at `level` (0: a hashed leaf) and `index`, if the tree has it: what a
    /// receiver compares top-down to find the subtrees that differ.
    pub fn node(&self, level: usize, index: usize) -> Option<Digest> {
        self.levels.get(level)?.get(index).copied()
    }

    /// The sibling digests that connect the aligned run of `2^level` leaves starting at
    /// `start` (a multiple of `2^level`) to the top, bottom up: what
    /// [`verify_run`] needs beside the run itself.
    pub fn proof(&self, level: usize, start: usize) -> Vec<Digest> {
        assert!(level < self.levels.len(), "no level {level}");
        assert!(
            start.is_multiple_of(1 << level) && start < self.width(),
            "the run must be aligned and inside the tree"
        );
        let mut index = start >> level;
        let mut proof = Vec::with_capacity(self.levels.len() - 1 - level);
        for nodes in &self.levels[level..self.levels.len() - 1] {
            proof.push(nodes[index ^ 1]);
            index /= 2;
        }
        proof
    }

    fn top(&self) -> &Digest {
        &self.levels.last().expect("one level at least")[0]
    }
}

/// Whether `run`, the page digests at `start..start + run.len()` of a tree of `leaves`
/// leaves, belongs to the tree with root `root`, given the run's `proof`
/// ([`MerkleTree::proof`]). The run must be aligned: its length `2^level` with `start` a
/// multiple of it, and the part past `leaves` is implied (padding), not sent: `run` may
/// be shorter than `2^level` only at the end of the leaves.
pub fn verify_run(
    root: &Digest,
    leaves: usize,
    level: usize,
    start: usize,
    run: &[Digest],
    proof: &[Digest],
) -> bool {
    let Some(span) = 1usize.checked_shl(level as u32) else {
        return false;
    };
    let width = leaves.max(1).next_power_of_two();
    let end = start.saturating_add(span);
    let expected = end.min(leaves).saturating_sub(start);
    if !start.is_multiple_of(span) || span > width || end > width || run.len() != expected {
        return false;
    }
    if proof.len() != width.trailing_zeros() as usize - level {
        return false;
    }
    let mut nodes: Vec<Digest> = run.iter().map(leaf).collect();
    nodes.resize(span, leaf(&EMPTY));
    while nodes.len() > 1 {
        nodes = nodes
            .chunks_exact(2)
            .map(|pair| node(&pair[0], &pair[1]))
            .collect();
    }
    let mut digest = nodes[0];
    let mut index = start >> level;
    for sibling in proof {
        digest = if index.is_multiple_of(2) {
            node(&digest, sibling)
        } else {
            node(sibling, &digest)
        };
        index /= 2;
    }
    root_of(&digest, leaves) == *root
}

fn leaf(digest: &Digest) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update([LEAF_TAG]);
    hasher.update(digest.0);
    Digest(hasher.finalize().into())
}

fn node(left: &Digest, right: &Digest) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update([NODE_TAG]);
    hasher.update(left.0);
    hasher.update(right.0);
    Digest(hasher.finalize().into())
}

fn root_of(top: &Digest, leaves: usize) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update([ROOT_TAG]);
    hasher.update((leaves as u64).to_le_bytes());
    hasher.update(top.0);
    Digest(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digests(count: usize, seed: u8) -> Vec<Digest> {
        (0..count)
            .map(|i| Digest::of(&[seed, i as u8, (i >> 8) as u8]))
            .collect()
    }

    #[test]
    fn the_root_names_the_leaves_and_their_number() {
        let three = digests(3, 1);
        let tree = MerkleTree::new(&three);
        assert_eq!(tree.width(), 4);
        assert_eq!(tree.leaves(), 3);
        assert_eq!(tree.root(), MerkleTree::new(&three).root());
        // Padding stated as a leaf is another tree.
        let padded = [three.clone(), vec![EMPTY]].concat();
        assert_ne!(MerkleTree::new(&padded).root(), tree.root());
        let mut changed = three.clone();
        changed[1] = Digest::of(b"other");
        assert_ne!(MerkleTree::new(&changed).root(), tree.root());
        assert_ne!(
            MerkleTree::new(&[]).root(),
            MerkleTree::new(&[EMPTY]).root()
        );
    }

    #[test]
    fn padding_hashed_once_a_level_is_the_padding_hashed_everywhere() {
        for count in [0, 1, 2, 3, 5, 8, 9, 100] {
            let leaves = digests(count, 5);
            let mut level: Vec<Digest> = leaves.iter().map(leaf).collect();
            level.resize(count.max(1).next_power_of_two(), leaf(&EMPTY));
            let mut levels = vec![level];
            while levels.last().unwrap().len() > 1 {
                let pairs = levels.last().unwrap().chunks_exact(2);
                levels.push(pairs.map(|pair| node(&pair[0], &pair[1])).collect());
            }
            assert_eq!(MerkleTree::new(&leaves).levels, levels, "{count} leaves");
        }
    }

    #[test]
    fn an_update_rehashes_only_the_changed_paths() {
        let mut leaves = digests(1000, 2);
        let mut tree = MerkleTree::new(&leaves);
        leaves[17] = Digest::of(b"changed");
        leaves[900] = Digest::of(b"changed too");
        let hashed = tree.update(&leaves);
        // Two leaves, and their paths up 10 levels (they meet only at the top).
        assert!(hashed <= 2 * 11, "{hashed} nodes hashed");
        assert_eq!(tree, MerkleTree::new(&leaves));
        assert_eq!(tree.update(&leaves), 0, "nothing changed, nothing hashed");
    }

    #[test]
    fn a_tampered_run_or_proof_does_not_verify() {
        let leaves = digests(13, 3);
        let tree = MerkleTree::new(&leaves);
        let root = tree.root();
        let proof = tree.proof(2, 4);
        assert!(verify_run(&root, 13, 2, 4, &leaves[4..8], &proof));
        let mut run = leaves[4..8].to_vec();
        run[2] = Digest::of(b"forged");
        assert!(!verify_run(&root, 13, 2, 4, &run, &proof));
        let mut bad = proof.clone();
        bad[0] = Digest::of(b"forged");
        assert!(!verify_run(&root, 13, 2, 4, &leaves[4..8], &bad));
        assert!(
            !verify_run(&root, 13, 2, 8, &leaves[4..8], &proof),
            "another place"
        );
        assert!(
            !verify_run(&root, 14, 2, 4, &leaves[4..8], &proof),
            "another count"
        );
        assert!(
            !verify_run(&root, 13, 2, 5, &leaves[5..9], &proof),
            "unaligned"
        );
        assert!(!verify_run(&root, 13, 70, 0, &leaves, &[]), "absurd level");
        // The last run is short: the padding is implied.
        let proof = tree.proof(2, 12);
        assert!(verify_run(&root, 13, 2, 12, &leaves[12..], &proof));
        assert!(!verify_run(&root, 13, 2, 12, &[leaves[12], EMPTY], &proof));
    }

    proptest! {
        #[test]
        fn updates_equal_rebuilds_and_every_run_verifies(
            count in 0usize..300,
            next in 0usize..300,
            changes in prop::collection::vec((0usize..300, any::<u8>()), 0..20),
            level in 0usize..5,
        ) {
            let mut tree = MerkleTree::new(&digests(count, 4));
            let mut leaves = digests(next, 4);
            for (index, byte) in changes {
                if index < leaves.len() {
                    leaves[index] = Digest::of(&[byte, 9]);
                }
            }
            tree.update(&leaves);
            prop_assert_eq!(&tree, &MerkleTree::new(&leaves));
            let level = level.min(tree.width().trailing_zeros() as usize);
            let root = tree.root();
            for start in (0..leaves.len()).step_by(1 << level) {
                let end = (start + (1 << level)).min(leaves.len());
                let proof = tree.proof(level, start);
                prop_assert!(verify_run(&root, leaves.len(), level, start, &leaves[start..end], &proof));
            }
        }
    }
}
