//! The simulator's only source of randomness: xoshiro256** seeded through splitmix64.
//!
//! Self-written on purpose: a dependency's algorithm could change between versions, and a
//! seed must reproduce a run bit for bit forever. Nothing in the simulator reads ambient
//! randomness or a clock; every random choice goes through one [`Prng`] built from the
//! seed.

/// A small, fast, deterministic pseudo-random number generator (xoshiro256**).
#[derive(Clone, Debug)]
pub struct Prng {
    state: [u64; 4],
}

/// One step of splitmix64: spreads a 64-bit seed over xoshiro's 256-bit state.
fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Prng {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Prng {
        let mut x = seed;
        let state = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        // splitmix64 never yields four zeros in a row, the one state xoshiro cannot leave.
        debug_assert!(state.iter().any(|&word| word != 0));
        Prng { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform number in `0..bound` (`bound > 0`), by multiply-shift (bias below 2^-32 for
    /// the small bounds the simulator uses).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0)");
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }

    /// A uniform number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "between({low}, {high})");
        low + self.below(high - low + 1)
    }

    /// True with probability `ppm` parts per million.
    pub fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(1_000_000) < ppm as u64
    }

    /// A uniformly chosen element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A random non-zero 64-bit value (for client ids and nonces, where 0 is reserved).
    pub fn nonzero(&mut self) -> u64 {
        loop {
            let value = self.next_u64();
            if value != 0 {
                return value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_reproduces_its_sequence() {
        let mut a = Prng::new(42);
        let mut b = Prng::new(42);
        let mut c = Prng::new(43);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..100).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn seed_zero_is_usable() {
        let mut prng = Prng::new(0);
        let values: Vec<u64> = (0..8).map(|_| prng.next_u64()).collect();
        assert!(values.iter().all(|&v| v != 0));
    }

    #[test]
    fn bounded_draws_stay_in_bounds_and_cover_them() {
        let mut prng = Prng::new(7);
        let mut seen = [0u32; 6];
        for _ in 0..6000 {
            let x = prng.between(10, 15);
            assert!((10..=15).contains(&x));
            seen[(x - 10) as usize] += 1;
        }
        assert!(seen.iter().all(|&count| count > 800), "{seen:?}");
        let hits = (0..100_000).filter(|_| prng.chance(250_000)).count();
        assert!((23_000..27_000).contains(&hits), "{hits}");
        assert!(!(0..1000).any(|_| prng.chance(0)));
        assert!((0..1000).all(|_| prng.chance(1_000_000)));
    }
}
