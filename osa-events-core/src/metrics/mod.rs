//! Metrics through the [`metrics`] facade: what the runtime counts, times and samples, under
//! Prometheus-style names. No exporter is part of osa-events: an application installs the
//! recorder of its choice (for example `metrics-exporter-prometheus`) before
//! [`Runtime::run`](crate::Runtime::run), and every metric below goes to it. Without one,
//! recording costs next to nothing (the facade's no-op handles).
//!
//! - Counters and histograms of the claim loops ([`HandlerMetrics`]): their handles are
//!   resolved once per claim loop, when the runtime starts running, so the hot path only adds to
//!   atomics.
//! - Gauges of every handler and projection the store reports ([`gauges`]), sampled by one node
//!   of the fleet (the sampler in `upkeep`), so N nodes do not run N status queries.
//! - The claim loops' health (loops alive, restarts, failed claims), recorded by every process
//!   for its own loops with the runtime's [`health`](crate::health).
//!
//! `docs/metrics.md` has the table of every metric, the sampling rule and example PromQL.
//!
//! Names follow Prometheus' conventions: the `osa_events_` prefix, base units (`_seconds`),
//! `_total` on counters, and only low-cardinality labels (`handler`, `projection`, `outcome`,
//! `state`, `event_type`). A `handler` or `projection` label is the stored name, qualified by the
//! [namespace](crate::RuntimeBuilder::namespace) (`billing@on_order_placed`), as the operations
//! API and the command-line tool name it.

use metrics::Unit;

pub(crate) mod gauges;
mod handler;

pub(crate) use handler::HandlerMetrics;

/// Counter: deliveries whose attempt ended, by `handler` and `outcome`: `completed`, `retried`,
/// `dead_lettered`, `released` (given back unfinished at shutdown), `deferred` (an event version
/// newer than this build) or `lost` (the claim was lost before the outcome could be kept): the
/// outcomes the batch's span records ([`Recorded`](crate::spans::Recorded)).
pub(crate) const HANDLER_EVENTS: &str = "osa_events_handler_events_total";
/// Histogram: seconds per handler call (one event, or one batch for a batch handler), by
/// `handler`.
pub(crate) const HANDLER_DURATION: &str = "osa_events_handler_duration_seconds";
/// Histogram: deliveries per non-empty claimed batch, by `handler`.
pub(crate) const BATCH_SIZE: &str = "osa_events_batch_size";
/// Histogram: seconds from an event's publication (store time) to the start of the handler call
/// that receives it, by `handler`.
pub(crate) const END_TO_END_LATENCY: &str = "osa_events_end_to_end_latency_seconds";

/// Sampled gauge: a handler's deliveries by `state` (see [`state`]).
pub(crate) const HANDLER_DELIVERIES: &str = "osa_events_handler_deliveries";
/// Sampled gauge: how long a handler's longest-waiting due delivery has been due.
pub(crate) const HANDLER_OLDEST_DUE_AGE: &str = "osa_events_handler_oldest_due_age_seconds";
/// Sampled gauge: how far the next delivery a handler claims is behind the head of the log, in
/// positions.
pub(crate) const HANDLER_LAG_EVENTS: &str = "osa_events_handler_lag_events";
/// Sampled gauge: how long ago the event of the next delivery a handler claims was published.
pub(crate) const HANDLER_LAG_SECONDS: &str = "osa_events_handler_lag_seconds";
/// Sampled gauge: events of a projection's types it has not applied yet.
pub(crate) const PROJECTION_LAG_EVENTS: &str = "osa_events_projection_lag_events";
/// Sampled gauge: how long ago the oldest event a projection has not applied yet was published.
pub(crate) const PROJECTION_LAG_SECONDS: &str = "osa_events_projection_lag_seconds";

/// Counter: events published, by `event_type` (emitted on publish).
pub(crate) const PUBLISHED_EVENTS: &str = "osa_events_published_events_total";

/// Gauge: a handler's claim loops alive in this process, by `handler` (set by the claim loops'
/// supervision as they start, die, restart and stop, and refreshed by the runtime's health, see
/// [`health`](crate::health)).
pub(crate) const CLAIM_LOOPS: &str = "osa_events_claim_loops";
/// Counter: a handler's claim loops started again after they died, by `handler`.
pub(crate) const CLAIM_LOOP_RESTARTS: &str = "osa_events_claim_loop_restarts_total";
/// Counter: a handler's claim round trips that failed (the store did not answer), by `handler`.
pub(crate) const CLAIM_ERRORS: &str = "osa_events_claim_errors_total";

/// The values of the `state` label of [`HANDLER_DELIVERIES`].
pub(crate) mod state {
    /// Pending and due now (claimable), expired claims included.
    pub(crate) const DUE: &str = "due";
    /// Pending and due later (a retry waiting out its backoff).
    pub(crate) const SCHEDULED: &str = "scheduled";
    /// Held by a live claim.
    pub(crate) const CLAIMED: &str = "claimed";
    /// Dead letters.
    pub(crate) const DEAD: &str = "dead";
}

/// Registers every metric's description and unit with the installed recorder. Called when a
/// runtime starts running; describing twice is harmless.
pub(crate) fn describe() {
    metrics::describe_counter!(
        HANDLER_EVENTS,
        Unit::Count,
        "Deliveries whose attempt ended, by handler and outcome (completed, retried, \
         dead_lettered, released, deferred, lost)"
    );
    metrics::describe_histogram!(
        HANDLER_DURATION,
        Unit::Seconds,
        "Duration of one handler call: one event, or one batch for a batch handler"
    );
    metrics::describe_histogram!(
        BATCH_SIZE,
        Unit::Count,
        "Deliveries per non-empty claimed batch"
    );
    metrics::describe_histogram!(
        END_TO_END_LATENCY,
        Unit::Seconds,
        "Time from an event's publication (store time) to the start of its handler call"
    );
    metrics::describe_gauge!(
        HANDLER_DELIVERIES,
        Unit::Count,
        "A handler's deliveries by state (due, scheduled, claimed, dead), counted exactly up to \
         1000 (sampled)"
    );
    metrics::describe_gauge!(
        HANDLER_OLDEST_DUE_AGE,
        Unit::Seconds,
        "How long a handler's longest-waiting due delivery has been due (sampled)"
    );
    metrics::describe_gauge!(
        HANDLER_LAG_EVENTS,
        Unit::Count,
        "Positions between the head of the log and the next delivery a handler claims (sampled)"
    );
    metrics::describe_gauge!(
        HANDLER_LAG_SECONDS,
        Unit::Seconds,
        "Age of the event of the next delivery a handler claims (sampled)"
    );
    metrics::describe_gauge!(
        PROJECTION_LAG_EVENTS,
        Unit::Count,
        "Events of a projection's types it has not applied yet (sampled)"
    );
    metrics::describe_gauge!(
        PROJECTION_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest event a projection has not applied yet (sampled)"
    );
    metrics::describe_counter!(
        PUBLISHED_EVENTS,
        Unit::Count,
        "Events published, by event type"
    );
    metrics::describe_gauge!(
        CLAIM_LOOPS,
        Unit::Count,
        "Claim loops of a handler alive in this process"
    );
    metrics::describe_counter!(
        CLAIM_LOOP_RESTARTS,
        Unit::Count,
        "Claim loops of a handler started again after they died"
    );
    metrics::describe_counter!(
        CLAIM_ERRORS,
        Unit::Count,
        "Claim round trips of a handler that failed (the store did not answer)"
    );
}
