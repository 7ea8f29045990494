//! The runtime's upkeep beside the claim loops, on a store with the
//! [operations API](crate::operations): the node's record of itself, the activity history, the
//! backfill of handlers that start from their history, periodic retention, and the sampling of
//! the metrics gauges.
//!
//! None of them is on the claim path: each failure is logged and retried after a pause, and the
//! claim loops never wait for them.

mod activity;
mod backfill;
mod gauges;
mod node;
mod retention;

pub(crate) use activity::{ActivityBoard, ActivityCounter, keep_activity};
pub(crate) use backfill::backfill;
pub(crate) use gauges::sample_gauges;
pub(crate) use node::{keep_node_record, node_record};
pub(crate) use retention::keep_retention;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Clock;

/// Sleeps `duration` on `clock`; false when shutdown began first.
pub(crate) async fn pause(
    clock: &Arc<dyn Clock>,
    duration: Duration,
    stopping: &CancellationToken,
) -> bool {
    tokio::select! {
        () = clock.sleep(duration) => true,
        () = stopping.cancelled() => false,
    }
}
