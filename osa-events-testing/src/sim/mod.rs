//! Deterministic concurrency tests: several claim loops of one handler, interleaved by a seeded
//! scheduler, with crashes and stalls, every step checked against a model of the claim protocol.
//!
//! tokio does not let a test choose which task runs next, so a race found once may never show
//! again. A [`Simulation`] takes the scheduling away from tokio: it builds the handler's real claim
//! loops (the runtime's own code: claim, heartbeat, handler calls, fenced writes) on an
//! [`InMemoryStore`] and a [`FakeClock`], and polls them itself, one at a time, choosing which
//! one with a seeded [`Rng`]. Time moves only when every live worker waits on it, to the next
//! timer. The seed decides everything else too: which worker goes first, how long each handler
//! call takes and how it ends ([`Behaviour`]), which worker crashes or stalls and for how long
//! ([`Faults`]), and the retry jitter. So a failing interleaving is replayed by its seed, step by
//! step, and the same seed always gives the same [trace](SimReport::trace).
//!
//! # What is checked
//!
//! Every store call the workers make is checked against a model of the claim protocol, at the
//! moment it returns:
//!
//! - a delivery is never claimed while another claim of it is live (unexpired), nor before its
//!   backoff ends, nor after it was completed or dead, and each claim counts one attempt;
//! - a fenced write (complete, fail, extend, release) takes exactly the claims that are still
//!   current: a worker whose claim expired and was taken over is refused;
//! - a worker that has not stalled never loses a claim: its heartbeat extends it in time, however
//!   long its handler takes;
//! - a delivery is completed only after a successful handler call of that claim.
//!
//! Every handler call that goes through the [`Probe`] is checked too: no delivery is handled by
//! two workers at once unless one of them has stalled or crashed (whose late writes the store
//! then refuses), and none past its last allowed attempt. At the end the simulation lets the
//! system settle without faults and checks that every event was completed or dead-lettered.
//!
//! A violation panics with the seed and the end of the trace.
//!
//! # Examples
//!
//! ```
//! use osa_events::prelude::*;
//! use osa_events_testing::sim::{Probe, Simulation};
//! # use serde::{Deserialize, Serialize};
//!
//! #[derive(Event, Serialize, Deserialize)]
//! #[event(name = "sim.doc.job")]
//! struct Job { n: u32 }
//!
//! #[event_handler(name = "sim.doc.job", batch = 3, claim_timeout = "30s", backoff = "5s")]
//! async fn job(_job: Job, probe: State<Probe>, ctx: Ctx) -> Result<(), HandlerError> {
//!     probe.call(&ctx).await
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), osa_events::Error> {
//! for seed in 0..10 {
//!     let sim = Simulation::builder("sim.doc.job").seed(seed).workers(3).build().await?;
//!     for n in 0..12 {
//!         sim.publish(&Job { n });
//!     }
//!     let report = sim.run(); // panics with the seed and the trace on a violation
//!     assert!(report.stats.completed + report.stats.dead == 12);
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::__private::Stepper;
use osa_events::Event;
use osa_events::store::SubscriptionId;
use uuid::Uuid;

use crate::{DeliveryStatus, FakeClock, InMemoryStore, Rng};

mod builder;
mod exec;
mod model;
mod probe;
mod store;

pub use builder::{Faults, SimulationBuilder};
pub use probe::{Behaviour, Probe};

use exec::Slot;
use model::Model;
use store::lock;

/// Several claim loops of one handler under a seeded scheduler; see the [module docs](self).
pub struct Simulation {
    seed: u64,
    handler: String,
    stepper: Stepper,
    store: InMemoryStore,
    clock: FakeClock,
    model: Arc<Mutex<Model>>,
    slots: Vec<Slot>,
    rng: Rng,
    faults: Faults,
    faults_enabled: bool,
    claim_timeout: Duration,
    subscription: SubscriptionId,
    steps: usize,
}

/// Counts of what happened in a simulation, for tests to check that a scenario was exercised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Deliveries claimed.
    pub claims: u64,
    /// Claims of deliveries whose previous claim had expired unfinished.
    pub reclaims: u64,
    /// Heartbeats (extend calls).
    pub extends: u64,
    /// Completions the store accepted.
    pub completed: u64,
    /// Completions the store refused: late, their claim taken over.
    pub refused_completions: u64,
    /// Failures recorded as retries.
    pub retried: u64,
    /// Failures recorded as dead letters.
    pub dead: u64,
    /// Failures the store refused: late, their claim taken over.
    pub refused_failures: u64,
    /// Workers crashed.
    pub crashes: u64,
    /// Workers stalled.
    pub stalls: u64,
    /// Handler calls that overlapped a call for the same delivery by a stalled or crashed worker.
    pub stale_overlaps: u64,
    /// Handler calls through the [`Probe`].
    pub handler_calls: u64,
}

/// The record of a simulation that kept every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    /// The seed it ran with.
    pub seed: u64,
    /// Scheduling steps taken, settling included.
    pub steps: u64,
    /// One line per event: step, fake time, worker, what happened. The same seed and set-up
    /// give the same trace.
    pub trace: Vec<String>,
    /// What happened, counted.
    pub stats: SimStats,
}

impl Simulation {
    /// Scheduling steps [`finish`](Self::finish) allows for settling before it reports that the
    /// system does not settle.
    pub const SETTLE_STEPS: usize = 200_000;

    /// Starts configuring a simulation of the registered handler named `handler`.
    pub fn builder(handler: &str) -> SimulationBuilder {
        SimulationBuilder::new(handler)
    }

