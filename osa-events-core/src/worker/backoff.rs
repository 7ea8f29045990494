//! Retry delays: exponential, capped, with jitter.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// `base * 2^(attempt-1)`, capped at `cap`, then drawn uniformly from its upper half ("equal
/// jitter"): retries of many deliveries that failed together spread out instead of returning as
/// one wave, and no delay is shorter than half the nominal one.
pub(crate) fn delay(base: Duration, cap: Duration, attempt: u32, jitter: &mut Jitter) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    let nominal = base.saturating_mul(1u32 << exponent.min(31)).min(cap);
    let half = nominal / 2;
    half + half.mul_f64(jitter.unit())
}

/// A small random source for jitter (SplitMix64). Seeded from the process's random hasher keys;
/// quality needs are modest and a dependency would not earn its compile time.
#[derive(Debug, Clone)]
pub(crate) struct Jitter {
    state: u64,
}

impl Jitter {
    pub(crate) fn from_entropy() -> Self {
        Self::seeded(RandomState::new().hash_one(std::process::id()))
    }

    pub(crate) fn seeded(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A number in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // 53 random bits as a fraction.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_per_attempt_within_their_jitter_band() {
        let mut jitter = Jitter::seeded(7);
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(600);
        for attempt in 1..=6 {
            let nominal = Duration::from_secs(1 << (attempt - 1));
            let d = delay(base, cap, attempt, &mut jitter);
            assert!(
                d >= nominal / 2 && d <= nominal,
                "attempt {attempt}: {d:?} not in [{:?}, {nominal:?}]",
                nominal / 2
            );
        }
    }

    #[test]
    fn delays_are_capped() {
        let mut jitter = Jitter::seeded(1);
        let cap = Duration::from_secs(10);
        for attempt in [10, 40, u32::MAX] {
            assert!(delay(Duration::from_secs(1), cap, attempt, &mut jitter) <= cap);
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut jitter = Jitter::seeded(42);
        let delays: std::collections::BTreeSet<_> = (0..20)
            .map(|_| {
                delay(
                    Duration::from_secs(8),
                    Duration::from_secs(60),
                    1,
                    &mut jitter,
                )
            })
            .collect();
        assert!(
            delays.len() > 15,
            "jitter produced only {} distinct delays",
            delays.len()
        );
    }
}
