//! [`Status`] on SQLite: one statement over the subscriptions, each figure from an index.
//!
//! The counts walk `deliveries_claimable` (due, scheduled, claimed: it carries `run_at` and the
//! state) and `deliveries_dead`, each stopped after [`HandlerStatus::EXACT_UP_TO`] rows; the
//! oldest due delivery and the next one to be claimed are the first entry of
//! `deliveries_claimable`; live claims are read from the rows (few: at most every loop's batch);
//! the last error is the subscription's own column, kept by the fenced failure. So status costs
//! about the same at a million open deliveries as at a thousand.
//!
//! Without statistics (nobody runs `ANALYZE` on the file) SQLite's planner counts dead letters
//! along the primary key, reading every open delivery of the subscription to find them: the
//! count names its index (`indexed by deliveries_dead`), as PostgreSQL's status turns off the
//! plans that would read the whole range.
//!
//! Everything is read in one read transaction, a single snapshot of the file (WAL mode: it never
//! waits for a writer, and no writer waits for it).

use sqlx::FromRow;

use super::{SqliteStore, count, nodes, projections};
use crate::time::{age, from_epoch_seconds};
use osa_events_core::Result;
use osa_events_core::operations::{Count, HandlerStatus, Liveness, Status};
use osa_events_core::store::SubscriptionId;

/// Every subscription's figures; `?1` is the cap of each count and of the live claims read, `?2`
/// how many workers are named. `unixepoch('subsec')` is fixed for the whole statement, so every
/// figure is taken at one instant.
pub(super) const STATUS_SQL: &str = r#"
select f.*,
       (select unixepoch('subsec') - e.created_at from events e where e.position = f.next) as lag
from (
    select s.id, s.name, s.event_type, s.routing_key, s.paused_at, s.retired_at,
           s.last_error, s.last_failed_at, s.backfill_after, s.backfill_head, s.config,
           (select count(*) from (select 1 from deliveries d
             where d.subscription_id = s.id and d.status <> 'dead'
               and d.run_at <= unixepoch('subsec')
             limit ?1)) as due,
           (select count(*) from (select 1 from deliveries d
             where d.subscription_id = s.id and d.status <> 'dead'
               and d.run_at > unixepoch('subsec') and d.status = 'pending'
             limit ?1)) as scheduled,
           (select count(*) from (select 1 from deliveries d
             where d.subscription_id = s.id and d.status <> 'dead'
               and d.run_at > unixepoch('subsec') and d.status = 'claimed'
             limit ?1)) as claimed,
           (select count(*) from (select 1 from deliveries d
             where d.subscription_id = s.id and d.status <> 'dead'
               and d.run_at >= 9e999 and d.status = 'waiting'
             limit ?1)) as waiting,
           (select count(*) from (select 1 from deliveries d indexed by deliveries_dead
             where d.subscription_id = s.id and d.status = 'dead'
             limit ?1)) as dead,
           (select unixepoch('subsec') - d.run_at from deliveries d
             where d.subscription_id = s.id and d.status <> 'dead'
               and d.run_at <= unixepoch('subsec')
             order by d.run_at limit 1) as oldest_due,
           (select unixepoch('subsec') - min(c.claimed_at) from (
               select d.claimed_at from deliveries d
               where d.subscription_id = s.id and d.status <> 'dead'
                 and d.run_at > unixepoch('subsec') and d.status = 'claimed'
               limit ?1) as c) as oldest_claim,
           (select json_group_array(w.claimed_by) from (
               select distinct c.claimed_by from (
                   select d.claimed_by from deliveries d
                   where d.subscription_id = s.id and d.status <> 'dead'
                     and d.run_at > unixepoch('subsec') and d.status = 'claimed'
                   limit ?1) as c
               where c.claimed_by is not null
               order by c.claimed_by limit ?2) as w) as workers,
           (select d.event_position from deliveries d
             where d.subscription_id = s.id and d.status <> 'dead' and d.run_at < 9e999
             order by d.run_at, d.event_position limit 1) as next
    from subscriptions s
) as f
order by f.name
"#;

