//! The backfill of a new subscription that starts from its history (`start_from`).
//!
//! Registration records where the history starts (`backfill_after`). Then each step, in a
//! transaction that locks the subscription's row (so the steps of several nodes take turns):
//!
//! 1. The first step notes the bound of the transactions in flight (`backfill_xmax`). A
//!    transaction that was publishing while the subscription was created may have published
//!    without seeing it, and its events become visible only when it commits.
//! 2. Once every one of those has ended, the history is settled: the step fixes the head of the
//!    log as the end (`backfill_through`). Every event at or below it is visible now, and every
//!    later event was published by a statement that saw the subscription, so it has its delivery.
//! 3. Each step then copies one chunk with the replay's copy statement, skipping events that have
//!    a delivery already. The copied deliveries are due at the subscription's creation, before
//!    anything published since, so the history is claimed first, in log order. A step copies
//!    nothing while more than two chunks of copied deliveries are still open.

use super::replay::copy;
use super::{PgStore, in_range, subscribed};
use osa_events_core::Result;
use osa_events_core::operations::BackfillStep;

const LOCK_SQL: &str = r#"
select backfill_after, backfill_xmax::text, backfill_through,
       extract(epoch from created_at)::float8,
       case when backfill_xmax is null then null
            else pg_snapshot_xmin(pg_current_snapshot()) >= backfill_xmax end
from osa_events.subscriptions where id = $1
for update
"#;

const NOTE_XMAX_SQL: &str = r#"
update osa_events.subscriptions set backfill_xmax = pg_snapshot_xmax(pg_current_snapshot())
where id = $1
"#;

const FIX_END_SQL: &str = r#"
update osa_events.subscriptions
set backfill_through = (select coalesce(max(position), 0) from osa_events.events)
where id = $1
returning backfill_through
"#;

/// The copied deliveries still open, counted up to `$3`.
const OPEN_SQL: &str = r#"
select count(*) from (
    select 1 from osa_events.deliveries
    where subscription_id = $1 and event_position <= $2
    limit $3
) as open
"#;

const ADVANCE_SQL: &str = "update osa_events.subscriptions set backfill_after = $2 where id = $1";

const FINISH_SQL: &str = r#"
update osa_events.subscriptions
set backfill_after = null, backfill_xmax = null, backfill_through = null
where id = $1
"#;

pub(super) async fn step(store: &PgStore, handler: &str, chunk: u32) -> Result<BackfillStep> {
    let chunk = in_range("the backfill chunk", chunk, 1..=100_000)?;
    let mut tx = store.pool().begin().await?;
    let subscription = subscribed(store, &mut tx, handler).await?;
    let (after, xmax, through, created_at, settled): (
        Option<i64>,
        Option<String>,
        Option<i64>,
        f64,
        Option<bool>,
    ) = sqlx::query_as(LOCK_SQL)
        .bind(subscription.id)
        .fetch_one(store.ops(&mut tx))
        .await?;
    let Some(after) = after else {
        return Ok(BackfillStep::Done);
    };
    if xmax.is_none() {
        sqlx::query(NOTE_XMAX_SQL)
            .bind(subscription.id)
            .execute(store.ops(&mut tx))
            .await?;
        tx.commit().await?;
        return Ok(BackfillStep::Waiting);
    }
    let end = match through {
        Some(end) => end,
        None if settled == Some(true) => {
            let (end,): (i64,) = sqlx::query_as(FIX_END_SQL)
                .bind(subscription.id)
                .fetch_one(store.ops(&mut tx))
                .await?;
            end
        }
        None => return Ok(BackfillStep::Waiting),
    };
    let cap = 2 * i64::from(chunk) + 1;
    let (open,): (i64,) = sqlx::query_as(OPEN_SQL)
        .bind(subscription.id)
        .bind(end)
        .bind(cap)
        .fetch_one(store.ops(&mut tx))
        .await?;
    if open >= cap {
        tx.commit().await?;
        return Ok(BackfillStep::Waiting);
    }
    let copied = copy(
        store,
        &mut tx,
        &subscription,
        after,
        end,
        chunk,
        subscription.routing_key.as_deref(),
        (None, None),
        Some(created_at),
    )
    .await?;
    let through = copied.last_read.unwrap_or(end).max(after);
    if through >= end {
        sqlx::query(FINISH_SQL)
            .bind(subscription.id)
            .execute(store.ops(&mut tx))
            .await?;
    } else {
        sqlx::query(ADVANCE_SQL)
            .bind(subscription.id)
            .bind(through)
            .execute(store.ops(&mut tx))
            .await?;
    }
    tx.commit().await?;
    Ok(BackfillStep::Copied {
        delivered: copied.inserted,
        through,
        end,
    })
}
