//! Cluster authentication: a shared key (`--cluster-key FILE`) and the challenge-response
//! that proves, on each connection, that both ends hold it.
//!
//! The handshake, before any protocol frame is accepted:
//! 1. connector → acceptor: `Hello` with a fresh random nonce `Nc`;
//! 2. acceptor → connector: `Welcome` with a fresh random nonce `Na` and
//!    `HMAC(key, "acceptor" ‖ transcript)`;
//! 3. connector → acceptor: `Proof` = `HMAC(key, "connector" ‖ transcript)`,
//!
//! where the transcript is the cluster id, the connector's identity (replica identity or
//! client id), the acceptor's replica identity, `Nc` and `Na`. Each side verifies the other's
//! MAC in constant time. Both nonces are fresh, so a recorded handshake replayed to either
//! side fails (the other side's new nonce is not in it); both identities are in it, so a
//! proof made for one connection or one claimed identity does not pass on another; the
//! two roles have different labels, so a MAC cannot be reflected back to its sender.
//!
//! What this does not give: confidentiality, or integrity of the frames after the
//! handshake against an attacker who can inject into an established TCP stream (that
//! needs TLS). The MAC is HMAC-SHA256 from the RustCrypto crates; nothing here is
//! hand-written cryptography.

use crate::protocol::ReplicaId;
use crate::wire::{Mac, Nonce, Peer, Refusal, RefusalCode, Welcome, MAC_BYTES, NONCE_BYTES};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use std::path::Path;
use std::sync::Arc;

/// The shortest key accepted, in bytes.
pub const KEY_BYTES_MIN: usize = 16;

/// A cluster's shared secret. Cheap to clone; never printed.
#[derive(Clone)]
pub struct ClusterKey {
    bytes: Arc<[u8]>,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey(<{} bytes, redacted>)", self.bytes.len())
    }
}

impl PartialEq for ClusterKey {
    fn eq(&self, other: &ClusterKey) -> bool {
        // Configuration comparison, not verification: timing does not matter here.
        self.bytes == other.bytes
    }
}

impl Eq for ClusterKey {}

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("cannot read the cluster key file {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// Too short to be a secret.
    #[error("the cluster key has {bytes} bytes; at least {KEY_BYTES_MIN} are needed (e.g. `head -c 32 /dev/urandom | base64 > FILE`)")]
    TooShort {
        /// Its length.
        bytes: usize,
    },
}

/// Which side of the handshake a MAC speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The side that accepted the TCP connection (always a replica).
    Acceptor,
    /// The side that dialled (a replica or a client).
    Connector,
}

/// Everything a handshake MAC covers: who talks to whom in which cluster, and both
/// sides' fresh nonces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transcript {
    /// The cluster id.
    pub cluster: u128,
    /// The connector's identity, as its hello stated it.
    pub connector: Peer,
    /// The acceptor's replica identity.
    pub acceptor: ReplicaId,
    /// The connector's nonce.
    pub connector_nonce: Nonce,
    /// The acceptor's nonce.
    pub acceptor_nonce: Nonce,
}

impl ClusterKey {
    /// A key from its bytes (at least [`KEY_BYTES_MIN`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<ClusterKey, KeyError> {
        if bytes.len() < KEY_BYTES_MIN {
            return Err(KeyError::TooShort { bytes: bytes.len() });
        }
        Ok(ClusterKey {
            bytes: Arc::from(bytes),
        })
    }

    /// The key in `path`: the file's bytes without trailing whitespace (so a key written
    /// by `echo` or an editor and one written by `head -c` both work).
    pub fn from_file(path: &Path) -> Result<ClusterKey, KeyError> {
        let bytes = std::fs::read(path).map_err(|error| KeyError::Read {
            path: path.display().to_string(),
            error,
        })?;
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |last| last + 1);
        ClusterKey::from_bytes(&bytes[..end])
    }

    /// The MAC `role` sends for `transcript`.
    pub fn mac(&self, role: Role, transcript: &Transcript) -> Mac {
        let mut out = [0u8; MAC_BYTES];
        out.copy_from_slice(&self.hmac(role, transcript).finalize().into_bytes());
        out
    }

    /// Whether `mac` is what `role` sends for `transcript` (constant-time comparison).
    pub fn verify(&self, role: Role, transcript: &Transcript, mac: &Mac) -> bool {
        self.hmac(role, transcript).verify_slice(mac).is_ok()
    }

    fn hmac(&self, role: Role, transcript: &Transcript) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.bytes).expect("HMAC accepts keys of any length");
        let label: &[u8] = match role {
            Role::Acceptor => b"vsr handshake v2: acceptor\0",
            Role::Connector => b"vsr handshake v2: connector\0",
        };
        mac.update(label);
        mac.update(&transcript.cluster.to_le_bytes());
        let (kind, id) = match transcript.connector {
            Peer::Replica(id) => (1u8, id),
            Peer::Client(client) => (2u8, client),
        };
        mac.update(&[kind]);
        mac.update(&id.to_le_bytes());
        mac.update(&transcript.acceptor.to_le_bytes());
        mac.update(&transcript.connector_nonce);
        mac.update(&transcript.acceptor_nonce);
        mac
    }
}

