//! Random client ids (paper 4.5): never 0, and never reused by a restarted client process,
//! because the replicas key their client table by them.
//!
//! The randomness comes from the standard library's per-process random hash keys (seeded
//! by the operating system) mixed with the clock, the process id and a counter, so no
//! extra dependency is needed and two ids from one process never collide in practice.

use crate::protocol::ClientId;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh random client id, never 0.
pub fn random_client_id() -> ClientId {
    let keys = std::collections::hash_map::RandomState::new();
    loop {
        let mut hasher = keys.build_hasher();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or(0);
        hasher.write_u128(nanos);
        hasher.write_u32(std::process::id());
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let id = hasher.finish();
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_nonzero_and_distinct() {
        let mut ids: Vec<ClientId> = (0..10_000).map(|_| random_client_id()).collect();
        assert!(ids.iter().all(|&id| id != 0));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 10_000);
    }
}
