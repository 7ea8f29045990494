//! Retry delays: exponential, capped, with jitter.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use crate::rng::Rng;

/// `base * 2^(attempt-1)`, capped at `cap`, then drawn uniformly from its upper half ("equal
/// jitter"): retries of many deliveries that failed together spread out instead of returning as
/// one wave, and no delay is shorter than half the nominal one.
pub(crate) fn delay(base: Duration, cap: Duration, attempt: u32, jitter: &mut Jitter) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    let nominal = base.saturating_mul(1u32 << exponent.min(31)).min(cap);
    let half = nominal / 2;
    half + half.mul_f64(jitter.unit())
}

/// The random source of the jitter: a seeded [`Rng`], from the process's random hasher keys in
/// production and from a chosen seed under the test kit's stepper.
pub(crate) type Jitter = Rng;

/// A jitter source seeded from the process's random hasher keys.
pub(crate) fn jitter_from_entropy() -> Jitter {
    Rng::new(RandomState::new().hash_one(std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_per_attempt_within_their_jitter_band() {
        let mut jitter = Jitter::new(7);
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
        let mut jitter = Jitter::new(1);
        let cap = Duration::from_secs(10);
        for attempt in [10, 40, u32::MAX] {
            assert!(delay(Duration::from_secs(1), cap, attempt, &mut jitter) <= cap);
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut jitter = Jitter::new(42);
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
