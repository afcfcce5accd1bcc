//! The clients' workload: key-value operations over a few keys, so that concurrent
//! requests collide on the same keys and the linearizability check has something to bite.

use super::prng::Prng;
use crate::service::kv::KvOp;
use bytes::Bytes;

/// Keys and values are drawn from small fixed sets.
const KEYS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const VALUES: [&str; 8] = ["0", "1", "2", "3", "4", "5", "6", "7"];

/// A random key-value workload.
#[derive(Clone, Debug)]
pub struct Workload {
    /// How many of [`KEYS`] are in use (1..=6).
    keys: usize,
}

impl Workload {
    /// A workload over `keys` keys (clamped to 1..=6).
    pub fn new(keys: usize) -> Workload {
        Workload {
            keys: keys.clamp(1, KEYS.len()),
        }
    }

    /// The next operation.
    pub fn next_op(&self, prng: &mut Prng) -> KvOp {
        let key = Bytes::from_static(KEYS[prng.below(self.keys as u64) as usize].as_bytes());
        let value = |prng: &mut Prng| Bytes::from_static(prng.pick(&VALUES).as_bytes());
        match prng.below(10) {
            0..=2 => KvOp::Put(key, value(prng)),
            3..=5 => KvOp::Get(key),
            6 => KvOp::Delete(key),
            _ => {
                let old = if prng.chance(300_000) {
                    None
                } else {
                    Some(value(prng))
                };
                KvOp::Cas(key, old, value(prng))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_kind_over_the_chosen_keys() {
        let workload = Workload::new(2);
        let mut prng = Prng::new(9);
        let ops: Vec<KvOp> = (0..500).map(|_| workload.next_op(&mut prng)).collect();
        let keys = |op: &KvOp| match op {
            KvOp::Put(k, _) | KvOp::Get(k) | KvOp::Delete(k) | KvOp::Cas(k, _, _) => k.clone(),
        };
        assert!(ops
            .iter()
            .all(|op| ["a", "b"].contains(&std::str::from_utf8(&keys(op)).unwrap())));
        assert!(ops.iter().any(|op| matches!(op, KvOp::Put(..))));
        assert!(ops.iter().any(|op| matches!(op, KvOp::Get(..))));
        assert!(ops.iter().any(|op| matches!(op, KvOp::Delete(..))));
        assert!(ops.iter().any(|op| matches!(op, KvOp::Cas(_, None, _))));
        assert!(ops.iter().any(|op| matches!(op, KvOp::Cas(_, Some(_), _))));
    }
}
