//! Membership as replicated state (paper 7): who the replicas of an epoch are, which of
//! them are witnesses, and everything derived from that: the primary of a view, f and the
//! quorum. `Config` holds the limits, which never change while a cluster runs; a
//! `Configuration` is what reconfiguration changes, one epoch at a time.
//!
//! A cluster starts in its initial configuration (epoch 0, identities `0..n`, no
//! witnesses); a committed RECONFIGURATION op (`Operation::Reconfigure`, paper 7) carries
//! the next one, encoded with [`Configuration::encode`]. Identities are never reused:
//! every configuration records the next unused one, and a successor may add only
//! identities from there on ([`Configuration::check_successor`]).

use super::effects::Audience;
use super::message::{ReplicaIndex, View};
use super::replica_set::ReplicaSet;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A replica's identity across configurations: assigned once, never reused, so that a
/// machine that comes back with an empty memory under an old identity cannot be taken
/// for a member that remembers. Distinct from its index (its position in an epoch's
/// member list, which is what messages carry) and from its address.
pub type ReplicaId = u64;

/// The fewest members a reconfiguration may ask for (paper 7.1: at least three, so that
/// the new group survives a failure).
pub const RECONFIGURATION_MEMBERS_MIN: usize = 3;
/// The most members a configuration may have (indexes are a `u8`; far more than any
/// cluster should run).
pub const MEMBERS_MAX: usize = 64;
/// The longest address a member may carry, in bytes.
pub const ADDRESS_BYTES_MAX: usize = 255;

/// One member of an epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its identity, never reused.
    pub id: ReplicaId,
    /// Where the driver reaches it (for the TCP runtime `host:port`). The core never reads
    /// it: it travels with the configuration so that every replica learns the new
    /// members' addresses from the same committed op.
    pub address: Bytes,
}

/// The members of one epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configuration {
    /// The epoch this configuration is for.
    epoch: u32,
    /// The members, by index: `members[i]` is replica index `i`.
    members: Vec<Member>,
    /// Members (by index) that store the log and vote but never execute or lead
    /// (paper 6.1): at most f, so that f+1 members hold the service's state. The first
    /// configuration takes them from `Config::witnesses`; a reconfiguration names the
    /// next epoch's ([`Configuration::with_proposed_witnesses`],
    /// [`Configuration::check_successor`]).
    witnesses: ReplicaSet,
    /// The lowest identity no configuration of this cluster has used: a successor's new
    /// members take identities from here up.
    next_id: ReplicaId,
}

