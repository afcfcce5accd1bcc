//! The connection-opening frames: `Hello` (the connector names itself, states the cluster
//! it believes in, and, with a cluster key, sends a challenge), `Welcome` (the acceptor's
//! answer, with its own challenge and its proof of the key), `Proof` (the connector's proof
//! of the key) and `Refusal` (why a handshake failed, in words the other side can print).
//!
//! What a `Hello` states, its [`Terms`], is what must agree for two nodes to work together:
//! the cluster id, the member addresses in order, and (between replicas) the limits that
//! every replica must share. The acceptor compares them with its own and refuses with a
//! reason that names what differs, so a misconfiguration is one clear line in both logs
//! instead of silence or a timeout.
//!
//! Body layouts (all integers little-endian):
//! - `Hello`: flags `u8` (bit 0: keyed, bit 1: limits present), nonce `[u8; 32]` (zero
//!   unless keyed), limits (`message_bytes_max u32, request_body_bytes_max u32,
//!   clients_max u32, checkpoint_interval_ops u64, witnesses u64, lease_ticks u64,
//!   clock_drift_ppm u32`, zero unless present), member count
//!   `u16`, then per member: family `u8` (4 or 6), address `[u8; 16]` (IPv4 in the first
//!   4 bytes, the rest zero), port `u16`.
//! - `Welcome`: flags `u8` (bit 0: keyed), nonce `[u8; 32]`, mac `[u8; 32]` (both zero
//!   unless keyed).
//! - `Proof`: mac `[u8; 32]`.
//! - `Refusal`: the reason as UTF-8 text (at most [`REFUSAL_TEXT_BYTES_MAX`] bytes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Bytes of a handshake nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a handshake MAC (HMAC-SHA256).
pub const MAC_BYTES: usize = 32;
/// The most members a `Hello` may list (replica indexes are `u8`).
pub const MEMBERS_MAX: usize = 255;
/// The longest reason a `Refusal` carries.
pub const REFUSAL_TEXT_BYTES_MAX: usize = 1024;
/// Bytes of one member address on the wire.
pub(crate) const MEMBER_BYTES: usize = 1 + 16 + 2;
/// Bytes of the limits block.
pub(crate) const LIMITS_BYTES: usize = 4 + 4 + 4 + 8 + 8 + 8 + 4;
/// Bytes of a `Hello` body before its member list.
pub(crate) const HELLO_FIXED_BYTES: usize = 1 + NONCE_BYTES + LIMITS_BYTES + 2;
/// The largest `Hello` body.
pub const HELLO_BODY_BYTES_MAX: usize = HELLO_FIXED_BYTES + MEMBERS_MAX * MEMBER_BYTES;
/// Bytes of a `Welcome` body.
pub(crate) const WELCOME_BYTES: usize = 1 + NONCE_BYTES + MAC_BYTES;

pub(crate) const FLAG_KEYED: u8 = 1 << 0;
pub(crate) const FLAG_LIMITS: u8 = 1 << 1;

/// A fresh random challenge (all zero on a connection without a key).
pub type Nonce = [u8; NONCE_BYTES];
/// A message authentication code over a handshake transcript.
pub type Mac = [u8; MAC_BYTES];

/// The limits that every replica of a cluster must share: a replica with a different one
/// would refuse its peers' messages (`message_bytes_max`), answer an oversized request
/// differently (`request_body_bytes_max`), evict a different session from a full client
/// table (`clients_max`), checkpoint at different ops (`checkpoint_interval_ops`), take
/// another member for a witness or a primary (`witnesses`), or count a lease another way
/// than it was granted (`lease_ticks`, `clock_drift_ppm`: a primary that believes in a
/// longer lease than its backups promise would answer reads after their promise ran out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// `Config::message_bytes_max`.
    pub message_bytes_max: u32,
    /// `Config::request_body_bytes_max`.
    pub request_body_bytes_max: u32,
    /// `Config::clients_max`.
    pub clients_max: u32,
    /// `Config::checkpoint_interval_ops`.
    pub checkpoint_interval_ops: u64,
    /// `Config::witnesses`, a bit per index.
    pub witnesses: u64,
    /// `Config::lease_ticks`.
    pub lease_ticks: u64,
    /// `Config::clock_drift_ppm`.
    pub clock_drift_ppm: u32,
}

impl Limits {
    /// The shared limits of `config`.
    pub fn of(config: &crate::Config) -> Limits {
        Limits {
            message_bytes_max: config.message_bytes_max,
            request_body_bytes_max: config.request_body_bytes_max,
            clients_max: config.clients_max,
            checkpoint_interval_ops: config.checkpoint_interval_ops,
            witnesses: config.witnesses.low_bits(),
            lease_ticks: config.lease_ticks,
            clock_drift_ppm: config.clock_drift_ppm,
        }
    }

