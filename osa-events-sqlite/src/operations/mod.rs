//! The operations API ([`Operations`]) on SQLite: what the `osa-events` command-line tool and the
//! dashboard call.
//!
//! Every mutation is one write transaction (`BEGIN IMMEDIATE`), which SQLite runs alone: what it
//! reads cannot change before it writes, so no statement here locks rows or re-checks them the
//! way PostgreSQL's do, and none can overlap a claim, a fenced write or a publish. A mutation
//! touches only rows in the state it names (dead letters for retry and purge, pending rows for
//! cancel), so a claimed delivery is never changed here and its fenced completion still lands.
//! One that makes work due without publishing wakes this process's workers of the subscription
//! after it commits; workers of other processes sharing the file find the work at their next
//! poll.
//!
//! Reads run on the pool outside any write transaction (in WAL mode a reader never waits for the
//! writer), and the counts of status stop at [`HandlerStatus::EXACT_UP_TO`] rows each, walking
//! the partial indexes `deliveries_claimable` and `deliveries_dead`.
//!
//! [`HandlerStatus::EXACT_UP_TO`]: osa_events_core::operations::HandlerStatus::EXACT_UP_TO

use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use sqlx::SqliteConnection;
use uuid::Uuid;

use crate::SqliteStore;
use osa_events_core::operations::{
    ActivityBucket, ActivityDelta, BackfillStep, DeliveryDetail, DeliveryPage, DeliveryQuery,
    NodeRecord, NodeStatus, Operations, Prune, PruneStep, Replay, ReplayStep, RetireMode, Retired,
    Selector, Status, SubscriptionInfo,
};
use osa_events_core::store::{ProjectionStatus, SubscriptionId};
use osa_events_core::{Error, Result};

mod activity;
mod backfill;
mod deliveries;
mod lifecycle;
mod nodes;
mod projections;
mod prune;
mod replay;
mod status;

/// A subscription as the operations need it.
#[derive(Debug, Clone)]
struct Subscribed {
    id: i32,
    name: String,
    event_type: String,
    routing_key: Option<String>,
    retired: bool,
}

impl Subscribed {
    fn id(&self) -> SubscriptionId {
        SubscriptionId(self.id)
    }
}

const SUBSCRIBED_SQL: &str = r#"
select id, name, event_type, routing_key, retired_at is not null
from subscriptions where name = ?1
"#;

/// Sorted as Rust sorts strings: SQLite's default collation compares bytes.
const NAMES_SQL: &str = "select name from subscriptions order by name";

/// The subscription stored as `handler`, or [`Error::UnknownHandler`] naming the known ones.
async fn subscribed(conn: &mut SqliteConnection, handler: &str) -> Result<Subscribed> {
    let row: Option<(i32, String, String, Option<String>, bool)> = sqlx::query_as(SUBSCRIBED_SQL)
        .bind(handler)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some((id, name, event_type, routing_key, retired)) = row {
        return Ok(Subscribed {
            id,
            name,
            event_type,
            routing_key,
            retired,
        });
    }
    let known: Vec<String> = sqlx::query_scalar(NAMES_SQL).fetch_all(&mut *conn).await?;
    Err(Error::UnknownHandler {
        name: handler.to_owned(),
        known: if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        },
    })
}

/// A time as the REAL seconds since the Unix epoch the store keeps.
fn epoch_seconds(time: SystemTime) -> f64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => since.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// A stored interval (REAL seconds) as a `Duration`, to the nearest nanosecond: `0.15` is read
/// back as 150 ms exactly, not a nanosecond less (a negative one as zero).
fn duration_of(seconds: f64) -> Duration {
    let nanos = (seconds.max(0.0) * 1e9).round();
    Duration::from_nanos(if nanos >= u64::MAX as f64 {
        u64::MAX
    } else {
        nanos as u64
    })
}

/// A stored count as the API's type (counts are never negative).
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Operations for SqliteStore {
    fn status(&self) -> BoxFuture<'_, Result<Status>> {
        Box::pin(self.timed(status::status(self)))
    }

    fn deliveries<'a>(&'a self, query: &'a DeliveryQuery) -> BoxFuture<'a, Result<DeliveryPage>> {
        Box::pin(self.timed(deliveries::list(self, query)))
    }

    fn delivery<'a>(
        &'a self,
        handler: &'a str,
        position: i64,
    ) -> BoxFuture<'a, Result<Option<DeliveryDetail>>> {
        Box::pin(self.timed(deliveries::show(self, handler, position)))
    }

    fn retry_dead<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.timed(deliveries::retry_dead(self, selector)))
    }

    fn purge_dead<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.timed(deliveries::purge_dead(self, selector)))
    }

    fn cancel_pending<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.timed(deliveries::cancel_pending(self, selector)))
    }

    fn replay<'a>(
        &'a self,
        replay: &'a Replay,
        after: i64,
        end: Option<i64>,
    ) -> BoxFuture<'a, Result<ReplayStep>> {
        Box::pin(self.timed(replay::step(self, replay, after, end)))
    }

    fn pause<'a>(&'a self, handler: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.timed(lifecycle::pause(self, handler)))
    }

    fn resume<'a>(&'a self, handler: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.timed(lifecycle::resume(self, handler)))
    }

    fn backfill<'a>(&'a self, handler: &'a str, chunk: u32) -> BoxFuture<'a, Result<BackfillStep>> {
        Box::pin(self.timed(backfill::step(self, handler, chunk)))
    }

    fn subscriptions(&self) -> BoxFuture<'_, Result<Vec<SubscriptionInfo>>> {
        Box::pin(self.timed(lifecycle::subscriptions(self)))
    }

    fn retire<'a>(&'a self, handler: &'a str, mode: RetireMode) -> BoxFuture<'a, Result<Retired>> {
        Box::pin(self.timed(lifecycle::retire(self, handler, mode)))
    }

    fn prune<'a>(&'a self, prune: &'a Prune, after: i64) -> BoxFuture<'a, Result<PruneStep>> {
        Box::pin(self.timed(prune::step(self, prune, after)))
    }

    fn record_node<'a>(&'a self, node: &'a NodeRecord) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.timed(nodes::record(self, node)))
    }

    fn remove_node(&self, id: Uuid) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.timed(nodes::remove(self, id)))
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeStatus>>> {
        Box::pin(self.timed(async move {
            let mut conn = self.pool().acquire().await?;
            nodes::list(&mut conn).await
        }))
    }

    fn record_activity<'a>(&'a self, deltas: &'a [ActivityDelta]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.timed(activity::record(self, deltas)))
    }

    fn activity<'a>(&'a self, since: SystemTime) -> BoxFuture<'a, Result<Vec<ActivityBucket>>> {
        Box::pin(self.timed(activity::list(self, since)))
    }

    fn projections(&self) -> BoxFuture<'_, Result<Vec<ProjectionStatus>>> {
        Box::pin(self.timed(async move {
            let mut conn = self.pool().acquire().await?;
            projections::list(&mut conn).await
        }))
    }
}

#[cfg(test)]
mod tests;