/// Why a proposed configuration cannot follow the current one.
pub type Invalid = &'static str;

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
            members: (0..replica_count as ReplicaId)
                .map(|id| Member {
                    id,
                    address: Bytes::new(),
                })
                .collect(),
            witnesses: ReplicaSet::default(),
            next_id: replica_count as ReplicaId,
        }
    }

    /// The first configuration of a cluster run with `config`: `replica_count` members,
    /// the configured witnesses among them (`Config::validate` checked them).
    pub fn first(config: &crate::Config) -> Configuration {
        Configuration::initial(config.replica_count).with_witnesses(config.witnesses)
    }

    /// The initial configuration of `replica_count` members of which `witnesses` are
    /// witnesses (paper 6.1); the reason when they are not a valid choice
    /// ([`check_witnesses`]).
    pub fn initial_with_witnesses(
        replica_count: u8,
        witnesses: ReplicaSet,
    ) -> Result<Configuration, Invalid> {
        check_witnesses(replica_count as usize, &witnesses)?;
        Ok(Configuration {
            witnesses,
            ..Configuration::initial(replica_count)
        })
    }

    /// This configuration with `witnesses` as its witnesses (checked by the caller, as
    /// for [`Configuration::initial_with_witnesses`]): the runtime's first configuration
    /// is built from addresses, then given the configured witnesses.
    pub fn with_witnesses(self, witnesses: ReplicaSet) -> Configuration {
        debug_assert_eq!(check_witnesses(self.members.len(), &witnesses), Ok(()));
        Configuration { witnesses, ..self }
    }

    /// This proposal with `witnesses` (indexes in it) as the next epoch's witnesses
    /// (paper 6.1), unchecked: [`Configuration::check_successor`] judges them with the
    /// rest, and says why they cannot be.
    pub fn with_proposed_witnesses(self, witnesses: ReplicaSet) -> Configuration {
        Configuration { witnesses, ..self }
    }

    /// The initial configuration with each member's address (in index order).
    pub fn initial_with_addresses(addresses: &[Bytes]) -> Configuration {
        let mut configuration = Configuration::initial(addresses.len() as u8);
        for (member, address) in configuration.members.iter_mut().zip(addresses) {
            member.address = address.clone();
        }
        configuration
    }

    /// A proposal for the epoch after `self`: the `kept` identities of the current
    /// members (in the order given) and `added` new members, which get fresh identities.
    /// Members are listed kept first, then added; the result still has to pass
    /// [`Configuration::check_successor`].
    pub fn propose(&self, kept: &[ReplicaId], added: &[Bytes]) -> Configuration {
        let mut members: Vec<Member> = kept
            .iter()
            .filter_map(|&id| self.members.iter().find(|member| member.id == id).cloned())
            .collect();
        let mut next_id = self.next_id;
        for address in added {
            members.push(Member {
                id: next_id,
                address: address.clone(),
            });
            next_id += 1;
        }
        Configuration {
            epoch: self.epoch + 1,
            members,
            witnesses: ReplicaSet::default(),
            next_id,
        }
    }

    /// The successor whose members are at `addresses`, in that order: a current member
    /// at one of them keeps its identity, every other address is a new member with a
    /// fresh identity (in order, from `next_id`). The rule `vsr admin reconfigure` and a
    /// joining replica both apply, so a new member knows its identity before the change
    /// is requested. It still has to pass [`Configuration::check_successor`].
    pub fn successor_at(&self, addresses: &[Bytes]) -> Configuration {
        let mut next_id = self.next_id;
        let members = addresses
            .iter()
            .map(|address| {
                let id = match self.members.iter().find(|m| m.address == address) {
                    Some(member) => member.id,
                    None => {
                        next_id += 1;
                        next_id - 1
                    }
                };
                Member {
                    id,
                    address: address.clone(),
                }
            })
            .collect();
        Configuration {
            epoch: self.epoch + 1,
            members,
            witnesses: ReplicaSet::default(),
            next_id,
        }
    }

    /// A configuration from its parts, as a replica reports it (`vsr admin status`); `None`
    /// unless it is the initial configuration of its size or well formed
    /// ([`Configuration::is_well_formed`]).
    pub fn from_parts(
        epoch: u32,
        members: Vec<Member>,
        next_id: ReplicaId,
        witnesses: ReplicaSet,
    ) -> Option<Configuration> {
        let configuration = Configuration {
            epoch,
            members,
            witnesses,
            next_id,
        };
        let initial = epoch == 0
            && configuration.members.len() % 2 == 1
            && configuration.next_id == configuration.members.len() as ReplicaId
            && configuration.ids().eq(0..next_id)
            && check_witnesses(configuration.members.len(), &witnesses).is_ok();
        (initial || configuration.is_well_formed()).then_some(configuration)
    }

    /// Whether `next` may follow this configuration (paper 7.1: the primary accepts a
    /// reconfiguration only for the current epoch): the next epoch, 2f+1 members with at
    /// least three, distinct identities and addresses, every identity either a current
    /// member's or one never used, `next_id` past all of them, and at most f' witnesses,
    /// each a member (paper 6.1: f'+1 members execute). Witnesses may come and go, and a
    /// member may change its role: ARCHITECTURE.md, "Changing members", says how each
    /// transition is made safe.
    pub fn check_successor(&self, next: &Configuration) -> Result<(), Invalid> {
        if Some(next.epoch) != self.epoch.checked_add(1) {
            return Err("not the next epoch");
        }
        let count = next.members.len();
        if count < RECONFIGURATION_MEMBERS_MIN {
            return Err("fewer than three members");
        }
        if count.is_multiple_of(2) {
            return Err("an even number of members (a configuration has 2f+1)");
        }
        if count > MEMBERS_MAX {
            return Err("too many members");
        }
        for (i, member) in next.members.iter().enumerate() {
            let reused = member.id < self.next_id && !self.contains_id(member.id);
            if reused {
                return Err("reuses the identity of a former member");
            }
            if member.id >= next.next_id {
                return Err("an identity at or past next_id");
            }
            let later = &next.members[i + 1..];
            if later.iter().any(|other| other.id == member.id) {
                return Err("an identity listed twice");
            }
            if !member.address.is_empty()
                && later.iter().any(|other| other.address == member.address)
            {
                return Err("an address listed twice");
            }
        }
        if next.next_id < self.next_id {
            return Err("next_id goes backwards");
        }
        check_witnesses(count, &next.witnesses)?;
        if next.members == self.members && next.witnesses == self.witnesses {
            return Err("the same members as now");
        }
        Ok(())
    }

    /// Whether this could be a configuration a reconfiguration installed (what
    /// `check_successor` requires of any successor, without knowing its predecessor): an
    /// odd number of at least three members, distinct identities below `next_id`, at most
    /// f witnesses, all members.
    pub fn is_well_formed(&self) -> bool {
        let count = self.members.len();
        let ids_ok = self.members.iter().enumerate().all(|(i, member)| {
            member.id < self.next_id && self.members[i + 1..].iter().all(|o| o.id != member.id)
        });
        count >= RECONFIGURATION_MEMBERS_MIN
            && count % 2 == 1
            && count <= MEMBERS_MAX
            && ids_ok
            && check_witnesses(count, &self.witnesses).is_ok()
    }

    /// Encodes the configuration (in a RECONFIGURATION op's body, StartEpoch, a NewEpoch
    /// reply and a replica's stored state): epoch `u32`, next id `u64`, member count `u8`,
    /// then per member its id `u64`, address length `u8` and address. With witnesses,
    /// the count's top bit (`WITNESSES_FOLLOW`) is set and a `u64` follows the members,
    /// bit i set for witness i: a configuration without witnesses encodes as before
    /// witnesses existed.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.epoch);
        out.put_u64_le(self.next_id);
        let flag = if self.witnesses.is_empty() {
            0
        } else {
            WITNESSES_FOLLOW
        };
        out.put_u8(self.members.len() as u8 | flag);
        for member in &self.members {
            out.put_u64_le(member.id);
            out.put_u8(member.address.len() as u8);
            out.put_slice(&member.address);
        }
        if !self.witnesses.is_empty() {
            out.put_u64_le(self.witnesses.low_bits());
        }
    }

    /// [`Configuration::encode`] into a buffer of its own.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }

    /// The length of the encoding.
    pub fn encoded_len(&self) -> usize {
        4 + 8
            + 1
            + self
                .members
                .iter()
                .map(|member| 8 + 1 + member.address.len())
                .sum::<usize>()
            + if self.witnesses.is_empty() { 0 } else { 8 }
    }

    /// Decodes what [`Configuration::encode`] wrote, consuming it from `input`; `None`
    /// when it is cut short or impossible (no members, more than `MEMBERS_MAX`, an address
    /// longer than `ADDRESS_BYTES_MAX`, witnesses [`check_witnesses`] refuses). Whether it may follow another configuration is
    /// [`Configuration::check_successor`]'s question.
    pub fn decode(input: &mut Bytes) -> Option<Configuration> {
        if input.remaining() < 4 + 8 + 1 {
            return None;
        }
        let epoch = input.get_u32_le();
        let next_id = input.get_u64_le();
        let count_byte = input.get_u8();
        let has_witnesses = count_byte & WITNESSES_FOLLOW != 0;
        let count = (count_byte & !WITNESSES_FOLLOW) as usize;
        if count == 0 || count > MEMBERS_MAX {
            return None;
        }
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            if input.remaining() < 8 + 1 {
                return None;
            }
            let id = input.get_u64_le();
            let len = input.get_u8() as usize;
            if input.remaining() < len || len > ADDRESS_BYTES_MAX {
                return None;
            }
            members.push(Member {
                id,
                address: input.split_to(len),
            });
        }
        let witnesses = match has_witnesses {
            true if input.remaining() >= 8 => ReplicaSet::from_low_bits(input.get_u64_le()),
            true => return None,
            false => ReplicaSet::default(),
        };
        // Set only when there are witnesses: one encoding per configuration.
        if has_witnesses && (witnesses.is_empty() || check_witnesses(count, &witnesses).is_err()) {
            return None;
        }
        Some(Configuration {
            epoch,
            members,
            witnesses,
            next_id,
        })
    }

    /// Decodes a whole buffer as one configuration (nothing may follow it).
    pub fn from_bytes(bytes: &Bytes) -> Option<Configuration> {
        let mut input = bytes.clone();
        let configuration = Configuration::decode(&mut input)?;
        input.is_empty().then_some(configuration)
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
        self.members[index as usize].id
    }

    /// The index of the member with identity `id`, if it is one.
    pub fn index_of(&self, id: ReplicaId) -> Option<ReplicaIndex> {
        self.members
            .iter()
            .position(|member| member.id == id)
            .map(|index| index as ReplicaIndex)
    }

    /// Whether `id` is a member's identity.
    pub fn contains_id(&self, id: ReplicaId) -> bool {
        self.index_of(id).is_some()
    }

    /// The members, by index.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The identities of the members, by index.
    pub fn ids(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.members.iter().map(|member| member.id)
    }

    /// The identities of the members a broadcast to `audience` reaches (the sender
    /// among them: it filters itself out).
    pub fn audience(&self, audience: Audience) -> impl Iterator<Item = ReplicaId> + '_ {
        self.members
            .iter()
            .enumerate()
            .filter(move |&(index, _)| {
                audience == Audience::Members || !self.is_witness(index as ReplicaIndex)
            })
            .map(|(_, member)| member.id)
    }

    /// The lowest identity never used.
    pub fn next_id(&self) -> ReplicaId {
        self.next_id
    }

    /// Whether member `index` is a witness.
    pub fn is_witness(&self, index: ReplicaIndex) -> bool {
        self.witnesses.contains(index)
    }

    /// The witnesses (paper 6.1), by index.
    pub fn witnesses(&self) -> ReplicaSet {
        self.witnesses
    }

    /// Every member's index but the witnesses': the replicas that execute.
    pub fn actives(&self) -> impl Iterator<Item = ReplicaIndex> + '_ {
        self.indexes().filter(|&index| !self.is_witness(index))
    }

    /// f: how many members may fail.
    pub fn faults_max(&self) -> usize {
        (self.members.len() - 1) / 2
    }

    /// f+1: a quorum, counting the replica itself.
    pub fn quorum(&self) -> usize {
        self.faults_max() + 1
    }

    /// The primary of `view`: round robin over the members that are not witnesses
    /// (paper 4, 6.1).
    pub fn primary_of(&self, view: View) -> ReplicaIndex {
        primary_among(view, self.replica_count(), self.witnesses.low_bits())
    }

    /// Every member's index.
    pub fn indexes(&self) -> impl Iterator<Item = ReplicaIndex> + Clone {
        0..self.replica_count()
    }
}