    /// The fields that differ from `other`, as `name ours/theirs` words for a log line.
    pub fn differences(&self, theirs: &Limits) -> Vec<String> {
        let mut out = Vec::new();
        let mut compare = |name: &str, ours: u64, other: u64| {
            if ours != other {
                out.push(format!("{name} {ours} here, {other} there"));
            }
        };
        compare(
            "message_bytes_max",
            self.message_bytes_max.into(),
            theirs.message_bytes_max.into(),
        );
        compare(
            "request_body_bytes_max",
            self.request_body_bytes_max.into(),
            theirs.request_body_bytes_max.into(),
        );
        compare(
            "clients_max",
            self.clients_max.into(),
            theirs.clients_max.into(),
        );
        compare(
            "checkpoint_interval_ops",
            self.checkpoint_interval_ops,
            theirs.checkpoint_interval_ops,
        );
        compare("lease_ticks", self.lease_ticks, theirs.lease_ticks);
        compare(
            "clock_drift_ppm",
            self.clock_drift_ppm.into(),
            theirs.clock_drift_ppm.into(),
        );
        if self.witnesses != theirs.witnesses {
            out.push(format!(
                "witnesses {} here, {} there",
                witness_list(self.witnesses),
                witness_list(theirs.witnesses)
            ));
        }
        out
    }
}

/// What a node believes about its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms {
    /// The cluster id.
    pub cluster: u128,
    /// The epoch whose members `members` lists (the header's `epoch`): a replica's current
    /// epoch; for a client, the epoch of the configuration it follows (0 for addresses
    /// given on a command line).
    pub epoch: u32,
    /// Every replica's address in configuration order; empty when the speaker does not
    /// claim to know them (`vsr stats`, which is given one address).
    pub members: Vec<SocketAddr>,
    /// The shared limits; only replicas state them (a client does not know them).
    pub limits: Option<Limits>,
}

impl Terms {
    /// The first way `theirs` differs from these terms (ours), in words naming both
    /// sides' values, or `None` when they agree. Empty member lists and absent limits are
    /// not compared, and member lists only within one epoch: nodes of different epochs
    /// disagree on the members by design (paper section 7), and the protocol itself
    /// tells the one behind where the cluster went.
    pub fn difference(&self, theirs: &Terms) -> Option<(RefusalCode, String)> {
        if self.cluster != theirs.cluster {
            return Some((
                RefusalCode::WrongCluster,
                format!(
                    "cluster id differs: {:#x} here, {:#x} there",
                    self.cluster, theirs.cluster
                ),
            ));
        }
        if self.epoch == theirs.epoch
            && !self.members.is_empty()
            && !theirs.members.is_empty()
            && self.members != theirs.members
        {
            return Some((
                RefusalCode::MembersDiffer,
                members_difference(&self.members, &theirs.members),
            ));
        }
        if let (Some(ours), Some(other)) = (&self.limits, &theirs.limits) {
            let differences = ours.differences(other);
            if !differences.is_empty() {
                return Some((
                    RefusalCode::LimitsDiffer,
                    format!("limits differ: {}", differences.join(", ")),
                ));
            }
        }
        None
    }
}

/// Witness indexes as a `--witnesses` list ("none" for none).
fn witness_list(bits: u64) -> String {
    let list: Vec<String> = (0..64)
        .filter(|index| bits >> index & 1 == 1)
        .map(|index: u32| index.to_string())
        .collect();
    match list.is_empty() {
        true => "none".to_string(),
        false => list.join(","),
    }
}

fn members_difference(ours: &[SocketAddr], theirs: &[SocketAddr]) -> String {
    if ours.len() != theirs.len() {
        return format!(
            "member lists differ: {} replicas here ({}), {} there ({})",
            ours.len(),
            list(ours),
            theirs.len(),
            list(theirs)
        );
    }
    let index = ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    format!(
        "member lists differ at replica {index}: {} here, {} there (here: {}; there: {})",
        ours[index],
        theirs[index],
        list(ours),
        list(theirs)
    )
}

fn list(members: &[SocketAddr]) -> String {
    members
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Who speaks, what it believes, and (with a key) its challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The speaker.
    pub peer: super::Peer,
    /// What the speaker believes about the cluster (its `cluster` is the header's).
    pub terms: Terms,
    /// The speaker's challenge, when it holds a cluster key.
    pub nonce: Option<Nonce>,
}

/// The acceptor's answer to a `Hello` that it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The acceptor's replica identity (the header's `client`: the speaker's identity).
    pub replica: crate::protocol::ReplicaId,
    /// With a key: the acceptor's challenge and its MAC over the transcript.
    pub keyed: Option<(Nonce, Mac)>,
}

/// Why a handshake was refused, as a code a program can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RefusalCode {
    /// The cluster ids differ.
    WrongCluster = 1,
    /// The member lists differ.
    MembersDiffer = 2,
    /// A shared limit differs.
    LimitsDiffer = 3,
    /// The acceptor requires a cluster key and the connector has none.
    KeyRequired = 4,
    /// The connector has a cluster key and the acceptor has none.
    KeyUnexpected = 5,
    /// A MAC did not verify: the keys differ (or the handshake was replayed).
    AuthenticationFailed = 6,
    /// No connection slot is free.
    Busy = 7,
    /// The hello breaks a rule (claims this replica's index, an index out of range, ...).
    BadHello = 8,
    /// The connector speaks another wire version (`wire::VERSION`): one of the two
    /// binaries must be replaced.
    VersionDiffers = 9,
}

