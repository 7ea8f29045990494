//! [`Rng`]: a tiny seeded random source (SplitMix64), so a simulation repeats from its seed.

use std::ops::Range;
use std::time::Duration;

/// A seeded pseudo-random source: SplitMix64 (Steele, Lea and Flood, 2014). Small, fast, and the
/// same sequence for the same seed on every platform, which is all a simulation needs from it.
///
/// # Examples
///
/// ```
/// use osa_events_testing::sim::Rng;
///
/// let mut a = Rng::new(42);
/// let mut b = Rng::new(42);
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.below(6) < 6);
/// ```
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A source that yields the same sequence for the same `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: uniform enough for scheduling, and no division.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// An index into a collection of `len` elements.
    ///
    /// # Panics
    ///
    /// When `len` is 0.
    pub fn index(&mut self, len: usize) -> usize {
        assert!(len > 0, "Rng::index of an empty collection");
        self.below(len as u64) as usize
    }

    /// `true` with probability `p` (clamped to `0.0..=1.0`).
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits as a fraction in [0, 1).
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p.clamp(0.0, 1.0)
    }

    /// A duration in `range`, to the millisecond (`range.start` when the range is empty).
    pub fn duration(&mut self, range: Range<Duration>) -> Duration {
        let span = range.end.saturating_sub(range.start).as_millis();
        let span = u64::try_from(span).unwrap_or(u64::MAX);
        range.start + Duration::from_millis(self.below(span))
    }

    /// An independent source derived from this one's seed and `stream`, for a second sequence
    /// that does not shift when the first is drawn more or less often.
    pub fn fork(seed: u64, stream: u64) -> Self {
        let mut mixer = Self::new(seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03));
        Self::new(mixer.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let a: Vec<u64> = {
            let mut rng = Rng::new(7);
            (0..100).map(|_| rng.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut rng = Rng::new(7);
            (0..100).map(|_| rng.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a[0], Rng::new(8).next_u64());
    }

    #[test]
    fn draws_stay_in_range_and_cover_it() {
        let mut rng = Rng::new(1);
        let mut seen = [0u32; 6];
        for _ in 0..6000 {
            seen[rng.index(6)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        for _ in 0..1000 {
            let d = rng.duration(Duration::from_millis(10)..Duration::from_millis(20));
            assert!(d >= Duration::from_millis(10) && d < Duration::from_millis(20));
        }
        assert_eq!(rng.below(0), 0);
        assert!(!rng.chance(0.0));
        assert!(rng.chance(1.0));
    }

    #[test]
    fn forks_are_independent_streams() {
        assert_ne!(Rng::fork(3, 1).next_u64(), Rng::fork(3, 2).next_u64());
        assert_eq!(Rng::fork(3, 1).next_u64(), Rng::fork(3, 1).next_u64());
    }
}
