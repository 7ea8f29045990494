//! Activity history: how many deliveries each handler and each projection handled, failed and
//! dead-lettered, minute by minute over the last two hours, for the small charts of a dashboard.
//!
//! # Where the figures come from
//!
//! Each runtime counts in memory, per handler and per projection, as its claim loops and
//! projection loops record outcomes (an atomic add per batch, nothing else on the claim path).
//! On every node heartbeat ([`RuntimeBuilder::node_heartbeat`](crate::RuntimeBuilder::node_heartbeat),
//! 10 s by default) it takes those counts and adds them to the store with
//! [`Operations::record_activity`](super::Operations::record_activity), into the bucket of the
//! current minute of the store's clock, and once more when it stops. So a chart lags by at most
//! one heartbeat. Several nodes add into the same buckets: a bucket is the fleet's total.
//!
//! A flush that fails keeps its counts for the next heartbeat, so a store that is away for a
//! while loses nothing: the counts land, late, in the minute the store comes back. **A node that
//! is killed (or crashes) loses what it counted since its last heartbeat**: at most one
//! heartbeat's worth, 10 s by default. The history is for charts, not for accounting.
//!
//! # What the figures mean
//!
//! | figure | handler | projection |
//! | --- | --- | --- |
//! | `handled` | deliveries whose handler call succeeded (the `completed` outcome) | events applied (in batches that committed) |
//! | `failed` | attempts that failed and will be retried | batches that failed (and will be retried) |
//! | `dead` | deliveries dead-lettered (out of retries, or failed permanently) | always 0 |
//!
//! A handler's `handled` and `failed` count attempts, as the `osa_events_handler_events_total`
//! counter does (`docs/metrics.md`): a delivery that fails twice and then succeeds counts two
//! failed and one handled.
//!
//! # A bounded table
//!
//! A bucket is one row per kind, name and minute ([`ACTIVITY_BUCKET`]), and every
//! `record_activity` deletes the buckets older than [`ACTIVITY_KEPT`], in the same transaction.
//! So the table holds at most (handlers + projections) × 121 rows whatever the load: two hours
//! of minutes, and the current one. A handler that no node runs any more disappears from it two
//! hours later. A store without the operations API records nothing; its runtimes still count,
//! at the cost of the atomic adds.

use std::time::{Duration, SystemTime};

use crate::Result;

/// The width of a bucket: counts are added up per minute of the store's clock.
pub const ACTIVITY_BUCKET: Duration = Duration::from_secs(60);

/// How long buckets are kept: the chart's hour, and as much again for a slower dashboard or a
/// longer look back.
pub const ACTIVITY_KEPT: Duration = Duration::from_secs(2 * 60 * 60);

/// What an activity bucket counts: a handler's deliveries, or a projection's events.
///
/// A handler and a projection may share a name; their buckets are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivityKind {
    /// A handler (`#[event_handler]`), by its stored name.
    Handler,
    /// A projection (`#[projection]`), by its stored name.
    Projection,
}

impl ActivityKind {
    /// The name stores keep and output shows: `handler` or `projection`. Buckets are sorted by
    /// it (handlers first).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Handler => "handler",
            Self::Projection => "projection",
        }
    }
}

impl std::fmt::Display for ActivityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ActivityKind {
    type Err = crate::Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "handler" => Ok(Self::Handler),
            "projection" => Ok(Self::Projection),
            other => Err(crate::Error::Config(
                format!("unknown activity kind `{other}` (known: handler, projection)").into(),
            )),
        }
    }
}

/// Counts to add to the current minute's bucket of one handler or projection:
/// [`Operations::record_activity`](super::Operations::record_activity). What each count means is
/// in the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityDelta {
    /// Handler or projection.
    pub kind: ActivityKind,
    /// Its stored name (qualified by the [namespace](crate::RuntimeBuilder::namespace)).
    pub name: String,
    /// Deliveries completed, or projection events applied.
    pub handled: u64,
    /// Attempts that failed and will be retried, or projection batches that failed.
    pub failed: u64,
    /// Deliveries dead-lettered.
    pub dead: u64,
}

impl ActivityDelta {
    /// Whether it counts nothing: stores skip such a delta (it would only write a zero row).
    pub fn is_empty(&self) -> bool {
        self.handled == 0 && self.failed == 0 && self.dead == 0
    }
}

/// One minute of one handler's or projection's activity, the fleet's total:
/// [`Operations::activity`](super::Operations::activity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityBucket {
    /// Handler or projection.
    pub kind: ActivityKind,
    /// Its stored name.
    pub name: String,
    /// The start of the minute (store time, a whole minute since the Unix epoch).
    pub minute: SystemTime,
    /// Deliveries completed, or projection events applied, in that minute.
    pub handled: u64,
    /// Attempts that failed and will be retried, or projection batches that failed.
    pub failed: u64,
    /// Deliveries dead-lettered.
    pub dead: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_reads_back_from_its_name() {
        for kind in [ActivityKind::Handler, ActivityKind::Projection] {
            assert_eq!(kind.as_str().parse::<ActivityKind>().ok(), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        let error = "handlers".parse::<ActivityKind>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid configuration: unknown activity kind `handlers` (known: handler, projection)"
        );
    }
}
