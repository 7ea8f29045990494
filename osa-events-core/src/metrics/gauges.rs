//! The sampled gauges: every handler's and projection's figures from one
//! [`Operations::status`](crate::operations::Operations::status), set on the installed recorder.
//! One node of the fleet samples (see the sampler in `upkeep`); gauges are levels, so a second
//! sampler during a change of node only sets the same values again.

use std::time::Duration;

use super::{
    HANDLER_DELIVERIES, HANDLER_LAG_EVENTS, HANDLER_LAG_SECONDS, HANDLER_OLDEST_DUE_AGE,
    PROJECTION_LAG_EVENTS, PROJECTION_LAG_SECONDS, state,
};
use crate::operations::{HandlerStatus, Status};
use crate::projection::ProjectionStatus;

/// Sets the gauges of every handler and projection in `status` (not only those this process
/// runs). A count capped at [`HandlerStatus::EXACT_UP_TO`] is set to the cap.
pub(crate) fn record(status: &Status) {
    for handler in &status.handlers {
        record_handler(handler);
    }
    for projection in &status.projections {
        record_projection(projection);
    }
}

fn record_handler(handler: &HandlerStatus) {
    let name = &handler.name;
    for (state, count) in [
        (state::DUE, handler.due),
        (state::SCHEDULED, handler.scheduled),
        (state::CLAIMED, handler.claimed),
        (state::DEAD, handler.dead),
    ] {
        metrics::gauge!(HANDLER_DELIVERIES, "handler" => name.clone(), "state" => state)
            .set(count.value() as f64);
    }
    metrics::gauge!(HANDLER_OLDEST_DUE_AGE, "handler" => name.clone())
        .set(seconds(handler.oldest_due));
    metrics::gauge!(HANDLER_LAG_EVENTS, "handler" => name.clone()).set(handler.lag_events as f64);
    metrics::gauge!(HANDLER_LAG_SECONDS, "handler" => name.clone()).set(handler.lag.as_secs_f64());
}

fn record_projection(projection: &ProjectionStatus) {
    let name = &projection.name;
    metrics::gauge!(PROJECTION_LAG_EVENTS, "projection" => name.clone())
        .set(projection.lag.max(0) as f64);
    metrics::gauge!(PROJECTION_LAG_SECONDS, "projection" => name.clone())
        .set(seconds(projection.oldest_unapplied));
}

/// Seconds, zero for none (nothing waiting).
fn seconds(age: Option<Duration>) -> f64 {
    age.map_or(0.0, |age| age.as_secs_f64())
}