/// The count byte's flag saying that a witness bitmap follows the members (see
/// [`Configuration::encode`]); counts are at most `MEMBERS_MAX`, below it.
const WITNESSES_FOLLOW: u8 = 0x80;

/// Whether `witnesses` may be the witnesses of a configuration of `count` members: each
/// one a member, and at most f of them, so that the f+1 others (the actives) hold the
/// service's state and a quorum of them can always lead (paper 6.1).
pub fn check_witnesses(count: usize, witnesses: &ReplicaSet) -> Result<(), Invalid> {
    if witnesses.iter().any(|index| index as usize >= count) {
        return Err("a witness that is not a member");
    }
    if witnesses.len() > count.saturating_sub(1) / 2 {
        return Err("more than f witnesses (f+1 members must execute)");
    }
    Ok(())
}

/// The primary of `view` among `count` members, of which those whose bit is set in
/// `witnesses` never lead: round robin over the others (paper 4, 6.1). Clients compute it
/// too, from what they are told of the configuration.
pub fn primary_among(view: View, count: u8, witnesses: u64) -> ReplicaIndex {
    if witnesses == 0 {
        return (view as u64 % count as u64) as ReplicaIndex;
    }
    let is_witness = |index: u8| index < 64 && witnesses >> index & 1 == 1;
    let actives = (0..count).filter(|&index| !is_witness(index)).count() as u64;
    assert!(
        actives > 0,
        "a configuration whose members are all witnesses"
    );
    let nth = (view as u64 % actives) as usize;
    (0..count)
        .filter(|&index| !is_witness(index))
        .nth(nth)
        .expect("nth < actives")
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

    #[test]
    fn witnesses_never_lead_and_survive_the_encoding() {
        let five = Configuration::initial_with_witnesses(5, ReplicaSet::from_low_bits(0b01010))
            .expect("two witnesses of five");
        assert!(five.is_witness(1) && five.is_witness(3) && !five.is_witness(0));
        let primaries: Vec<_> = (0..7).map(|view| five.primary_of(view)).collect();
        assert_eq!(primaries, [0, 2, 4, 0, 2, 4, 0]);
        assert_eq!(five.actives().collect::<Vec<_>>(), [0, 2, 4]);
        let ids = |audience| five.audience(audience).collect::<Vec<_>>();
        assert_eq!(ids(Audience::Actives), [0, 2, 4]);
        assert_eq!(ids(Audience::Members), [0, 1, 2, 3, 4]);
        let bytes = five.to_bytes();
        assert_eq!(bytes.len(), five.encoded_len());
        assert_eq!(Configuration::from_bytes(&bytes).as_ref(), Some(&five));
        // Without witnesses the encoding is the one from before witnesses.
        let plain = Configuration::initial(5).to_bytes();
        assert_eq!(plain.len() + 8, bytes.len());
        assert_eq!(plain[12], 5);
        assert_eq!(bytes[12], 5 | WITNESSES_FOLLOW);
        // A flag with an empty, out-of-range or too large witness set is refused.
        for bits in [0u64, 1 << 5, 0b111] {
            let mut damaged = BytesMut::from(&bytes[..bytes.len() - 8]);
            damaged.put_u64_le(bits);
            assert_eq!(
                Configuration::from_bytes(&damaged.freeze()),
                None,
                "{bits:b}"
            );
        }
        assert_eq!(
            Configuration::initial_with_witnesses(3, ReplicaSet::from_low_bits(0b011)),
            Err("more than f witnesses (f+1 members must execute)")
        );
        assert_eq!(
            Configuration::initial_with_witnesses(3, ReplicaSet::of(3)),
            Err("a witness that is not a member")
        );
    }

    #[test]
    fn a_successor_names_at_most_f_witnesses_among_its_members() {
        let three = Configuration::initial_with_witnesses(3, ReplicaSet::of(2)).unwrap();
        let grown = three.propose(&[0, 1, 2], &[address("d"), address("e")]);
        // Gaining witnesses, keeping them, losing them, changing roles: all valid.
        for bits in [0u64, 0b00100, 0b11000, 0b00011, 0b10001] {
            let next = grown
                .clone()
                .with_proposed_witnesses(ReplicaSet::from_low_bits(bits));
            assert_eq!(three.check_successor(&next), Ok(()), "{bits:b}");
            assert!(next.is_well_formed());
            let bytes = next.to_bytes();
            assert_eq!(Configuration::from_bytes(&bytes).as_ref(), Some(&next));
        }
        // A plain cluster may gain witnesses too.
        let plain = Configuration::initial(3);
        let next = grown.clone().with_proposed_witnesses(ReplicaSet::of(4));
        assert_eq!(plain.check_successor(&next), Ok(()));
        // More than f' (the actives would be fewer than f'+1).
        let too_many = grown
            .clone()
            .with_proposed_witnesses(ReplicaSet::from_low_bits(0b111));
        assert_eq!(
            three.check_successor(&too_many),
            Err("more than f witnesses (f+1 members must execute)")
        );
        assert!(!too_many.is_well_formed());
        // A witness index past the members (an unknown member).
        let outside = grown.clone().with_proposed_witnesses(ReplicaSet::of(5));
        assert_eq!(
            three.check_successor(&outside),
            Err("a witness that is not a member")
        );
        assert!(!outside.is_well_formed());
        // Of three members one witness at most; shrinking keeps the bound of the new size.
        let shrunk = grown
            .propose(&[0, 1, 3], &[])
            .with_proposed_witnesses(ReplicaSet::from_low_bits(0b011));
        assert_eq!(
            grown.check_successor(&shrunk),
            Err("more than f witnesses (f+1 members must execute)")
        );
        // The same members with other witnesses is a change; the same witnesses is not.
        let same = three.propose(&[0, 1, 2], &[]);
        assert_eq!(
            three.check_successor(&same.clone().with_proposed_witnesses(ReplicaSet::of(2))),
            Err("the same members as now")
        );
        assert_eq!(
            three.check_successor(&same.with_proposed_witnesses(ReplicaSet::of(0))),
            Ok(())
        );
        // View 0's primary of every successor is an active.
        let next = grown.with_proposed_witnesses(ReplicaSet::of(0));
        assert_eq!(next.primary_of(0), 1);
    }

    fn address(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    #[test]
    fn a_configuration_survives_its_encoding_and_refuses_damage() {
        let three = Configuration::initial_with_addresses(&[
            address("a:1"),
            address("b:2"),
            address("c:3"),
        ]);
        let five = three.propose(&[0, 1, 2], &[address("d:4"), address("e:5")]);
        for configuration in [&three, &five] {
            let bytes = configuration.to_bytes();
            assert_eq!(bytes.len(), configuration.encoded_len());
            assert_eq!(
                Configuration::from_bytes(&bytes).as_ref(),
                Some(configuration)
            );
            for cut in 0..bytes.len() {
                assert_eq!(
                    Configuration::from_bytes(&bytes.slice(..cut)),
                    None,
                    "cut at {cut}"
                );
            }
            let mut longer = BytesMut::from(&bytes[..]);
            longer.put_u8(0);
            assert_eq!(Configuration::from_bytes(&longer.freeze()), None);
        }
        let mut empty = BytesMut::new();
        empty.put_u32_le(1);
        empty.put_u64_le(3);
        empty.put_u8(0);
        assert_eq!(Configuration::from_bytes(&empty.freeze()), None);
    }

    #[test]
    fn a_successor_adds_only_fresh_identities() {
        let three = Configuration::initial(3);
        let five = three.propose(&[0, 1, 2], &[address("d"), address("e")]);
        assert_eq!(three.check_successor(&five), Ok(()));
        assert_eq!(five.epoch(), 1);
        assert_eq!(five.ids().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(five.next_id(), 5);
        assert_eq!(five.index_of(4), Some(4));
        // Shrinking to three members none of which were in the first configuration.
        let moved = five.propose(&[3, 4], &[address("f")]);
        assert_eq!(five.check_successor(&moved), Ok(()));
        assert_eq!(moved.ids().collect::<Vec<_>>(), [3, 4, 5]);
        // A former member's identity never comes back.
        let mut reused = moved.propose(&[3, 4, 5], &[]);
        reused.members[2].id = 0;
        assert_eq!(
            moved.check_successor(&reused),
            Err("reuses the identity of a former member")
        );
        assert_eq!(
            three.check_successor(&three.propose(&[0, 1], &[])),
            Err("fewer than three members")
        );
        assert_eq!(
            three.check_successor(&three.propose(&[0, 1, 2], &[address("d")])),
            Err("an even number of members (a configuration has 2f+1)")
        );
        assert_eq!(
            three.check_successor(&five.propose(&[0, 1, 2], &[])),
            Err("not the next epoch")
        );
        assert_eq!(
            three.check_successor(&three.propose(&[0, 1, 2], &[])),
            Err("the same members as now")
        );
        let mut twice = three.propose(&[0, 1, 2], &[address("d"), address("d")]);
        assert_eq!(
            three.check_successor(&twice),
            Err("an address listed twice")
        );
        twice.members[4].id = 3;
        assert_eq!(
            three.check_successor(&twice),
            Err("an identity listed twice")
        );
        let mut beyond = three.propose(&[0, 1, 2], &[address("d"), address("e")]);
        beyond.next_id = 4;
        assert_eq!(
            three.check_successor(&beyond),
            Err("an identity at or past next_id")
        );
    }

    #[test]
    fn a_successor_at_addresses_keeps_members_and_numbers_newcomers_in_order() {
        let three =
            Configuration::initial_with_addresses(&[address("a"), address("b"), address("c")]);
        let next = three.successor_at(&[
            address("d"),
            address("b"),
            address("e"),
            address("a"),
            address("f"),
        ]);
        assert_eq!(next.epoch(), 1);
        assert_eq!(next.ids().collect::<Vec<_>>(), [3, 1, 4, 0, 5]);
        assert_eq!(next.next_id(), 6);
        assert_eq!(three.check_successor(&next), Ok(()));
        // Dropping a member and adding one after: its identity is never the dropped one's.
        let after = next.successor_at(&[address("d"), address("e"), address("g")]);
        assert_eq!(after.ids().collect::<Vec<_>>(), [3, 4, 6]);
        assert_eq!(next.check_successor(&after), Ok(()));
    }

    #[test]
    fn parts_make_a_configuration_only_when_well_formed() {
        let three =
            Configuration::initial_with_addresses(&[address("a"), address("b"), address("c")]);
        let parts = |c: &Configuration| (c.epoch(), c.members().to_vec(), c.next_id());
        let (epoch, members, next_id) = parts(&three);
        assert_eq!(
            Configuration::from_parts(epoch, members.clone(), next_id, ReplicaSet::default()),
            Some(three.clone())
        );
        assert_eq!(
            Configuration::from_parts(epoch, members[..2].to_vec(), next_id, ReplicaSet::default()),
            None
        );
        let one = Configuration::initial(1);
        let (epoch, members, next_id) = parts(&one);
        assert_eq!(
            Configuration::from_parts(epoch, members, next_id, ReplicaSet::default()),
            Some(one)
        );
        let next = three.successor_at(&[address("a"), address("b"), address("d")]);
        let (epoch, members, next_id) = parts(&next);
        assert_eq!(
            Configuration::from_parts(epoch, members.clone(), next_id, ReplicaSet::default()),
            Some(next)
        );
        assert_eq!(
            Configuration::from_parts(epoch, members, 2, ReplicaSet::default()),
            None,
            "ids past next_id"
        );
    }
}