    /// Publishes `event`, as a committed [`osa_events::publish`] would, and returns its id.
    ///
    /// # Panics
    ///
    /// When the event cannot be serialized.
    #[track_caller]
    pub fn publish<E: Event>(&self, event: &E) -> Uuid {
        self.store
            .publish(event)
            .unwrap_or_else(|error| panic!("Simulation::publish: {error}"))
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The store under the workers (without the model's checks: calls made here are not seen).
    pub fn store(&self) -> &InMemoryStore {
        &self.store
    }

    /// The fake clock.
    pub fn clock(&self) -> &FakeClock {
        &self.clock
    }

    /// The handler's subscription.
    pub fn subscription(&self) -> SubscriptionId {
        self.subscription
    }

    /// What happened so far, counted.
    pub fn stats(&self) -> SimStats {
        lock(&self.model).stats.clone()
    }

    /// The trace so far.
    pub fn trace(&self) -> Vec<String> {
        lock(&self.model).trace.clone()
    }

    /// Takes scheduling steps until `done` holds, checking after every step; returns whether it
    /// held within `max_steps`.
    ///
    /// # Panics
    ///
    /// On a violation, with the seed and the trace.
    pub fn run_until(&mut self, max_steps: usize, mut done: impl FnMut(&Self) -> bool) -> bool {
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            let progressed = self.step();
            self.check();
            if !progressed {
                return done(self);
            }
        }
        done(self)
    }

    /// Runs the configured number of steps with faults, then [`finish`](Self::finish)es.
    ///
    /// # Panics
    ///
    /// On a violation, with the seed and the trace.
    pub fn run(mut self) -> SimReport {
        self.faults_enabled = true;
        let steps = self.steps;
        self.run_until(steps, |_| false);
        self.finish()
    }

    /// Lets the system settle without faults (restarting crashed workers; stalled ones resume in
    /// their time) until every delivery is completed or dead, checks the end state, and reports.
    ///
    /// # Panics
    ///
    /// On a violation, or when it does not settle within [`SETTLE_STEPS`](Self::SETTLE_STEPS).
    pub fn finish(mut self) -> SimReport {
        self.faults_enabled = false;
        for worker in 0..self.slots.len() {
            self.restart(worker);
        }
        let settled = self.run_until(Self::SETTLE_STEPS, |sim| sim.open_deliveries() == 0);
        if !settled {
            lock(&self.model).violation(format!(
                "{} deliveries still open after {} settling steps",
                self.open_deliveries(),
                Self::SETTLE_STEPS
            ));
        }
        self.check_end_state();
        self.check();
        let model = lock(&self.model);
        SimReport {
            seed: self.seed,
            steps: model.step,
            trace: model.trace.clone(),
            stats: model.stats.clone(),
        }
    }

    fn open_deliveries(&self) -> usize {
        self.store
            .count(self.subscription, Some(DeliveryStatus::Pending))
            + self
                .store
                .count(self.subscription, Some(DeliveryStatus::Claimed))
    }

    /// Every delivery ever created was completed or dead, never both, and the store agrees.
    fn check_end_state(&self) {
        let dead_in_store: Vec<i64> = self
            .store
            .dead_letters(self.subscription)
            .iter()
            .map(|delivery| delivery.position)
            .collect();
        let mut model = lock(&self.model);
        let dead_in_model: Vec<i64> = model.dead.iter().copied().collect();
        if dead_in_store != dead_in_model {
            model.violation(format!(
                "dead letters in the store {dead_in_store:?}, in the model {dead_in_model:?}"
            ));
        }
        if let Some(both) = model.done.intersection(&model.dead).next() {
            let both = *both;
            model.violation(format!("position {both} was both completed and dead"));
        }
        let finished = model.done.len() + model.dead.len();
        let delivered = self.delivered_events();
        if finished != delivered {
            model.violation(format!(
                "{delivered} events were delivered, but only {finished} completed or dead"
            ));
        }
    }

    /// How many logged events the handler's subscription received.
    fn delivered_events(&self) -> usize {
        let Some((spec, _)) = self.stepper.handlers().next() else {
            return 0;
        };
        self.store
            .events()
            .iter()
            .filter(|event| {
                event.event_type == spec.event_type()
                    && spec
                        .routing_key()
                        .is_none_or(|key| event.routing_key.as_deref() == Some(key))
            })
            .count()
    }

    /// Panics if a rule was broken, with the seed and the end of the trace.
    ///
    /// # Panics
    ///
    /// When a violation was recorded.
    pub fn check(&self) {
        let model = lock(&self.model);
        if model.violations.is_empty() {
            return;
        }
        const TAIL: usize = 80;
        let skipped = model.trace.len().saturating_sub(TAIL);
        let mut message = format!(
            "simulation of `{}` with seed {} broke the claim protocol at step {}:\n",
            self.handler, self.seed, model.step
        );
        for violation in &model.violations {
            message.push_str(&format!("  - {violation}\n"));
        }
        message.push_str(&format!(
            "replay: the same set-up with `.seed({})`; trace (last {} of {} lines):\n",
            self.seed,
            model.trace.len() - skipped,
            model.trace.len()
        ));
        for line in &model.trace[skipped..] {
            message.push_str(line);
            message.push('\n');
        }
        drop(model);
        panic!("{message}");
    }
}

impl fmt::Debug for Simulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulation")
            .field("handler", &self.handler)
            .field("seed", &self.seed)
            .field("workers", &self.slots.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
