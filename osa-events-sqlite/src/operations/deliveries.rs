//! Listing, showing, retrying, purging and cancelling deliveries by [`Selector`].
//!
//! Every statement here selects with the same filter (`filter!`, parameters `?1` to `?7`): a
//! range of the primary key (one subscription's stretch of it when the selector names a
//! handler), then the other fields. A mutation runs in a write transaction and changes only rows
//! still in the state it names, picked and changed in one statement: a retry or purge touches
//! only dead rows and a cancel only pending ones, so a delivery a worker holds is never changed
//! here (even once its claim expired: it is claimed until claimed again), and its fenced
//! completion or failure still lands.

use sqlx::{FromRow, SqliteConnection};

use super::{SqliteStore, epoch_seconds, subscribed};
use crate::time::from_epoch_seconds;
use osa_events_core::Result;
use osa_events_core::operations::{
    DeliveryDetail, DeliveryKey, DeliveryPage, DeliveryQuery, DeliveryState, DeliverySummary,
    Selector,
};
use osa_events_core::store::SubscriptionId;

/// The selector's filter over `d` (deliveries) joined with `s` (subscriptions). Parameters: `?1`
/// and `?2` the first and last subscription id (the same one for a handler), `?3` position, `?4`
/// event type, `?5` error text (case-sensitive), `?6`/`?7` changed at or after / before (epoch
/// seconds); each null matches everything.
macro_rules! filter {
    () => {
        r#"d.subscription_id between ?1 and ?2
  and (?3 is null or d.event_position = ?3)
  and (?4 is null or s.event_type = ?4)
  and (?5 is null or instr(d.last_error, ?5) > 0)
  and (?6 is null or d.updated_at >= ?6)
  and (?7 is null or d.updated_at < ?7)"#
    };
}

/// The columns of a [`DeliverySummary`], over `d`, `s` and `e` (events).
macro_rules! summary_columns {
    () => {
        r#"d.subscription_id, s.name, d.event_position, d.status, d.attempts, d.last_error,
       d.claimed_by, case when d.status = 'waiting' then d.updated_at else d.run_at end as run_at,
       d.updated_at, e.id as event_id, e.event_type, e.routing_key,
       e.created_at as published_at"#
    };
}

/// A page: `?8` the state (null: any), `?9`/`?10` the key it starts after, `?11` the page size.
pub(super) const LIST_SQL: &str = concat!(
    "\nselect ",
    summary_columns!(),
    r#"
from deliveries d
join subscriptions s on s.id = d.subscription_id
join events e on e.position = d.event_position
where "#,
    filter!(),
    r#"
  and (?8 is null or d.status = ?8)
  and (d.subscription_id, d.event_position) > (?9, ?10)
order by d.subscription_id, d.event_position
limit ?11
"#
);

pub(super) const SHOW_SQL: &str = concat!(
    "\nselect ",
    summary_columns!(),
    r#",
       e.event_version, e.payload, e.metadata
from deliveries d
join subscriptions s on s.id = d.subscription_id
join events e on e.position = d.event_position
where d.subscription_id = ?1 and d.event_position = ?2
"#
);

/// The keys of the selected rows in one of `$status` (quoted states, comma-separated), in key order, at most `?8` (negative: no limit).
macro_rules! picked {
    ($status:literal) => {
        concat!(
            "(d.subscription_id, d.event_position) in (\n",
            "    select d.subscription_id, d.event_position\n",
            "    from deliveries d\n",
            "    join subscriptions s on s.id = d.subscription_id\n",
            "    where d.status in (",
            $status,
            ") and ",
            filter!(),
            "\n    order by d.subscription_id, d.event_position\n",
            "    limit ?8\n)"
        )
    };
}

/// Dead letters back into work, due now; the last error stays for the handler to see.
pub(super) const RETRY_SQL: &str = concat!(
    r#"
update deliveries as d
set status = 'pending', attempts = 0, run_at = unixepoch('subsec'), claim_token = null,
    claimed_by = null, claimed_at = null, updated_at = unixepoch('subsec')
where d.status = 'dead' and "#,
    picked!("'dead'"),
    "\nreturning subscription_id\n"
);

pub(super) const PURGE_SQL: &str = concat!(
    "\ndelete from deliveries as d where d.status = 'dead' and ",
    picked!("'dead'"),
    "\n"
);

/// Pending deliveries, waiting ones (behind their ordering key's head) included.
pub(super) const CANCEL_SQL: &str = concat!(
    "\ndelete from deliveries as d where d.status in ('pending', 'waiting') and ",
    picked!("'pending', 'waiting'"),
    "\n"
);

/// A selector's parameters `?1` to `?7`, with its handler resolved, and its limit.
struct Bound {
    subscriptions: (i32, i32),
    position: Option<i64>,
    event_type: Option<String>,
    error_contains: Option<String>,
    changed_after: Option<f64>,
    changed_before: Option<f64>,
    /// Negative for none, as SQLite's `limit` takes it.
    limit: i64,
}