/// The head of the log and the store's now, in the same snapshot as the figures.
const HEAD_SQL: &str = r#"
select coalesce((select max(position) from events), 0), unixepoch('subsec')
"#;

/// How many workers [`HandlerStatus::claimed_by`] names at most.
const CLAIMED_BY: i64 = 20;

/// A row of [`STATUS_SQL`].
#[derive(FromRow)]
struct Figures {
    id: i32,
    name: String,
    event_type: String,
    routing_key: Option<String>,
    paused_at: Option<f64>,
    retired_at: Option<f64>,
    last_error: Option<String>,
    last_failed_at: Option<f64>,
    backfill_after: Option<i64>,
    backfill_head: Option<i64>,
    /// The config snapshot, JSON text.
    config: String,
    due: i64,
    scheduled: i64,
    claimed: i64,
    waiting: i64,
    dead: i64,
    oldest_due: Option<f64>,
    oldest_claim: Option<f64>,
    /// A JSON array of names.
    workers: Option<String>,
    /// The position of the next delivery to be claimed.
    next: Option<i64>,
    /// How long ago the event at `next` was published.
    lag: Option<f64>,
}

pub(super) async fn status(store: &SqliteStore) -> Result<Status> {
    let mut tx = store.pool().begin().await?;
    let nodes = nodes::list(&mut tx).await?;
    let projections = projections::list(&mut tx).await?;
    let (head, now): (i64, f64) = sqlx::query_as(HEAD_SQL).fetch_one(&mut *tx).await?;
    let cap = HandlerStatus::EXACT_UP_TO;
    let rows: Vec<Figures> = sqlx::query_as(STATUS_SQL)
        .bind(i64::try_from(cap).unwrap_or(i64::MAX))
        .bind(CLAIMED_BY)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let capped = |n: i64| Count::capped(count(n), cap);
    let mut handlers = Vec::with_capacity(rows.len());
    for row in rows {
        let mut handler = HandlerStatus::idle(
            SubscriptionId(row.id),
            &row.name,
            &row.event_type,
            row.routing_key.as_deref(),
        );
        handler.paused_at = row.paused_at.map(from_epoch_seconds);
        handler.retired_at = row.retired_at.map(from_epoch_seconds);
        handler.last_error = row
            .last_error
            .zip(row.last_failed_at.map(from_epoch_seconds));
        handler.backfill = row.backfill_after.map(|after| (after, row.backfill_head));
        handler.due = capped(row.due);
        handler.scheduled = capped(row.scheduled);
        handler.claimed = capped(row.claimed);
        handler.dead = capped(row.dead);
        handler.waiting = capped(row.waiting);
        handler.oldest_due = age(row.oldest_due);
        handler.oldest_claim = age(row.oldest_claim);
        handler.claimed_by = workers_of(row.workers.as_deref())?;
        if let Some(position) = row.next {
            handler.lag_events = count(head.saturating_sub(position));
            handler.lag = age(row.lag).unwrap_or_default();
        }
        handler.config = serde_json::from_str(&row.config).map_err(|error| {
            osa_events_core::Error::Database(
                format!(
                    "the config snapshot of subscription `{}` is not JSON ({error})",
                    row.name
                )
                .into(),
            )
        })?;
        handler.liveness = Liveness::of(&handler.name, &nodes);
        handlers.push(handler);
    }
    Ok(Status::new(
        from_epoch_seconds(now),
        head,
        handlers,
        projections,
        nodes,
    ))
}

/// The workers of the live claims, from the JSON array the statement aggregates, sorted (an
/// aggregate's order is SQLite's choice).
fn workers_of(json: Option<&str>) -> Result<Vec<String>> {
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    let mut workers: Vec<String> = serde_json::from_str(json).map_err(|error| {
        osa_events_core::Error::Database(
            format!("the live claims' workers are not a JSON array ({error}): {json:?}").into(),
        )
    })?;
    workers.sort_unstable();
    Ok(workers)
}
