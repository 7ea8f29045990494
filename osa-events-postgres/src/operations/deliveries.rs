//! Listing, showing, retrying, purging and cancelling deliveries by [`Selector`].
//!
//! Every statement here selects with the same filter (`filter!`, parameters `$1` to `$6`) and,
//! for the mutations, locks what it changes and re-checks the state on the locked row: a retry or
//! purge touches only dead rows and a cancel only pending ones, so a delivery a worker holds is
//! never changed here, and its fenced completion or failure still lands.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{PgStore, epoch_seconds, subscribed, subscription_id};
use crate::store::from_epoch_seconds;
use osa_events_core::Result;
use osa_events_core::operations::{
    DeliveryDetail, DeliveryKey, DeliveryPage, DeliveryQuery, DeliveryState, DeliverySummary,
    Selector,
};

/// The selector's filter over `d` (deliveries) joined with `s` (subscriptions). Parameters: `$1`
/// subscription id, `$2` position, `$3` event type, `$4` error text, `$5`/`$6` changed at or
/// after / before (epoch seconds); each null matches everything.
macro_rules! filter {
    () => {
        r#"($1::int4 is null or d.subscription_id = $1)
  and ($2::int8 is null or d.event_position = $2)
  and ($3::text is null or s.event_type = $3)
  and ($4::text is null or strpos(d.last_error, $4) > 0)
  and ($5::float8 is null or d.updated_at >= to_timestamp($5))
  and ($6::float8 is null or d.updated_at < to_timestamp($6))"#
    };
}

const LIST_SQL: &str = concat!(
    r#"
select d.subscription_id, s.name, d.event_position, d.status, d.attempts, d.last_error,
       d.claimed_by, extract(epoch from case when d.status = 'waiting' then d.updated_at else d.run_at end)::float8,
       extract(epoch from d.updated_at)::float8,
       e.id, e.event_type, e.routing_key, extract(epoch from e.created_at)::float8
from osa_events.deliveries d
join osa_events.subscriptions s on s.id = d.subscription_id
join osa_events.events e on e.position = d.event_position
where "#,
    filter!(),
    r#"
  and ($7::text is null or d.status = $7)
  and (d.subscription_id, d.event_position) > ($8, $9)
order by d.subscription_id, d.event_position
limit $10
"#
);

const SHOW_SQL: &str = r#"
select d.subscription_id, s.name, d.event_position, d.status, d.attempts, d.last_error,
       d.claimed_by, extract(epoch from case when d.status = 'waiting' then d.updated_at else d.run_at end)::float8,
       extract(epoch from d.updated_at)::float8,
       e.id, e.event_type, e.routing_key, extract(epoch from e.created_at)::float8,
       e.event_version, e.payload::text, e.metadata::text
from osa_events.deliveries d
join osa_events.subscriptions s on s.id = d.subscription_id
join osa_events.events e on e.position = d.event_position
where d.subscription_id = $1 and d.event_position = $2
"#;

/// The CTE `picked`: the selected rows in one of `$status` (quoted states, comma-separated), in key order, at most `$7`, locked (`$lock`:
/// `for update of d`, or with `skip locked`).
macro_rules! picked {
    ($status:literal, $lock:literal) => {
        concat!(
            "\nwith picked as (\n",
            "    select d.subscription_id, d.event_position\n",
            "    from osa_events.deliveries d\n",
            "    join osa_events.subscriptions s on s.id = d.subscription_id\n",
            "    where d.status in (",
            $status,
            ") and ",
            filter!(),
            "\n    order by d.subscription_id, d.event_position\n",
            "    limit $7\n    ",
            $lock,
            "\n)"
        )
    };
}

/// The picked row itself, still in the state it was picked in.
macro_rules! still_picked {
    ($status:literal) => {
        concat!(
            "d.subscription_id = p.subscription_id and d.event_position = p.event_position\n",
            "      and d.status in (",
            $status,
            ")"
        )
    };
}

const RETRY_SQL: &str = concat!(
    picked!("'dead'", "for update of d"),
    r#", retried as (
    update osa_events.deliveries d
    set status = 'pending', attempts = 0, run_at = now(), claim_token = null, claimed_by = null,
        claimed_at = null, updated_at = now()
    from picked p
    where "#,
    still_picked!("'dead'"),
    r#"
    returning d.subscription_id
), woken as (
    select pg_notify('osa_events', subscription_id::text)
    from (select distinct subscription_id from retried) as subscriptions
)
select (select count(*) from retried), (select count(*) from woken)
"#
);

const PURGE_SQL: &str = concat!(
    picked!("'dead'", "for update of d"),
    r#", purged as (
    delete from osa_events.deliveries d using picked p where "#,
    still_picked!("'dead'"),
    r#"
    returning 1
)
select count(*) from purged
"#
);

/// Pending rows a claimer is locking at this moment are skipped (`skip locked`): it is about to
/// claim them, and a cancel never takes a delivery from a worker. Waiting ones (behind their
/// ordering key's head) are pending work too, and cancelled with it.
const CANCEL_SQL: &str = concat!(
    picked!("'pending', 'waiting'", "for update of d skip locked"),
    r#", cancelled as (
    delete from osa_events.deliveries d using picked p where "#,
    still_picked!("'pending', 'waiting'"),
    r#"
    returning 1
)
select count(*) from cancelled
"#
);