async fn bind(conn: &mut SqliteConnection, selector: &Selector) -> Result<Bound> {
    let subscriptions = match &selector.handler {
        Some(handler) => {
            let id = subscribed(conn, handler).await?.id;
            (id, id)
        }
        None => (i32::MIN, i32::MAX),
    };
    Ok(Bound {
        subscriptions,
        position: selector.position,
        event_type: selector.event_type.clone(),
        error_contains: selector.error_contains.clone(),
        changed_after: selector.changed_after.map(epoch_seconds),
        changed_before: selector.changed_before.map(epoch_seconds),
        limit: selector
            .limit
            .map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX)),
    })
}

macro_rules! bind_filter {
    ($query:expr, $bound:expr) => {
        $query
            .bind($bound.subscriptions.0)
            .bind($bound.subscriptions.1)
            .bind($bound.position)
            .bind($bound.event_type.as_deref())
            .bind($bound.error_contains.as_deref())
            .bind($bound.changed_after)
            .bind($bound.changed_before)
    };
}

/// The columns of `summary_columns!`.
#[derive(FromRow)]
struct SummaryRow {
    subscription_id: i32,
    name: String,
    event_position: i64,
    status: String,
    attempts: i64,
    last_error: Option<String>,
    claimed_by: Option<String>,
    run_at: f64,
    updated_at: f64,
    event_id: uuid::Uuid,
    event_type: String,
    routing_key: Option<String>,
    published_at: f64,
}

impl SummaryRow {
    fn summary(self) -> Result<DeliverySummary> {
        Ok(DeliverySummary {
            key: DeliveryKey {
                subscription: SubscriptionId(self.subscription_id),
                position: self.event_position,
            },
            handler: self.name,
            state: self.status.parse::<DeliveryState>()?,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            last_error: self.last_error,
            claimed_by: self.claimed_by,
            run_at: from_epoch_seconds(self.run_at),
            updated_at: from_epoch_seconds(self.updated_at),
            event_id: self.event_id,
            event_type: self.event_type,
            routing_key: self.routing_key,
            published_at: from_epoch_seconds(self.published_at),
        })
    }
}

/// A row of [`SHOW_SQL`].
#[derive(FromRow)]
struct DetailRow {
    #[sqlx(flatten)]
    summary: SummaryRow,
    event_version: i32,
    payload: String,
    metadata: String,
}

pub(super) async fn list(store: &SqliteStore, query: &DeliveryQuery) -> Result<DeliveryPage> {
    let page_size = query.checked_page_size()?;
    let mut conn = store.pool().acquire().await?;
    let bound = bind(&mut conn, &query.selector).await?;
    let (after_subscription, after_position) = query.after.map_or((i32::MIN, i64::MIN), |key| {
        (key.subscription.0, key.position)
    });
    let rows: Vec<SummaryRow> = bind_filter!(sqlx::query_as(LIST_SQL), bound)
        .bind(query.state.map(DeliveryState::as_str))
        .bind(after_subscription)
        .bind(after_position)
        .bind(i64::from(page_size))
        .fetch_all(&mut *conn)
        .await?;
    let deliveries = rows
        .into_iter()
        .map(SummaryRow::summary)
        .collect::<Result<Vec<_>>>()?;
    let next = (deliveries.len() == page_size as usize)
        .then(|| deliveries.last().map(|last| last.key))
        .flatten();
    Ok(DeliveryPage { deliveries, next })
}

pub(super) async fn show(
    store: &SqliteStore,
    handler: &str,
    position: i64,
) -> Result<Option<DeliveryDetail>> {
    let mut conn = store.pool().acquire().await?;
    let subscription = subscribed(&mut conn, handler).await?;
    let row: Option<DetailRow> = sqlx::query_as(SHOW_SQL)
        .bind(subscription.id)
        .bind(position)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(DeliveryDetail {
        summary: row.summary.summary()?,
        event_version: row.event_version,
        position,
        payload: row.payload,
        metadata: row.metadata,
    }))
}

/// Retries the selected dead letters, then wakes the workers of every subscription that got work.
pub(super) async fn retry_dead(store: &SqliteStore, selector: &Selector) -> Result<u64> {
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
    let bound = bind(&mut tx, selector).await?;
    let retried: Vec<i32> = bind_filter!(sqlx::query_scalar(RETRY_SQL), bound)
        .bind(bound.limit)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let mut woken = retried.clone();
    woken.sort_unstable();
    woken.dedup();
    for subscription in woken {
        store.wake_subscription(SubscriptionId(subscription));
    }
    Ok(retried.len() as u64)
}

pub(super) async fn purge_dead(store: &SqliteStore, selector: &Selector) -> Result<u64> {
    delete(store, selector, PURGE_SQL).await
}

pub(super) async fn cancel_pending(store: &SqliteStore, selector: &Selector) -> Result<u64> {
    delete(store, selector, CANCEL_SQL).await
}

async fn delete(store: &SqliteStore, selector: &Selector, sql: &'static str) -> Result<u64> {
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
    let bound = bind(&mut tx, selector).await?;
    let deleted = bind_filter!(sqlx::query(sql), bound)
        .bind(bound.limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(deleted)
}
