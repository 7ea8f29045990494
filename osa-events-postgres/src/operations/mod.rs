//! The operations API ([`Operations`]) on PostgreSQL: what the `osa-events` command-line tool
//! and the dashboard call. Each method is a few statements in one transaction of its own; none
//! touches a claimed delivery except through the fenced functions of the claim path.
//!
//! Status reads only indexes and the subscriptions' own columns, so it stays cheap at a million
//! open deliveries (`docs/operations.md` has the plans and figures).

use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::PgStore;
use crate::store::PgUnnamed;
use osa_events_core::operations::{
    ActivityBucket, ActivityDelta, BackfillStep, DeliveryDetail, DeliveryPage, DeliveryQuery,
    NodeRecord, NodeStatus, Operations, Prune, PruneStep, Replay, ReplayStep, RetireMode, Retired,
    Selector, Status, SubscriptionInfo,
};
use osa_events_core::store::{ProjectionStatus, ProjectionStore, SubscriptionId};
use osa_events_core::{Error, Result};

mod activity;
mod backfill;
mod deliveries;
mod lifecycle;
mod nodes;
mod prune;
mod replay;
mod status;

pub use status::{STATUS_PLAN_SQL, STATUS_SQL};

impl PgStore {
    /// The executor for an operations statement on `conn`: unnamed behind a transaction-mode
    /// pooler, like every statement of the store.
    fn ops<'c>(&self, conn: &'c mut PgConnection) -> PgUnnamed<'c> {
        PgUnnamed::when(self.transaction_pooler, conn)
    }
}

/// A subscription as the operations need it.
#[derive(Debug, Clone)]
struct Subscribed {
    id: i32,
    name: String,
    event_type: String,
    routing_key: Option<String>,
    retired: bool,
}

const SUBSCRIBED_SQL: &str = r#"
select id, name, event_type, routing_key, retired_at is not null
from osa_events.subscriptions where name = $1
"#;

const NAMES_SQL: &str = "select name from osa_events.subscriptions order by name";

/// The subscription stored as `handler`, or [`Error::UnknownHandler`] naming the known ones.
async fn subscribed(store: &PgStore, conn: &mut PgConnection, handler: &str) -> Result<Subscribed> {
    let row: Option<(i32, String, String, Option<String>, bool)> = sqlx::query_as(SUBSCRIBED_SQL)
        .bind(handler)
        .fetch_optional(store.ops(conn))
        .await?;
    match row {
        Some((id, name, event_type, routing_key, retired)) => Ok(Subscribed {
            id,
            name,
            event_type,
            routing_key,
            retired,
        }),
        None => {
            let known: Vec<(String,)> =
                sqlx::query_as(NAMES_SQL).fetch_all(store.ops(conn)).await?;
            let known: Vec<String> = known.into_iter().map(|(name,)| name).collect();
            Err(Error::UnknownHandler {
                name: handler.to_owned(),
                known: if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                },
            })
        }
    }
}

/// A time as seconds since the Unix epoch, to bind for `to_timestamp($n)`.
fn epoch_seconds(time: SystemTime) -> f64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => since.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// A duration as the `float8` seconds `make_interval(secs => ..)` takes.
fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

impl Operations for PgStore {
    fn status(&self) -> BoxFuture<'_, Result<Status>> {
        Box::pin(status::status(self))
    }

    fn deliveries<'a>(&'a self, query: &'a DeliveryQuery) -> BoxFuture<'a, Result<DeliveryPage>> {
        Box::pin(deliveries::list(self, query))
    }

    fn delivery<'a>(
        &'a self,
        handler: &'a str,
        position: i64,
    ) -> BoxFuture<'a, Result<Option<DeliveryDetail>>> {
        Box::pin(deliveries::show(self, handler, position))
    }

    fn retry_dead<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<u64>> {
        Box::pin(deliveries::retry_dead(self, selector))
    }

    fn purge_dead<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<u64>> {
        Box::pin(deliveries::purge_dead(self, selector))
    }

    fn cancel_pending<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<u64>> {
        Box::pin(deliveries::cancel_pending(self, selector))
    }

    fn replay<'a>(
        &'a self,
        replay: &'a Replay,
        after: i64,
        end: Option<i64>,
    ) -> BoxFuture<'a, Result<ReplayStep>> {
        Box::pin(replay::step(self, replay, after, end))
    }

    fn pause<'a>(&'a self, handler: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(lifecycle::pause(self, handler))
    }

    fn resume<'a>(&'a self, handler: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(lifecycle::resume(self, handler))
    }

    fn backfill<'a>(&'a self, handler: &'a str, chunk: u32) -> BoxFuture<'a, Result<BackfillStep>> {
        Box::pin(backfill::step(self, handler, chunk))
    }

    fn subscriptions(&self) -> BoxFuture<'_, Result<Vec<SubscriptionInfo>>> {
        Box::pin(lifecycle::subscriptions(self))
    }

    fn retire<'a>(&'a self, handler: &'a str, mode: RetireMode) -> BoxFuture<'a, Result<Retired>> {
        Box::pin(lifecycle::retire(self, handler, mode))
    }

    fn prune<'a>(&'a self, prune: &'a Prune, after: i64) -> BoxFuture<'a, Result<PruneStep>> {
        Box::pin(prune::step(self, prune, after))
    }

    fn record_node<'a>(&'a self, node: &'a NodeRecord) -> BoxFuture<'a, Result<()>> {
        Box::pin(nodes::record(self, node))
    }

    fn remove_node(&self, id: Uuid) -> BoxFuture<'_, Result<()>> {
        Box::pin(nodes::remove(self, id))
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeStatus>>> {
        Box::pin(nodes::list(self))
    }

    fn record_activity<'a>(&'a self, deltas: &'a [ActivityDelta]) -> BoxFuture<'a, Result<()>> {
        Box::pin(activity::record(self, deltas))
    }

    fn activity<'a>(&'a self, since: SystemTime) -> BoxFuture<'a, Result<Vec<ActivityBucket>>> {
        Box::pin(activity::list(self, since))
    }

    fn projections(&self) -> BoxFuture<'_, Result<Vec<ProjectionStatus>>> {
        Box::pin(projections(self))
    }
}

const CHECKPOINTS_SQL: &str =
    "select name, coalesce(event_types, '{}') from osa_events.checkpoints";

/// Every projection with a checkpoint in the database (whichever program runs it), and the ones
/// registered in this program that have none yet, by name.
async fn projections(store: &PgStore) -> Result<Vec<ProjectionStatus>> {
    let mut conn = store.pool().acquire().await?;
    let stored: Vec<(String, Vec<String>)> = sqlx::query_as(CHECKPOINTS_SQL)
        .fetch_all(store.ops(&mut conn))
        .await?;
    drop(conn);
    let mut statuses = Vec::with_capacity(stored.len());
    for (name, event_types) in &stored {
        let event_types: Vec<&str> = event_types.iter().map(String::as_str).collect();
        statuses.push(crate::projection::ops::status(store.pool(), name, &event_types).await?);
    }
    for registered in ProjectionStore::statuses(store).await? {
        if !stored.iter().any(|(name, _)| *name == registered.name) {
            statuses.push(registered);
        }
    }
    statuses.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(statuses)
}

/// The subscription id of a row, as the API's type.
fn subscription_id(id: i32) -> SubscriptionId {
    SubscriptionId(id)
}
