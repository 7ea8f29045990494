//! [`Probe`]: what a simulated handler calls, so the simulation sees and steers every call.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::{Clock, Ctx, HandlerError};

use super::model::{Model, Planned};
use super::store::lock;
use crate::FakeClock;

/// The resource a handler under [`Simulation`](super::Simulation) takes as `State<Probe>` and
/// calls once per event: [`call`](Self::call) tells the simulation which worker handles which
/// delivery, checks that no other live claim is handling it at the same time, takes a seeded
/// amount of fake time, and ends with a seeded outcome (see [`Behaviour`]).
///
/// # Examples
///
/// ```
/// use osa_events::prelude::*;
/// use osa_events_testing::sim::Probe;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize)]
/// # #[event(name = "sim.job")]
/// # struct Job { n: u32 }
///
/// #[event_handler(name = "sim.job", batch = 3, claim_timeout = "30s")]
/// async fn job(_job: Job, probe: State<Probe>, ctx: Ctx) -> Result<(), HandlerError> {
///     probe.call(&ctx).await
/// }
/// ```
#[derive(Clone)]
pub struct Probe {
    model: Arc<Mutex<Model>>,
    clock: FakeClock,
}

/// How probed handler calls behave: each call draws its duration and its outcome from the
/// simulation's seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// How long a call takes, in fake time, drawn uniformly from this range. Make it longer
    /// than the handler's `claim_timeout` for heartbeats to matter.
    pub durations: Range<Duration>,
    /// The probability that a call fails with a retryable error.
    pub retry: f64,
    /// The probability that a call fails with a permanent error (dead letter at once).
    pub permanent: f64,
}

impl Default for Behaviour {
    /// Calls of up to 90 s; one in five retried, one in fifty dead-lettered.
    fn default() -> Self {
        Self {
            durations: Duration::ZERO..Duration::from_secs(90),
            retry: 0.2,
            permanent: 0.02,
        }
    }
}

impl Probe {
    pub(super) fn new(model: Arc<Mutex<Model>>, clock: FakeClock) -> Self {
        Self { model, clock }
    }

    /// One handler call for the event of `ctx`: recorded and checked on entry, then it sleeps
    /// its drawn duration on the fake clock and ends with its drawn outcome.
    ///
    /// # Errors
    ///
    /// The drawn failure: a retryable or a permanent [`HandlerError`].
    pub async fn call(&self, ctx: &Ctx) -> Result<(), HandlerError> {
        let (position, attempt) = (ctx.position(), ctx.attempt());
        let (who, plan) = lock(&self.model).enter(position, attempt);
        let mut inside = Inside {
            model: &self.model,
            who,
            position,
            attempt,
            ended: false,
        };
        self.clock.sleep(plan.duration).await;
        inside.end(plan.outcome);
        match plan.outcome {
            Planned::Ok => Ok(()),
            Planned::Retry => Err(HandlerError::retry(format!(
                "simulated retryable failure of {position}@{attempt}"
            ))),
            Planned::Permanent => Err(HandlerError::permanent(format!(
                "simulated permanent failure of {position}@{attempt}"
            ))),
        }
    }
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe").finish_non_exhaustive()
    }
}

/// A call under way; dropped unfinished when its worker crashes.
struct Inside<'a> {
    model: &'a Mutex<Model>,
    who: Option<usize>,
    position: i64,
    attempt: u32,
    ended: bool,
}

impl Inside<'_> {
    fn end(&mut self, outcome: Planned) {
        self.ended = true;
        lock(self.model).exit(self.who, self.position, self.attempt, Some(outcome));
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        if !self.ended {
            lock(self.model).exit(self.who, self.position, self.attempt, None);
        }
    }
}
