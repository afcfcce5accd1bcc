//! The clients' workload: key-value operations over a few keys, so that concurrent
//! requests collide on the same keys and the linearizability check has something to bite.

use super::prng::Prng;
use crate::service::kv::KvOp;
use bytes::Bytes;

/// Keys and values are drawn from small fixed sets.
const KEYS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const VALUES: [&str; 8] = ["0", "1", "2", "3", "4", "5", "6", "7"];

/// Keys the workload can use at most.
pub const KEYS_MAX: usize = KEYS.len();

/// A random key-value workload.
#[derive(Clone, Debug)]
pub struct Workload {
    /// How many of [`KEYS`] are in use (1..=6).
    keys: usize,
    /// Values are a digit repeated 1..=this many times: long values make long entries, so
    /// that a NewState holds few of them and transfers take several messages.
    value_bytes_max: usize,
}

impl Workload {
    /// A workload over `keys` keys (clamped to 1..=6) with values of at most
    /// `value_bytes_max` bytes (at least 1).
    pub fn new(keys: usize, value_bytes_max: usize) -> Workload {
        Workload {
            keys: keys.clamp(1, KEYS.len()),
            value_bytes_max: value_bytes_max.max(1),
        }
    }

    /// The next operation.
    pub fn next_op(&self, prng: &mut Prng) -> KvOp {
        let key = Bytes::from_static(KEYS[prng.below(self.keys as u64) as usize].as_bytes());
        let value_bytes_max = self.value_bytes_max as u64;
        let value = |prng: &mut Prng| {
            let digit = prng.pick(&VALUES).as_bytes()[0];
            Bytes::from(vec![digit; prng.between(1, value_bytes_max) as usize])
        };
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

impl Workload {
    /// A get of one of the keys in use: the query clients read with (`sim::reads`).
    pub fn next_get(&self, prng: &mut Prng) -> KvOp {
        KvOp::Get(Bytes::from_static(
            KEYS[prng.below(self.keys as u64) as usize].as_bytes(),
        ))
    }

    /// An operation whose encoding is longer than `body_bytes_max`: the replicas must
    /// refuse it without ordering it.
    pub fn oversized_op(&self, prng: &mut Prng, body_bytes_max: u32) -> KvOp {
        let key = Bytes::from_static(KEYS[prng.below(self.keys as u64) as usize].as_bytes());
        let length = body_bytes_max as u64 + prng.between(1, 64);
        KvOp::Put(key, Bytes::from(vec![b'x'; length as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_kind_over_the_chosen_keys() {
        let workload = Workload::new(2, 1);
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
        let long = Workload::new(6, 100);
        let longest = (0..2_000).map(|_| long.next_op(&mut prng).encode().len());
        assert!(
            longest.max().unwrap() <= 256,
            "ordinary ops are never refused"
        );
        let big = workload.oversized_op(&mut prng, 256);
        assert!(big.encode().len() > 256);
    }
}