impl RefusalCode {
    /// The code for a wire value, if any.
    pub fn from_u8(code: u8) -> Option<RefusalCode> {
        use RefusalCode::*;
        Some(match code {
            1 => WrongCluster,
            2 => MembersDiffer,
            3 => LimitsDiffer,
            4 => KeyRequired,
            5 => KeyUnexpected,
            6 => AuthenticationFailed,
            7 => Busy,
            8 => BadHello,
            9 => VersionDiffers,
            _ => return None,
        })
    }

    /// Whether retrying cannot help until someone changes a configuration.
    pub fn is_configuration(self) -> bool {
        !matches!(self, RefusalCode::Busy)
    }
}

/// A refused handshake: the code and the reason in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal.
    pub code: RefusalCode,
    /// The wire version of the node that refuses (its header's): this binary's
    /// [`super::VERSION`] for a refusal it sends; another for one a node of another
    /// version sent (a refusal is read whatever its version: `wire` docs).
    pub version: u8,
    /// The reason, for a log line or an error message.
    pub reason: String,
}

impl Refusal {
    /// A refusal this binary sends: of its own wire version.
    pub fn new(code: RefusalCode, reason: String) -> Refusal {
        Refusal {
            code,
            version: super::VERSION,
            reason,
        }
    }
}

pub(crate) fn write_member(address: &SocketAddr, out: &mut Vec<u8>) {
    let (family, bytes) = match address.ip() {
        IpAddr::V4(ip) => {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&ip.octets());
            (4u8, bytes)
        }
        IpAddr::V6(ip) => (6u8, ip.octets()),
    };
    out.push(family);
    out.extend_from_slice(&bytes);
    out.extend_from_slice(&address.port().to_le_bytes());
}

/// A member address from its wire bytes, or `None` if they are not canonical.
pub(crate) fn read_member(bytes: &[u8; MEMBER_BYTES]) -> Option<SocketAddr> {
    let address: [u8; 16] = bytes[1..17].try_into().ok()?;
    let port = u16::from_le_bytes([bytes[17], bytes[18]]);
    let ip = match bytes[0] {
        4 if address[4..].iter().all(|&b| b == 0) => IpAddr::V4(Ipv4Addr::new(
            address[0], address[1], address[2], address[3],
        )),
        6 => IpAddr::V6(Ipv6Addr::from(address)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(members: &[&str], limits: Option<Limits>) -> Terms {
        Terms {
            cluster: 7,
            epoch: 0,
            members: members.iter().map(|a| a.parse().unwrap()).collect(),
            limits,
        }
    }

    #[test]
    fn differences_name_both_sides() {
        let ours = terms(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], None);
        let swapped = terms(&["127.0.0.1:1", "127.0.0.1:3", "127.0.0.1:2"], None);
        let (code, text) = ours.difference(&swapped).unwrap();
        assert_eq!(code, RefusalCode::MembersDiffer);
        assert!(
            text.starts_with(
                "member lists differ at replica 1: 127.0.0.1:2 here, 127.0.0.1:3 there"
            ),
            "{text}"
        );
        assert_eq!(ours.difference(&terms(&[], None)), None);
        let later = Terms {
            epoch: 1,
            ..swapped.clone()
        };
        assert_eq!(ours.difference(&later), None, "other epochs, other members");
        let other = Terms {
            cluster: 8,
            ..ours.clone()
        };
        assert_eq!(
            ours.difference(&other).unwrap().0,
            RefusalCode::WrongCluster
        );
        let limits = Limits::of(&crate::Config::new(7, 3));
        let changed = Limits {
            clients_max: 5,
            ..limits
        };
        let (code, text) = terms(&[], Some(limits))
            .difference(&terms(&[], Some(changed)))
            .unwrap();
        assert_eq!(code, RefusalCode::LimitsDiffer);
        assert_eq!(text, "limits differ: clients_max 8192 here, 5 there");
        // Witnesses and the lease's terms must agree too.
        let other = Limits {
            witnesses: 0b100,
            lease_ticks: 20,
            ..limits
        };
        let (code, text) = terms(&[], Some(limits))
            .difference(&terms(&[], Some(other)))
            .unwrap();
        assert_eq!(code, RefusalCode::LimitsDiffer);
        assert_eq!(
            text,
            "limits differ: lease_ticks 50 here, 20 there, witnesses none here, 2 there"
        );
    }

    #[test]
    fn members_round_trip() {
        for address in ["127.0.0.1:7000", "[::1]:9", "[2001:db8::1]:65535"] {
            let address: SocketAddr = address.parse().unwrap();
            let mut out = Vec::new();
            write_member(&address, &mut out);
            let bytes: [u8; MEMBER_BYTES] = out.try_into().unwrap();
            assert_eq!(read_member(&bytes), Some(address));
        }
    }
}