/// The connector's side of step 3: checks the acceptor's `welcome` against what was
/// dialled (`acceptor`, the identity of the replica at the address dialled) and, with a key, its
/// MAC; returns the `Proof` MAC to send (none without a key). `nonce` is the one our
/// `Hello` carried (present exactly when `key` is). The error is a refusal to send back
/// and to log.
pub fn answer_welcome(
    key: Option<&ClusterKey>,
    cluster: u128,
    me: Peer,
    acceptor: ReplicaId,
    nonce: Option<Nonce>,
    welcome: &Welcome,
) -> Result<Option<Mac>, Refusal> {
    if welcome.replica != acceptor {
        return Err(Refusal {
            code: RefusalCode::MembersDiffer,
            version: crate::wire::VERSION,
            reason: format!(
                "the address of replica {acceptor} is answered by replica {}: the member lists differ",
                welcome.replica
            ),
        });
    }
    match (key, nonce, welcome.keyed) {
        (None, _, None) => Ok(None),
        (Some(key), Some(connector_nonce), Some((acceptor_nonce, mac))) => {
            let transcript = Transcript {
                cluster,
                connector: me,
                acceptor,
                connector_nonce,
                acceptor_nonce,
            };
            if !key.verify(Role::Acceptor, &transcript, &mac) {
                return Err(Refusal {
                    code: RefusalCode::AuthenticationFailed,
                    version: crate::wire::VERSION,
                    reason: format!(
                        "replica {acceptor} failed to prove the cluster key (a different key?)"
                    ),
                });
            }
            Ok(Some(key.mac(Role::Connector, &transcript)))
        }
        (Some(_), _, None) => Err(Refusal {
            code: RefusalCode::KeyRequired,
            version: crate::wire::VERSION,
            reason: format!("replica {acceptor} runs without a cluster key, but this node has one"),
        }),
        (None, _, Some(_)) | (Some(_), None, Some(_)) => Err(Refusal {
            code: RefusalCode::KeyUnexpected,
            version: crate::wire::VERSION,
            reason: format!("replica {acceptor} sent a keyed welcome to a hello without a key"),
        }),
    }
}

/// A fresh nonce from the operating system's random generator.
pub fn fresh_nonce() -> Result<Nonce, getrandom::Error> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce)?;
    Ok(nonce)
}

/// Whether the key file at `path` can be read by others than its owner (a warning for
/// the operator, like ssh's for private keys).
pub fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> Transcript {
        Transcript {
            cluster: 9,
            connector: Peer::Replica(1),
            acceptor: 0,
            connector_nonce: [1; NONCE_BYTES],
            acceptor_nonce: [2; NONCE_BYTES],
        }
    }

    #[test]
    fn macs_bind_role_identities_and_nonces() {
        let key = ClusterKey::from_bytes(b"0123456789abcdef").unwrap();
        let t = transcript();
        let mac = key.mac(Role::Connector, &t);
        assert!(key.verify(Role::Connector, &t, &mac));
        // Reflected to the other role, or for another identity, nonce or key: refused.
        assert!(!key.verify(Role::Acceptor, &t, &mac));
        let other_peer = Transcript {
            connector: Peer::Client(1),
            ..t
        };
        assert!(!key.verify(Role::Connector, &other_peer, &mac));
        let other_acceptor = Transcript { acceptor: 2, ..t };
        assert!(!key.verify(Role::Connector, &other_acceptor, &mac));
        let replayed = Transcript {
            acceptor_nonce: [3; NONCE_BYTES],
            ..t
        };
        assert!(!key.verify(Role::Connector, &replayed, &mac));
        let other_key = ClusterKey::from_bytes(b"0123456789abcdeX").unwrap();
        assert!(!other_key.verify(Role::Connector, &t, &mac));
    }

    #[test]
    fn short_keys_are_refused_and_keys_are_never_printed() {
        assert!(matches!(
            ClusterKey::from_bytes(b"short"),
            Err(KeyError::TooShort { bytes: 5 })
        ));
        let key = ClusterKey::from_bytes(b"a secret of 22 bytes!!").unwrap();
        assert!(!format!("{key:?}").contains("secret"));
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(fresh_nonce().unwrap(), fresh_nonce().unwrap());
    }
}
