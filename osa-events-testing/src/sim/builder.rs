//! [`SimulationBuilder`] and [`Faults`]: setting a simulation up.

use std::sync::{Arc, Mutex};

use osa_events::{Resources, Runtime};

use super::exec::Slot;
use super::model::Model;
use super::store::{Observed, lock};
use super::{Behaviour, Probe, Rng, Simulation};
use crate::{FakeClock, InMemoryStore};

/// Configures a [`Simulation`]; from [`Simulation::builder`].
#[derive(Debug)]
pub struct SimulationBuilder {
    handler: String,
    seed: u64,
    workers: usize,
    resources: Resources,
    behaviour: Behaviour,
    faults: Faults,
    steps: usize,
}

/// How often the scheduler injects a fault into a worker that holds claims, per scheduling step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// The probability of a crash: the worker's claim loop is dropped, and restarted after up to
    /// two claim timeouts.
    pub crash: f64,
    /// The probability of a stall: the worker is not polled for half a claim timeout to three.
    pub stall: f64,
}

impl Faults {
    /// No faults: only healthy workers racing.
    pub const NONE: Self = Self {
        crash: 0.0,
        stall: 0.0,
    };
}

impl Default for Faults {
    /// One crash and two stalls in a hundred steps.
    fn default() -> Self {
        Self {
            crash: 0.01,
            stall: 0.02,
        }
    }
}

impl SimulationBuilder {
    pub(super) fn new(handler: &str) -> Self {
        Self {
            handler: handler.to_owned(),
            seed: 0,
            workers: 3,
            resources: Resources::new(),
            behaviour: Behaviour::default(),
            faults: Faults::default(),
            steps: 2_000,
        }
    }

    /// The seed of every choice (default 0).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// How many claim loops race over the subscription (default 3).
    ///
    /// # Panics
    ///
    /// When `workers` is 0.
    #[must_use]
    pub fn workers(mut self, workers: usize) -> Self {
        assert!(workers > 0, "a simulation needs at least one worker");
        self.workers = workers;
        self
    }

    /// The resources of the handler; the simulation adds its [`Probe`].
    #[must_use]
    pub fn resources(mut self, resources: Resources) -> Self {
        self.resources = resources;
        self
    }

    /// How probed handler calls behave (default [`Behaviour::default`]).
    #[must_use]
    pub fn behaviour(mut self, behaviour: Behaviour) -> Self {
        self.behaviour = behaviour;
        self
    }

    /// How often [`Simulation::run`] injects crashes and stalls (default [`Faults::default`]).
    #[must_use]
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// How many scheduling steps [`Simulation::run`] takes with faults before it settles
    /// (default 2,000).
    #[must_use]
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    /// Builds the handler as the runtime does, on a fresh store and clock, registers its
    /// subscription, and creates the workers' claim loops (not yet polled).
    ///
    /// # Errors
    ///
    /// As for [`RuntimeBuilder::build`](osa_events::RuntimeBuilder::build): no such handler, or a
    /// resource it needs is missing.
    pub async fn build(self) -> osa_events::Result<Simulation> {
        let clock = FakeClock::new();
        let store = InMemoryStore::with_clock(clock.clone());
        let model = Model::new(clock.clone(), self.seed, self.workers, self.behaviour);
        let model = Arc::new(Mutex::new(model));
        let observed = Observed {
            inner: store.clone(),
            model: Arc::clone(&model),
        };
        let probe = Probe::new(Arc::clone(&model), clock.clone());
        let stepper = Runtime::builder(observed)
            .clock(clock.clone())
            .resources(self.resources.with(probe))
            .only([self.handler.as_str()])
            .handle_signals(false)
            .instance_name("sim")
            .build()?
            .into_stepper(self.seed)
            .await?;
        let (spec, subscription) = stepper
            .handlers()
            .next()
            .map(|(spec, subscription)| (*spec, subscription))
            .ok_or(osa_events::Error::NoHandlers)?;
        lock(&model).max_attempts = spec.retries().saturating_add(1);
        let slots = (0..self.workers)
            .map(|worker| {
                let seed = self.seed ^ ((worker as u64) << 32);
                let name = format!("sim/w{worker}.0");
                stepper
                    .claim_loop(&self.handler, &name, seed)
                    .map(Slot::new)
            })
            .collect::<osa_events::Result<Vec<_>>>()?;
        Ok(Simulation {
            seed: self.seed,
            handler: self.handler,
            stepper,
            store,
            clock,
            model,
            slots,
            rng: Rng::fork(self.seed, 1),
            faults: self.faults,
            faults_enabled: false,
            claim_timeout: spec.claim_timeout(),
            subscription,
            steps: self.steps,
        })
    }
}
