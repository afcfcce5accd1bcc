//! Membership as replicated state (paper 7): who the replicas of an epoch are, which of
//! them are witnesses, and everything derived from that: the primary of a view, f and the
//! quorum. `Config` holds the limits, which never change while a cluster runs; a
//! `Configuration` is what reconfiguration changes, one epoch at a time.
//!
//! Today every cluster stays in its first configuration (epoch 0, replicas 0..n, no
//! witnesses): the type is here so that the protocol asks it, and only it, who the members
//! are.

use super::message::{ReplicaIndex, View};
use super::replica_set::ReplicaSet;

/// A replica's identity across configurations: assigned once, never reused, so that a
/// machine that comes back with an empty memory under an old identity cannot be taken
/// for a member that remembers. Distinct from its index (its position in an epoch's
/// member list, which is what messages carry) and from its address.
pub type ReplicaId = u64;

/// The members of one epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configuration {
    /// The epoch this configuration is for.
    epoch: u32,
    /// The members, by index: `members[i]` is the identity of replica index `i`.
    members: Vec<ReplicaId>,
    /// Members (by index) that store the log and vote but never execute or lead
    /// (paper 6.1). Always empty today.
    witnesses: ReplicaSet,
}

impl Configuration {
    /// The first configuration of a cluster of `replica_count` replicas: epoch 0,
    /// identities `0..replica_count`, no witnesses.
    pub fn initial(replica_count: u8) -> Configuration {
        assert!(
            replica_count % 2 == 1,
            "a configuration has 2f+1 members, got {replica_count}"
        );
        Configuration {
            epoch: 0,
            members: (0..replica_count as ReplicaId).collect(),
            witnesses: ReplicaSet::default(),
        }
    }

    /// The epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// How many members: 2f+1.
    pub fn replica_count(&self) -> u8 {
        self.members.len() as u8
    }

    /// Whether `index` names a member of this epoch.
    pub fn contains(&self, index: ReplicaIndex) -> bool {
        (index as usize) < self.members.len()
    }

    /// The identity of member `index`.
    pub fn id_of(&self, index: ReplicaIndex) -> ReplicaId {
        self.members[index as usize]
    }

    /// Whether member `index` is a witness.
    pub fn is_witness(&self, index: ReplicaIndex) -> bool {
        self.witnesses.contains(index)
    }

    /// f: how many members may fail.
    pub fn faults_max(&self) -> usize {
        (self.members.len() - 1) / 2
    }

    /// f+1: a quorum, counting the replica itself.
    pub fn quorum(&self) -> usize {
        self.faults_max() + 1
    }

    /// The primary of `view`: round robin over the members (paper 4).
    pub fn primary_of(&self, view: View) -> ReplicaIndex {
        (view as u64 % self.members.len() as u64) as ReplicaIndex
    }

    /// Every member's index.
    pub fn indexes(&self) -> impl Iterator<Item = ReplicaIndex> + Clone {
        0..self.replica_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_configuration_is_what_config_describes() {
        for (n, f) in [(1u8, 0usize), (3, 1), (5, 2), (7, 3)] {
            let configuration = Configuration::initial(n);
            assert_eq!(configuration.epoch(), 0);
            assert_eq!(configuration.replica_count(), n);
            assert_eq!(configuration.faults_max(), f);
            assert_eq!(configuration.quorum(), f + 1);
            assert!(configuration.contains(n - 1) && !configuration.contains(n));
            assert_eq!(configuration.id_of(n - 1), n as ReplicaId - 1);
            assert!(!configuration.is_witness(0));
            assert_eq!(configuration.indexes().count(), n as usize);
        }
        let three = Configuration::initial(3);
        let primaries: Vec<_> = (0..7).map(|view| three.primary_of(view)).collect();
        assert_eq!(primaries, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(three.primary_of(View::MAX), (View::MAX % 3) as ReplicaIndex);
    }
}
