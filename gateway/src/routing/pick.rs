//! Random choices for the weighted strategy.
//!
//! Picks need uniform randomness, not cryptographic randomness, and must
//! not take a lock per request: a process-wide SplitMix64 sequence advanced
//! with one atomic add serves every thread. Tests drive the pure functions
//! with a seeded [`SplitMix64`].

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 generator (Steele, Lea and Flood), small and well mixed.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next number of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A random number from the process-wide sequence, seeded from the
/// standard library's per-process random hasher keys.
pub fn random_u64() -> u64 {
    static STATE: OnceLock<AtomicU64> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        AtomicU64::new(h.finish())
    });
    mix(state
        .fetch_add(GOLDEN, Ordering::Relaxed)
        .wrapping_add(GOLDEN))
}

/// The index picked with probability proportional to its weight, given a
/// uniform random `r`; `None` when every weight is 0.
pub fn weighted_index(weights: &[u32], r: u64) -> Option<usize> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    // Multiply-shift maps r onto 0..total without the bias of `r % total`
    // worth mentioning for small totals, and without a division.
    let mut target = ((u128::from(r) * u128::from(total)) >> 64) as u64;
    for (i, w) in weights.iter().enumerate() {
        let w = u64::from(*w);
        if target < w {
            return Some(i);
        }
        target -= w;
    }
    None
}

/// `items` (an id and a weight each) in a random order in which heavier
/// items tend to come first: weighted sampling without replacement. Items
/// of weight 0 (standbys) follow, in their given order.
pub fn weighted_order<T: Copy>(items: &[(T, u32)], mut rng: impl FnMut() -> u64) -> Vec<T> {
    let mut rest: Vec<(T, u32)> = items.iter().copied().filter(|(_, w)| *w > 0).collect();
    let mut out = Vec::with_capacity(items.len());
    while !rest.is_empty() {
        let weights: Vec<u32> = rest.iter().map(|(_, w)| *w).collect();
        let Some(i) = weighted_index(&weights, rng()) else {
            break;
        };
        out.push(rest.remove(i).0);
    }
    out.extend(items.iter().filter(|(_, w)| *w == 0).map(|(t, _)| *t));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // First outputs of SplitMix64 seeded with 1234567 (reference
        // implementation by Vigna).
        let mut g = SplitMix64(1234567);
        assert_eq!(g.next_u64(), 6457827717110365317);
        assert_eq!(g.next_u64(), 3203168211198807973);
    }

    #[test]
    fn weighted_index_covers_the_range_exactly() {
        let w = [3, 1];
        assert_eq!(weighted_index(&w, 0), Some(0));
        // r maps to floor(r * 4 / 2^64): below 3/4 of the range is index 0.
        assert_eq!(weighted_index(&w, (3 << 62) - 1), Some(0));
        assert_eq!(weighted_index(&w, 3 << 62), Some(1));
        assert_eq!(weighted_index(&w, u64::MAX), Some(1));
        assert_eq!(weighted_index(&[0, 0], 5), None);
        assert_eq!(weighted_index(&[0, 2], 0), Some(1));
        assert_eq!(weighted_index(&[], 0), None);
    }

    #[test]
    fn weighted_picks_follow_the_weights() {
        let mut g = SplitMix64(42);
        let w = [6, 3, 1, 0];
        let mut counts = [0u32; 4];
        let n = 100_000;
        for _ in 0..n {
            counts[weighted_index(&w, g.next_u64()).unwrap()] += 1;
        }
        // Expected 60000, 30000, 10000, 0; the binomial standard deviation
        // is under 160, so 1000 is more than six of them.
        for (c, expect) in counts.iter().zip([60_000i64, 30_000, 10_000, 0]) {
            assert!((i64::from(*c) - expect).abs() < 1000, "{counts:?}");
        }
        assert_eq!(counts[3], 0);
    }

    #[test]
    fn weighted_order_puts_standbys_last_and_lists_everything_once() {
        let mut g = SplitMix64(7);
        let items = [("a", 5), ("standby", 0), ("b", 1), ("c", 1)];
        let mut first_a = 0;
        for _ in 0..1000 {
            let order = weighted_order(&items, || g.next_u64());
            assert_eq!(order.len(), 4);
            assert_eq!(order[3], "standby");
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, ["a", "b", "c", "standby"]);
            first_a += usize::from(order[0] == "a");
        }
        // a comes first with probability 5/7 (714 of 1000, sd 14).
        assert!((600..830).contains(&first_a), "{first_a}");
    }

    #[test]
    fn the_shared_sequence_varies() {
        let a = random_u64();
        let b = random_u64();
        assert_ne!(a, b);
    }
}
