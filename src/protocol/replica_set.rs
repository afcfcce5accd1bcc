//! A set of replicas by index: who asked for a view change, who called for one. Holds
//! every index a `ReplicaIndex` can name (a `Config` allows up to 255 replicas), so no
//! shift can overflow whatever the configuration.

use super::message::ReplicaIndex;

/// A set of replica indexes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaSet([u64; 4]);

impl ReplicaSet {
    /// The set holding only `replica`.
    pub fn of(replica: ReplicaIndex) -> ReplicaSet {
        let mut set = ReplicaSet::default();
        set.insert(replica);
        set
    }

    /// Adds `replica`.
    pub fn insert(&mut self, replica: ReplicaIndex) {
        self.0[replica as usize / 64] |= 1 << (replica % 64);
    }

    /// Removes `replica`.
    pub fn remove(&mut self, replica: ReplicaIndex) {
        self.0[replica as usize / 64] &= !(1 << (replica % 64));
    }

    /// Whether `replica` is in the set.
    pub fn contains(&self, replica: ReplicaIndex) -> bool {
        self.0[replica as usize / 64] & 1 << (replica % 64) != 0
    }

    /// How many replicas the set holds.
    pub fn len(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// How many replicas other than `replica` the set holds.
    pub fn count_others(&self, replica: ReplicaIndex) -> usize {
        self.len() - self.contains(replica) as usize
    }

    /// The set of the indexes below 64 whose bits `bits` has (bit i: index i): how
    /// configurations, which have at most 64 members, encode their witnesses.
    pub fn from_low_bits(bits: u64) -> ReplicaSet {
        ReplicaSet([bits, 0, 0, 0])
    }

    /// The indexes below 64 in the set, a bit each (see `from_low_bits`).
    pub fn low_bits(&self) -> u64 {
        self.0[0]
    }

    /// The indexes in the set, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = ReplicaIndex> + '_ {
        (0..=ReplicaIndex::MAX).filter(|&index| self.contains(index))
    }

    /// The union of both sets.
    pub fn union(&self, other: &ReplicaSet) -> ReplicaSet {
        let mut words = self.0;
        for (word, other) in words.iter_mut().zip(other.0) {
            *word |= other;
        }
        ReplicaSet(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_every_index_a_replica_can_have() {
        let mut set = ReplicaSet::default();
        assert!(set.is_empty());
        for replica in [0, 1, 63, 64, 127, 200, 255] {
            assert!(!set.contains(replica));
            set.insert(replica);
            assert!(set.contains(replica));
        }
        set.insert(255);
        assert_eq!(set.len(), 7);
        assert_eq!(set.count_others(64), 6);
        assert_eq!(set.count_others(2), 7);
        let both = set.union(&ReplicaSet::of(2));
        assert_eq!(both.len(), 8);
        assert!(both.contains(2) && both.contains(255));
    }
}