/// A selector's parameters `$1` to `$6`, with its handler resolved.
struct Bound {
    subscription: Option<i32>,
    position: Option<i64>,
    event_type: Option<String>,
    error_contains: Option<String>,
    changed_after: Option<f64>,
    changed_before: Option<f64>,
    limit: Option<i64>,
}

async fn bind(store: &PgStore, conn: &mut PgConnection, selector: &Selector) -> Result<Bound> {
    let subscription = match &selector.handler {
        Some(handler) => Some(subscribed(store, conn, handler).await?.id),
        None => None,
    };
    Ok(Bound {
        subscription,
        position: selector.position,
        event_type: selector.event_type.clone(),
        error_contains: selector.error_contains.clone(),
        changed_after: selector.changed_after.map(epoch_seconds),
        changed_before: selector.changed_before.map(epoch_seconds),
        limit: selector
            .limit
            .map(|limit| i64::try_from(limit).unwrap_or(i64::MAX)),
    })
}

macro_rules! bind_filter {
    ($query:expr, $bound:expr) => {
        $query
            .bind($bound.subscription)
            .bind($bound.position)
            .bind($bound.event_type.as_deref())
            .bind($bound.error_contains.as_deref())
            .bind($bound.changed_after)
            .bind($bound.changed_before)
    };
}

/// The summary in columns 0 to 12 of a row of [`LIST_SQL`] or [`SHOW_SQL`].
fn summary(row: &PgRow) -> Result<DeliverySummary> {
    let state: String = row.try_get(3)?;
    let attempts: i32 = row.try_get(4)?;
    Ok(DeliverySummary {
        key: DeliveryKey {
            subscription: subscription_id(row.try_get(0)?),
            position: row.try_get(2)?,
        },
        handler: row.try_get(1)?,
        state: state.parse::<DeliveryState>()?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_error: row.try_get(5)?,
        claimed_by: row.try_get(6)?,
        run_at: from_epoch_seconds(row.try_get(7)?),
        updated_at: from_epoch_seconds(row.try_get(8)?),
        event_id: row.try_get(9)?,
        event_type: row.try_get(10)?,
        routing_key: row.try_get(11)?,
        published_at: from_epoch_seconds(row.try_get(12)?),
    })
}

pub(super) async fn list(store: &PgStore, query: &DeliveryQuery) -> Result<DeliveryPage> {
    let page_size = query.checked_page_size()?;
    let mut conn = store.pool().acquire().await?;
    let bound = bind(store, &mut conn, &query.selector).await?;
    let (after_subscription, after_position) = query
        .after
        .map_or((-1, -1), |key| (key.subscription.0, key.position));
    let rows = bind_filter!(sqlx::query(LIST_SQL), bound)
        .bind(query.state.map(DeliveryState::as_str))
        .bind(after_subscription)
        .bind(after_position)
        .bind(i64::from(page_size))
        .fetch_all(store.ops(&mut conn))
        .await?;
    let deliveries = rows.iter().map(summary).collect::<Result<Vec<_>>>()?;
    let next = (deliveries.len() == page_size as usize)
        .then(|| deliveries.last().map(|last| last.key))
        .flatten();
    Ok(DeliveryPage { deliveries, next })
}

pub(super) async fn show(
    store: &PgStore,
    handler: &str,
    position: i64,
) -> Result<Option<DeliveryDetail>> {
    let mut conn = store.pool().acquire().await?;
    let subscription = subscribed(store, &mut conn, handler).await?;
    let row = sqlx::query(SHOW_SQL)
        .bind(subscription.id)
        .bind(position)
        .fetch_optional(store.ops(&mut conn))
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let (summary, event_version, payload, metadata) = (
        summary(&row)?,
        row.try_get(13)?,
        row.try_get(14)?,
        row.try_get(15)?,
    );
    Ok(Some(DeliveryDetail {
        summary,
        event_version,
        position,
        payload,
        metadata,
    }))
}

pub(super) async fn retry_dead(store: &PgStore, selector: &Selector) -> Result<u64> {
    let mut tx = store.pool().begin().await?;
    let bound = bind(store, &mut tx, selector).await?;
    let (retried, _woken): (i64, i64) = bind_filter!(sqlx::query_as(RETRY_SQL), bound)
        .bind(bound.limit)
        .fetch_one(store.ops(&mut tx))
        .await?;
    tx.commit().await?;
    Ok(u64::try_from(retried).unwrap_or(0))
}

pub(super) async fn purge_dead(store: &PgStore, selector: &Selector) -> Result<u64> {
    delete(store, selector, PURGE_SQL).await
}

pub(super) async fn cancel_pending(store: &PgStore, selector: &Selector) -> Result<u64> {
    delete(store, selector, CANCEL_SQL).await
}

async fn delete(store: &PgStore, selector: &Selector, sql: &'static str) -> Result<u64> {
    let mut tx = store.pool().begin().await?;
    let bound = bind(store, &mut tx, selector).await?;
    let (deleted,): (i64,) = bind_filter!(sqlx::query_as(sql), bound)
        .bind(bound.limit)
        .fetch_one(store.ops(&mut tx))
        .await?;
    tx.commit().await?;
    Ok(u64::try_from(deleted).unwrap_or(0))
}
