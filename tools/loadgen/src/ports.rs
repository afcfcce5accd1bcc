//! Free loopback ports for local clusters, drawn below the kernel's ephemeral range.
//!
//! A port taken with port 0 comes from Linux's ephemeral range (32768-60999 by default),
//! the same range the kernel hands out to outgoing connections: between the check and a
//! replica's bind, a connection of another program (a test running beside this one) may
//! take it, and the replica fails with "Address already in use". Ports drawn at random
//! from below that range are never handed out so, and random draws keep parallel runs
//! apart. Each port is checked by binding it; the listeners are released for the
//! replicas to bind.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};

/// The ports drawn from.
const PORTS: std::ops::Range<u32> = 20_000..32_768;

/// `count` distinct free loopback addresses (see the module docs).
pub fn free_loopback_addresses(count: usize) -> std::io::Result<Vec<SocketAddr>> {
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos() as u64);
    let mut state =
        ((std::process::id() as u64) << 32) ^ nanos ^ DRAWS.fetch_add(1, Ordering::Relaxed);
    let mut listeners: Vec<TcpListener> = Vec::with_capacity(count);
    for _ in 0..100_000 {
        if listeners.len() == count {
            break;
        }
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let port = PORTS.start as u64 + splitmix(state) % (PORTS.end - PORTS.start) as u64;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
            listeners.push(listener);
        }
    }
    if listeners.len() < count {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("no {count} free loopback ports in {PORTS:?}"),
        ));
    }
    listeners.iter().map(TcpListener::local_addr).collect()
}

/// splitmix64's output step: a well-spread value from any state.
fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Whether each is free again afterwards is not asserted: a test running beside this
    // one may draw it meanwhile (the race the module accepts).
    #[test]
    fn addresses_are_distinct_and_below_the_ephemeral_range() {
        let addresses = free_loopback_addresses(8).unwrap();
        for (i, address) in addresses.iter().enumerate() {
            assert!(PORTS.contains(&(address.port() as u32)), "{address}");
            assert!(!addresses[..i].contains(address));
        }
    }
}
