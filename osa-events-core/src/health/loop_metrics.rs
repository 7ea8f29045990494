//! The claim loops' health as metrics (named in [`crate::metrics`], listed in `docs/metrics.md`):
//! `osa_events_claim_loops` (gauge: loops alive in this process),
//! `osa_events_claim_loop_restarts_total` and `osa_events_claim_errors_total` (counters), each
//! by `handler`, the stored name (qualified by the namespace).
//!
//! The counters are resolved once per loop and kept. The gauge is set when a loop starts, dies,
//! restarts or stops, and again every [`GAUGE_REFRESH`] (or metrics interval, when shorter) by
//! [`keep_loop_gauges`], resolved anew each time: an exporter that drops gauges idle for a while
//! (the Prometheus exporter's `idle_timeout`) would otherwise drop it for good, and a kept handle
//! would go on updating a gauge no longer exported.

use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use tokio_util::sync::CancellationToken;

use super::board::HealthBoard;
use crate::Clock;
use crate::metrics::{CLAIM_ERRORS, CLAIM_LOOP_RESTARTS, CLAIM_LOOPS};

/// How often the loops gauge is set at least, even when nothing changed: well inside the idle
/// timeout an exporter is given (a few metrics intervals, see `docs/metrics.md`).
pub(crate) const GAUGE_REFRESH: Duration = Duration::from_secs(5);

/// One claim loop's counters.
#[derive(Clone)]
pub(super) struct LoopMetrics {
    restarts: Counter,
    errors: Counter,
}

impl LoopMetrics {
    /// The counters of a loop of the handler stored as `handler`, from the recorder installed
    /// now.
    pub(super) fn resolve(handler: &str) -> Self {
        Self {
            restarts: metrics::counter!(CLAIM_LOOP_RESTARTS, "handler" => handler.to_owned()),
            errors: metrics::counter!(CLAIM_ERRORS, "handler" => handler.to_owned()),
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

/// Sets the loops gauge of the handler stored as `handler` to `alive`.
pub(super) fn set_loops(handler: &str, alive: u32) {
    metrics::gauge!(CLAIM_LOOPS, "handler" => handler.to_owned()).set(f64::from(alive));
}

/// How often [`keep_loop_gauges`] sets the gauges: every [`GAUGE_REFRESH`], or every
/// `metrics_interval` when that is shorter (an exporter's idle timeout is set to a few of them).
pub(crate) fn refresh_every(metrics_interval: Option<Duration>) -> Duration {
    metrics_interval.map_or(GAUGE_REFRESH, |every| every.min(GAUGE_REFRESH))
}

/// Sets every handler's loops gauge `every` until shutdown.
pub(crate) async fn keep_loop_gauges(
    board: Arc<HealthBoard>,
    every: Duration,
    clock: Arc<dyn Clock>,
    stopping: CancellationToken,
) {
    while crate::upkeep::pause(&clock, every, &stopping).await {
        board.publish_loop_gauges();
    }
}
