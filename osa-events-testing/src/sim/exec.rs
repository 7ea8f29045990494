//! The seeded scheduler: claim loops as futures the simulation polls itself, one at a time, in
//! an order drawn from the seed, with crashes and stalls injected between polls.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::Simulation;
use super::store::lock;

/// One worker: a claim loop, or nothing while crashed.
pub(super) struct Slot {
    pub(super) future: Option<BoxFuture<'static, ()>>,
    /// Set by the loop's waker: a timer it waits on has fired.
    woken: Arc<Flag>,
    /// Started or thawed and not polled since: runnable whatever its waker says.
    fresh: bool,
    pub(super) stalled_until: Option<Instant>,
    pub(super) restart_at: Option<Instant>,
    pub(super) incarnation: u32,
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Slot {
    pub(super) fn new(future: BoxFuture<'static, ()>) -> Self {
        Self {
            // Unconstrained: tokio's cooperative budget belongs to the test's task, which never
            // yields while the simulation runs; once spent, tokio's primitives (the clock's
            // channels) would answer `Pending` and defer their wake-ups to a yield that never
            // comes.
            future: Some(Box::pin(tokio::task::unconstrained(future))),
            woken: Arc::new(Flag(AtomicBool::new(false))),
            fresh: true,
            stalled_until: None,
            restart_at: None,
            incarnation: 0,
        }
    }

    fn runnable(&self) -> bool {
        self.future.is_some()
            && self.stalled_until.is_none()
            && (self.fresh || self.woken.0.load(Ordering::SeqCst))
    }
}

impl Simulation {
    /// Polls worker `w`'s claim loop once, if it is alive and not stalled: it runs until it next
    /// waits (on the fake clock, or in its handler). Returns whether it was polled.
    pub fn poll(&mut self, worker: usize) -> bool {
        let slot = &mut self.slots[worker];
        if slot.stalled_until.is_some() {
            return false;
        }
        let Some(future) = slot.future.as_mut() else {
            return false;
        };
        slot.woken.0.store(false, Ordering::SeqCst);
        slot.fresh = false;
        let waker = Waker::from(Arc::clone(&slot.woken));
        lock(&self.model).current = Some(worker);
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
            future.as_mut().poll(&mut Context::from_waker(&waker))
        }));
        let mut model = lock(&self.model);
        model.current = None;
        match polled {
            Ok(std::task::Poll::Pending) => {}
            Ok(std::task::Poll::Ready(())) => {
                model.violation(format!("the claim loop of w{worker} returned"));
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "a non-string panic".into());
                model.violation(format!("the claim loop of w{worker} panicked: {message}"));
                drop(model);
                self.slots[worker].future = None;
            }
        }
        true
    }

    /// Crashes worker `w`: its claim loop is dropped mid-flight, as a killed process would stop.
    /// It releases nothing; its claims expire after the claim timeout. It stays down until
    /// [`restart`](Self::restart).
    pub fn crash(&mut self, worker: usize) {
        let future = self.slots[worker].future.take();
        self.slots[worker].stalled_until = None;
        // Dropped outside the model's lock: the handler calls it ends report to the model.
        drop(future);
        let mut model = lock(&self.model);
        model.healthy[worker] = false;
        model.stats.crashes += 1;
        model.log(Some(worker), "crashed");
    }

    /// Restarts a crashed worker `w` with a fresh claim loop (a new process).
    pub fn restart(&mut self, worker: usize) {
        let slot = &mut self.slots[worker];
        if slot.future.is_some() {
            return;
        }
        slot.incarnation += 1;
        slot.restart_at = None;
        let name = format!("sim/w{worker}.{}", slot.incarnation);
        let seed = self.seed ^ ((worker as u64) << 32) ^ u64::from(slot.incarnation);
        let future = self
            .stepper
            .claim_loop(&self.handler, &name, seed)
            .expect("the simulated handler is the stepper's");
        *slot = Slot {
            incarnation: slot.incarnation,
            ..Slot::new(future)
        };
        lock(&self.model).log(Some(worker), "restarted");
    }

    /// Stalls worker `w` for `duration` of fake time: it is not polled, so neither its handler
    /// nor its heartbeat runs (a GC pause, a frozen VM, a network partition). Its claims may
    /// expire and be taken over meanwhile; when it resumes, its late writes must be refused.
    pub fn stall(&mut self, worker: usize, duration: Duration) {
        let until = self.clock.now() + duration;
        self.slots[worker].stalled_until = Some(until);
        let mut model = lock(&self.model);
        model.healthy[worker] = false;
        model.stats.stalls += 1;
        model.log(
            Some(worker),
            format!("stalled for {}ms", duration.as_millis()),
        );
    }

    /// One scheduling decision: polls a runnable worker drawn from the seed (or, with faults
    /// enabled and the draw so deciding, crashes or stalls a worker that holds claims); when none
    /// is runnable, moves fake time to the next timer, thaw or restart. Returns `false` when
    /// nothing can ever happen again.
    pub fn step(&mut self) -> bool {
        lock(&self.model).step += 1;
        self.thaw_and_restart();
        let runnable: Vec<usize> = (0..self.slots.len())
            .filter(|&w| self.slots[w].runnable())
            .collect();
        if runnable.is_empty() {
            return self.advance();
        }
        if self.faults_enabled && self.inject_fault() {
            return true;
        }
        let worker = runnable[self.rng.index(runnable.len())];
        self.poll(worker);
        true
    }

    fn inject_fault(&mut self) -> bool {
        let crash = self.rng.chance(self.faults.crash);
        let stall = !crash && self.rng.chance(self.faults.stall);
        if !crash && !stall {
            return false;
        }
        let victims: Vec<usize> = {
            let model = lock(&self.model);
            (0..self.slots.len())
                .filter(|&w| {
                    let slot = &self.slots[w];
                    slot.future.is_some() && slot.stalled_until.is_none() && model.holds_claims(w)
                })
                .collect()
        };
        if victims.is_empty() {
            return false;
        }
        let victim = victims[self.rng.index(victims.len())];
        let timeout = self.claim_timeout;
        if crash {
            self.crash(victim);
            let down = self.rng.duration(Duration::ZERO..timeout * 2);
            self.slots[victim].restart_at = Some(self.clock.now() + down);
        } else {
            let pause = self.rng.duration(timeout / 2..timeout * 3);
            self.stall(victim, pause);
        }
        true
    }

    fn thaw_and_restart(&mut self) {
        let now = self.clock.now();
        for worker in 0..self.slots.len() {
            let slot = &mut self.slots[worker];
            if slot.stalled_until.is_some_and(|until| until <= now) {
                slot.stalled_until = None;
                slot.fresh = true;
                lock(&self.model).log(Some(worker), "resumed");
            }
            if self.slots[worker].restart_at.is_some_and(|at| at <= now) {
                self.restart(worker);
            }
        }
    }

    /// Moves fake time to the earliest timer deadline, thaw or restart.
    fn advance(&mut self) -> bool {
        let next = self
            .slots
            .iter()
            .flat_map(|slot| [slot.stalled_until, slot.restart_at])
            .flatten()
            .chain(self.clock.next_deadline())
            .min();
        let Some(next) = next else { return false };
        self.clock.advance_to(next.max(self.clock.now()));
        lock(&self.model).log(None, "time passes");
        true
    }
}
