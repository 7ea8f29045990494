//! [`HandlerMetrics`]: the counters and histograms of one handler's claim loops.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use metrics::{Counter, Histogram};

use super::{BATCH_SIZE, END_TO_END_LATENCY, HANDLER_DURATION, HANDLER_EVENTS, outcome};
use crate::Clock;
use crate::store::{Delivery, Failure};

/// The metric handles of one handler, resolved once (when its claim loops are built, as the
/// runtime starts running) against the recorder installed then, so recording on the hot path is
/// an atomic add on a handle, never a lookup by name and labels. Counters are added to once per
/// batch and outcome, by the number of deliveries.
#[derive(Clone)]
pub(crate) struct HandlerMetrics {
    completed: Counter,
    retried: Counter,
    dead_lettered: Counter,
    released: Counter,
    deferred: Counter,
    lost: Counter,
    duration: Histogram,
    batch_size: Histogram,
    end_to_end: Histogram,
    /// The runtime's clock, which times the handler calls (so a fake clock gives exact figures).
    clock: Arc<dyn Clock>,
}

impl HandlerMetrics {
    /// The handles of the handler stored as `handler` (its `handler` label), timing calls on
    /// `clock`.
    pub(crate) fn new(handler: &str, clock: Arc<dyn Clock>) -> Self {
        let events = |outcome: &'static str| metrics::counter!(HANDLER_EVENTS, "handler" => handler.to_owned(), "outcome" => outcome);
        let labelled =
            |name: &'static str| metrics::histogram!(name, "handler" => handler.to_owned());
        Self {
            completed: events(outcome::COMPLETED),
            retried: events(outcome::RETRIED),
            dead_lettered: events(outcome::DEAD_LETTERED),
            released: events(outcome::RELEASED),
            deferred: events(outcome::DEFERRED),
            lost: events(outcome::LOST),
            duration: labelled(HANDLER_DURATION),
            batch_size: labelled(BATCH_SIZE),
            end_to_end: labelled(END_TO_END_LATENCY),
            clock,
        }
    }

    /// A non-empty batch of `size` deliveries was claimed.
    pub(crate) fn claimed(&self, size: usize) {
        self.batch_size.record(size as f64);
    }

    /// A handler call of `deliveries` starts now: records each one's end-to-end latency, the
    /// wall clock now minus its publication (store time). A negative difference (this machine's
    /// clock behind the database's) counts as zero.
    pub(crate) fn call_starts<'d>(&self, deliveries: impl IntoIterator<Item = &'d Delivery>) {
        let now = SystemTime::now();
        for delivery in deliveries {
            let latency = now
                .duration_since(delivery.published_at)
                .unwrap_or_default();
            self.end_to_end.record(latency.as_secs_f64());
        }
    }

    /// Runs the handler call `call`, recording its duration (on the runtime's clock).
    pub(crate) async fn time_call<T>(&self, call: impl Future<Output = T>) -> T {
        let started = self.clock.now();
        let result = call.await;
        let took = self.clock.now().saturating_duration_since(started);
        self.duration.record(took.as_secs_f64());
        result
    }

    /// What became of a processed batch: `completed` deliveries succeeded, `failures` were
    /// recorded (retried or dead-lettered), `deferred` were given back unattempted, `lost`
    /// lost their claims before their outcome could be kept.
    pub(crate) fn outcomes(
        &self,
        completed: usize,
        failures: &[Failure],
        deferred: usize,
        lost: usize,
    ) {
        let dead_lettered = failures.iter().filter(|f| f.retry_in.is_none()).count();
        add(&self.completed, completed);
        add(&self.retried, failures.len() - dead_lettered);
        add(&self.dead_lettered, dead_lettered);
        add(&self.deferred, deferred);
        add(&self.lost, lost);
    }

    /// `released` unfinished deliveries were given back at shutdown.
    pub(crate) fn released(&self, released: u64) {
        if released > 0 {
            self.released.increment(released);
        }
    }
}

fn add(counter: &Counter, n: usize) {
    if n > 0 {
        counter.increment(n as u64);
    }
}

impl std::fmt::Debug for HandlerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The handles print nothing useful (which recorder, which atomic).
        f.debug_struct("HandlerMetrics").finish_non_exhaustive()
    }
}
