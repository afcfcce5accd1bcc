//! What each operation is: null-service payloads, or kv puts and gets over `--keys` keys
//! (at random, or in order with `--key-order sequential`) with a `--read-fraction` of gets. Deterministic from a seed (splitmix64), no allocation
//! for keys or values beyond the operation's own encoding.

use crate::cli::{KeyOrder, ServiceKind};
use crate::reply::Expect;
use bytes::Bytes;
use vsr::service::kv::KvOp;

/// A small, fast, seedable generator (splitmix64): enough for choosing keys and op kinds.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The operation generator of a load run.
#[derive(Clone, Debug)]
pub struct Workload {
    service: ServiceKind,
    read_fraction: f64,
    keys: Vec<Bytes>,
    /// `Some(next key)` when keys go in order (`KeyOrder::Sequential`).
    next_key: Option<usize>,
    payload: Bytes,
    rng: Rng,
}

impl Workload {
    /// A generator; `keys` only matters for kv.
    pub fn new(
        service: ServiceKind,
        payload_bytes: usize,
        read_fraction: f64,
        keys: u64,
        seed: u64,
    ) -> Workload {
        // Keys are pre-encoded once; a kv run with a million keys costs a few MB here.
        let keys = match service {
            ServiceKind::Kv => (0..keys)
                .map(|k| Bytes::from(format!("key-{k:010}")))
                .collect(),
            ServiceKind::Null => Vec::new(),
        };
        let payload: Vec<u8> = (0..payload_bytes).map(|i| b'a' + (i % 26) as u8).collect();
        // Static bytes, leaked once per generator (one per run, one per level of a sweep):
        // every operation clones the payload and drops it when its session moves on, and
        // on a reference-counted `Bytes` that was two atomic updates per operation (5% of
        // the generator's samples at 64 B).
        let payload = Bytes::from_static(Box::leak(payload.into_boxed_slice()));
        Workload {
            service,
            read_fraction,
            keys,
            next_key: None,
            payload,
            rng: Rng::new(seed),
        }
    }

    /// Picks keys in `order` (kv only; the default is random).
    pub fn with_key_order(mut self, order: KeyOrder) -> Workload {
        self.next_key = (order == KeyOrder::Sequential).then_some(0);
        self
    }

    fn next_key(&mut self) -> Bytes {
        let index = match &mut self.next_key {
            Some(next) => {
                let index = *next;
                *next = (index + 1) % self.keys.len();
                index
            }
            None => self.rng.below(self.keys.len() as u64) as usize,
        };
        self.keys[index].clone()
    }

    /// The next operation's bytes, and what its reply must be.
    pub fn next_operation(&mut self) -> (Bytes, Expect) {
        match self.service {
            ServiceKind::Null => (self.payload.clone(), Expect::Empty),
            ServiceKind::Kv => {
                let key = self.next_key();
                if self.read_fraction > 0.0 && self.rng.unit() < self.read_fraction {
                    (KvOp::Get(key).encode(), Expect::KvGet)
                } else {
                    (KvOp::Put(key, self.payload.clone()).encode(), Expect::KvPut)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_mix_follows_the_read_fraction() {
        let mut workload = Workload::new(ServiceKind::Kv, 16, 0.25, 10, 7);
        let reads = (0..4000)
            .filter(|_| {
                let (operation, expect) = workload.next_operation();
                let read = KvOp::decode(&operation).unwrap().is_read_only();
                assert_eq!(read, expect == Expect::KvGet);
                read
            })
            .count();
        assert!((800..1200).contains(&reads), "reads: {reads}");
    }

    #[test]
    fn sequential_keys_write_every_key_once_then_wrap() {
        let mut workload =
            Workload::new(ServiceKind::Kv, 8, 0.0, 5, 7).with_key_order(KeyOrder::Sequential);
        let keys: Vec<Bytes> = (0..7)
            .map(
                |_| match KvOp::decode(&workload.next_operation().0).unwrap() {
                    KvOp::Put(key, _) => key,
                    other => panic!("expected a put, got {other:?}"),
                },
            )
            .collect();
        let expected: Vec<Bytes> = [0, 1, 2, 3, 4, 0, 1]
            .iter()
            .map(|k| Bytes::from(format!("key-{k:010}")))
            .collect();
        assert_eq!(keys, expected);
    }

    #[test]
    fn null_operations_have_the_payload_size() {
        let mut workload = Workload::new(ServiceKind::Null, 1024, 0.0, 1, 1);
        let (operation, expect) = workload.next_operation();
        assert_eq!(operation.len(), 1024);
        assert_eq!(expect, Expect::Empty);
    }
}
