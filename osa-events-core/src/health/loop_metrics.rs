//! The claim loops' health as metrics, through the `metrics` facade: loops alive, restarts and
//! failed claims per handler.
//!
//! | name | type | labels | what |
//! | --- | --- | --- | --- |
//! | `osa_events_claim_loops` | gauge | `handler` | claim loops of the handler alive in this process |
//! | `osa_events_claim_loop_restarts_total` | counter | `handler` | claim loops started again after they died |
//! | `osa_events_claim_errors_total` | counter | `handler` | failed claim round trips (the store did not answer) |
//!
//! The counters are resolved once per loop and kept. The gauge is set when a loop starts, dies,
//! restarts or stops, and again every [`GAUGE_REFRESH`] by [`keep_loop_gauges`], resolved anew
//! each time: an exporter that drops gauges idle for a while (the Prometheus exporter's
//! `idle_timeout`) would otherwise drop it for good, and a kept handle would go on updating a
//! gauge no longer exported.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Unit};
use tokio_util::sync::CancellationToken;

use super::board::HealthBoard;
use crate::Clock;

/// `osa_events_claim_loops{handler}`: claim loops alive.
pub(crate) const CLAIM_LOOPS: &str = "osa_events_claim_loops";
/// `osa_events_claim_loop_restarts_total{handler}`: claim loops restarted after they died.
pub(crate) const CLAIM_LOOP_RESTARTS: &str = "osa_events_claim_loop_restarts_total";
/// `osa_events_claim_errors_total{handler}`: failed claim round trips.
pub(crate) const CLAIM_ERRORS: &str = "osa_events_claim_errors_total";

/// How often the loops gauge is set even when nothing changed: well inside any idle timeout an
/// exporter is likely to be given (the Prometheus exporter's is set to a multiple of the
/// sampling interval).
pub(crate) const GAUGE_REFRESH: Duration = Duration::from_secs(5);

/// One claim loop's counters.
#[derive(Clone)]
pub(super) struct LoopMetrics {
    restarts: Counter,
    errors: Counter,
}

impl LoopMetrics {
    /// The counters of a loop of `handler`, from the recorder installed now.
    pub(super) fn resolve(handler: &'static str) -> Self {
        Self {
            restarts: metrics::counter!(CLAIM_LOOP_RESTARTS, "handler" => handler),
            errors: metrics::counter!(CLAIM_ERRORS, "handler" => handler),
        }
    }

    /// Counters that record nothing.
    #[cfg(feature = "test-util")]
    pub(super) fn noop() -> Self {
        Self {
            restarts: Counter::noop(),
            errors: Counter::noop(),
        }
    }

    pub(super) fn restarted(&self) {
        self.restarts.increment(1);
    }

    pub(super) fn claim_failed(&self) {
        self.errors.increment(1);
    }
}

/// Sets `handler`'s loops gauge to `alive`.
pub(super) fn set_loops(handler: &'static str, alive: u32) {
    metrics::gauge!(CLAIM_LOOPS, "handler" => handler).set(f64::from(alive));
}

/// Describes the three metrics to the recorder installed now (for an exporter's help texts).
pub(crate) fn describe() {
    metrics::describe_gauge!(
        CLAIM_LOOPS,
        Unit::Count,
        "Claim loops of the handler alive in this process."
    );
    metrics::describe_counter!(
        CLAIM_LOOP_RESTARTS,
        Unit::Count,
        "Claim loops of the handler started again after they died."
    );
    metrics::describe_counter!(
        CLAIM_ERRORS,
        Unit::Count,
        "Claim round trips of the handler that failed (the store did not answer)."
    );
}

/// Sets every handler's loops gauge every [`GAUGE_REFRESH`] until shutdown.
pub(crate) async fn keep_loop_gauges(
    board: Arc<HealthBoard>,
    clock: Arc<dyn Clock>,
    stopping: CancellationToken,
) {
    loop {
        tokio::select! {
            () = clock.sleep(GAUGE_REFRESH) => board.publish_loop_gauges(),
            () = stopping.cancelled() => return,
        }
    }
}
