//! [`Rng`]: a tiny seeded random source (SplitMix64): the runtime's retry jitter, and the test
//! kit's schedules and randomized tests, which repeat from their seed.

use std::ops::Range;
use std::time::Duration;

/// A seeded pseudo-random source: SplitMix64 (Steele, Lea and Flood, 2014). Small, fast, and the
/// same sequence for the same seed on every platform. The runtime draws its retry jitter from one;
/// `osa-events-testing` re-exports it as `osa_events_testing::Rng`, for its simulation's schedule
/// and for randomized tests, so that a failing run is replayed from its seed.
///
/// # Examples
///
/// ```
/// use osa_events_testing::Rng;
///
/// let mut a = Rng::new(42);
/// let mut b = Rng::new(42);
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.below(6) < 6);
/// ```
///
/// A test that picks a new seed on every run, prints it, and replays it when the variable is set:
///
/// ```
/// use osa_events_testing::Rng;
///
/// let mut rng = Rng::from_env_or_random("MY_TEST_SEED"); // prints `MY_TEST_SEED=<seed>`
/// let seed = rng.seed();
/// assert_eq!(Rng::new(seed).next_u64(), rng.next_u64());
/// ```
#[derive(Debug, Clone)]
pub struct Rng {
    seed: u64,
    state: u64,
}

impl Rng {
    /// A source that yields the same sequence for the same `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed, state: seed }
    }

    /// A source seeded from the environment variable `var` when it is set, else from the clock;
    /// either way it prints `var=<seed>` on stdout, so a failing run can be replayed by setting
    /// `var` to that seed.
    ///
    /// The test harness captures stdout and shows it with a failing test's output, so the seed
    /// appears next to the failure; put [`seed`](Self::seed) in assertion messages too.
    ///
    /// # Panics
    ///
    /// When `var` is set to something other than a `u64`: the run would not be the one asked for.
    pub fn from_env_or_random(var: &str) -> Self {
        let seed = seed_from(var, std::env::var(var).ok().as_deref());
        println!("{var}={seed} (set {var} to this value to replay the run)");
        Self::new(seed)
    }

    /// The seed this source was made from (for a [`fork`](Self::fork), the derived one):
    /// [`Rng::new`] with it yields the same sequence again.
    pub fn seed(&self) -> u64 {
        self.seed
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

    /// A fraction in `0.0..1.0`, from 53 random bits (every value a multiple of 2⁻⁵³).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `true` with probability `p` (clamped to `0.0..=1.0`).
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p.clamp(0.0, 1.0)
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

/// The seed `var`'s `value` names, or one from the clock when it is unset.
fn seed_from(var: &str, value: Option<&str>) -> u64 {
    match value {
        Some(value) => value.trim().parse().unwrap_or_else(|_| {
            panic!("{var}={value}: expected a seed, a whole number in 0..2^64")
        }),
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64),
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
    fn units_are_fractions_spread_over_zero_to_one() {
        let mut rng = Rng::new(5);
        let units: Vec<f64> = (0..4000).map(|_| rng.unit()).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
        let low = units.iter().filter(|&&u| u < 0.5).count();
        assert!((1800..2200).contains(&low), "{low} of 4000 below 0.5");
    }

    #[test]
    fn forks_are_independent_streams() {
        assert_ne!(Rng::fork(3, 1).next_u64(), Rng::fork(3, 2).next_u64());
        assert_eq!(Rng::fork(3, 1).next_u64(), Rng::fork(3, 1).next_u64());
    }

    #[test]
    fn the_seed_replays_the_sequence() {
        let mut first = Rng::fork(9, 4);
        let mut again = Rng::new(first.seed());
        assert_eq!(first.next_u64(), again.next_u64());
        assert_eq!(Rng::new(11).seed(), 11);
    }

    #[test]
    fn a_seed_comes_from_the_variable_else_from_the_clock() {
        assert_eq!(seed_from("SEED", Some("42")), 42);
        assert_eq!(seed_from("SEED", Some(" 18446744073709551615\n")), u64::MAX);
        let unset = Rng::from_env_or_random("OSA_EVENTS_TESTING_NEVER_SET_SEED");
        assert_eq!(Rng::new(unset.seed()).next_u64(), unset.clone().next_u64());
    }

    #[test]
    #[should_panic(expected = "SEED=soon: expected a seed")]
    fn a_seed_that_is_not_a_number_is_refused() {
        seed_from("SEED", Some("soon"));
    }
}
