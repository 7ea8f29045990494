//! [`HandlerMetrics`]: the counters and histograms of one handler's claim loops.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use metrics::{Counter, Histogram};

use super::{BATCH_SIZE, END_TO_END_LATENCY, HANDLER_DURATION, HANDLER_EVENTS};
use crate::Clock;
use crate::spans::{Recorded, Tally};
use crate::store::Delivery;
use crate::upkeep::ActivityCounter;

/// The metric handles of one handler, resolved once (when its claim loops are built, as the
/// runtime starts running) against the recorder installed then, so recording on the hot path is
/// an atomic add on a handle, never a lookup by name and labels. Counters are added to once per
/// batch and outcome, by the number of deliveries; so is the handler's counter of the
/// [activity history](crate::operations::activity).
#[derive(Clone)]
pub(crate) struct HandlerMetrics {
    /// One counter per outcome, in the order of [`Tally::counts`].
    events: [Counter; 6],
    duration: Histogram,
    batch_size: Histogram,
    end_to_end: Histogram,
    /// The runtime's clock, which times the handler calls (so a fake clock gives exact figures).
    clock: Arc<dyn Clock>,
    /// The handler's counts for the activity history, flushed by the runtime's upkeep.
    activity: Arc<ActivityCounter>,
}

impl HandlerMetrics {
    /// The handles of the handler stored as `handler` (its `handler` label), timing calls on
    /// `clock`, counting its activity on `activity`.
    pub(crate) fn new(
        handler: &str,
        clock: Arc<dyn Clock>,
        activity: Arc<ActivityCounter>,
    ) -> Self {
        let events = |(outcome, _): (Recorded, u64)| {
            let outcome = outcome.as_str();
            metrics::counter!(HANDLER_EVENTS, "handler" => handler.to_owned(), "outcome" => outcome)
        };
        let labelled =
            |name: &'static str| metrics::histogram!(name, "handler" => handler.to_owned());
        Self {
            events: Tally::default().counts().map(events),
            duration: labelled(HANDLER_DURATION),
            batch_size: labelled(BATCH_SIZE),
            end_to_end: labelled(END_TO_END_LATENCY),
            clock,
            activity,
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

    /// What became of a processed batch: each outcome's counter goes up by its count, and the
    /// activity history's by the completed, retried and dead-lettered ones.
    pub(crate) fn outcomes(&self, tally: &Tally) {
        for (counter, (_, count)) in self.events.iter().zip(tally.counts()) {
            if count > 0 {
                counter.increment(count);
            }
        }
        self.activity
            .add(tally.completed, tally.retried, tally.dead_lettered);
    }
}

impl std::fmt::Debug for HandlerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The handles print nothing useful (which recorder, which atomic).
        f.debug_struct("HandlerMetrics").finish_non_exhaustive()
    }
}
