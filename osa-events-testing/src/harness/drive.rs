//! Driving the claim loops: [`Harness::step`] and [`Harness::drain`].

use std::fmt::Write as _;
use std::pin::pin;
use std::time::Duration;

use osa_events::__private::StepReport;
use tokio::time::Instant;

use super::journal::{attempts_of, seconds};
use super::{Attempt, Harness};
use crate::DeliveryStatus;

/// Scheduler passes a step gets to finish on its own before the harness concludes that it waits
/// on fake time, and advances it.
const SETTLE_YIELDS: usize = 32;
/// Clock advances within one step before the harness concludes its handler never finishes.
const MAX_ADVANCES_PER_STEP: usize = 10_000;
/// Real time a step may wait on something other than the fake clock.
const MAX_REAL_WAIT: Duration = Duration::from_secs(30);

impl Harness {
    /// Runs one iteration of `handler`'s claim loop: claims a batch of its due deliveries (up to
    /// its `batch` option), runs the handler on it, records retries, dead letters and completions,
    /// and returns the attempts, one per claimed delivery. Returns an empty list when nothing
    /// is due (a retry whose backoff has not passed is not due: [`advance`](Self::advance) the
    /// clock, or [`drain`](Self::drain)).
    ///
    /// While the handler waits on fake time, the clock is advanced (see
    /// [Time](Harness#time)). So is a batch handler's `linger`: after a claim of fewer than
    /// `batch` deliveries it waits, as its claim loop would, but nothing can publish during a step,
    /// so the harness moves the clock to the linger's end, where the handler claims once more (a
    /// retry that came due meanwhile, say) and is called with what it holds.
    ///
    /// # Panics
    ///
    /// When the harness runs no handler of that name; when the handler never finishes (after
    /// 10,000 advances of the fake clock, or 30 s of real time waiting on something else).
    pub async fn step(&mut self, handler: &str) -> Vec<Attempt> {
        let handler = self.name(handler);
        let at = self.elapsed();
        let report = self.run_step(handler).await;
        let attempts = attempts_of(handler, at, &report);
        self.journal.extend(attempts.iter().cloned());
        attempts
    }

    /// Steps every handler, in name order, until none has anything due, advancing the fake clock
    /// to the next due delivery (a retry's backoff, an expired claim) whenever all that is left
    /// is waiting. When it returns, every delivery of the harness's handlers is completed or dead.
    ///
    /// # Panics
    ///
    /// When it does not settle within the harness's bound of claim-loop iterations
    /// ([`HarnessBuilder::max_steps`](super::HarnessBuilder::max_steps), 10,000 by default), e.g.
    /// because handlers keep publishing new work; the message shows the open deliveries and the
    /// last attempts. As for [`step`](Self::step) when a handler never finishes. When a handler
    /// fails fatally ([`HandlerError::fatal`](osa_events::HandlerError::fatal)): a runtime would
    /// stop there, and the delivery would come back at once ([`AttemptOutcome::Fatal`](super::AttemptOutcome::Fatal)).
    pub async fn drain(&mut self) {
        let handlers: Vec<&'static str> = self.handler_names().collect();
        let mut steps = 0;
        loop {
            let mut progressed = false;
            for handler in &handlers {
                if steps >= self.max_steps {
                    self.never_settled(steps);
                }
                steps += 1;
                let attempts = self.step(handler).await;
                if let Some(fatal) = attempts.iter().find(|attempt| attempt.is_fatal()) {
                    panic!(
                        "Harness::drain stopped: {}; a runtime would stop here (use \
                         `Harness::step` to test a fatal error)",
                        fatal.error().unwrap_or_default()
                    );
                }
                progressed |= !attempts.is_empty();
            }
            if progressed {
                continue;
            }
            match self.next_due() {
                Some(due) if due > self.clock.now() => self.clock.advance_to(due),
                // Due now yet not claimed cannot happen; the step bound ends it if it does.
                Some(_) => {}
                None => return,
            }
        }
    }

    /// Runs one stepper step, advancing fake time while it waits on it.
    async fn run_step(&mut self, handler: &'static str) -> StepReport {
        let clock = self.clock.clone();
        let mut step = pin!(self.stepper.step(handler));
        let mut advances = 0;
        let mut waiting_since: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                biased;
                report = &mut step => {
                    return report.unwrap_or_else(|error| {
                        panic!("the in-memory store failed a step of `{handler}`: {error}")
                    });
                }
                () = settle() => {}
            }
            // No progress in many scheduler passes: the step waits on a timer (a heartbeat, the
            // handler's timeout, a sleep on this clock), or on the world outside.
            match clock.next_deadline() {
                Some(deadline) => {
                    advances += 1;
                    assert!(
                        advances <= MAX_ADVANCES_PER_STEP,
                        "a step of `{handler}` did not finish after {MAX_ADVANCES_PER_STEP} advances \
                         of the fake clock (at +{}): its handler waits on something that never comes",
                        seconds(self.clock.now() - self.started)
                    );
                    waiting_since = None;
                    clock.advance_to(deadline);
                }
                None => {
                    let since = *waiting_since.get_or_insert_with(std::time::Instant::now);
                    assert!(
                        since.elapsed() < MAX_REAL_WAIT,
                        "a step of `{handler}` waited {MAX_REAL_WAIT:?} of real time on something \
                         other than the fake clock"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }

    /// The earliest `run_at` of any open (pending or claimed) delivery of the harness's handlers.
    fn next_due(&self) -> Option<Instant> {
        self.handlers
            .iter()
            .flat_map(|(_, subscription)| self.store.deliveries(*subscription))
            .filter(|delivery| delivery.status != DeliveryStatus::Dead)
            .map(|delivery| delivery.run_at)
            .min()
    }

    fn never_settled(&self, steps: usize) -> ! {
        let mut message = format!(
            "Harness::drain did not settle after {steps} claim-loop iterations (fake time +{}); \
             raise the bound with `HarnessBuilder::max_steps` if that much work is expected.\n\
             open deliveries:\n",
            seconds(self.elapsed())
        );
        for delivery in self.open_deliveries().iter().take(20) {
            let _ = writeln!(
                message,
                "  subscription {}  position {}  {:?}  attempts {}",
                delivery.subscription.0, delivery.position, delivery.status, delivery.attempts
            );
        }
        message.push_str("last attempts:\n");
        let tail = self.journal.len().saturating_sub(20);
        for attempt in &self.journal[tail..] {
            let _ = writeln!(message, "  {attempt}");
        }
        panic!("{message}");
    }
}

/// Yields to the scheduler [`SETTLE_YIELDS`] times.
async fn settle() {
    for _ in 0..SETTLE_YIELDS {
        tokio::task::yield_now().await;
    }
}
