//! The backfill of a new subscription that starts from its history (`start_from`).
//!
//! Registration records where the history starts (`backfill_after`) and the highest position
//! handed out at that moment (`backfill_head`). SQLite runs one write transaction at a time, so
//! every event above the head was published by a transaction that began after the registration
//! committed: it saw the subscription and gave it its delivery. Every event in `(after, head]`
//! was published without it, and is what the backfill copies. So unlike PostgreSQL's, this
//! backfill waits for no transaction in flight and never holds the subscription's claims: the
//! history is exactly `(after, head]`, known from the start.
//!
//! Each step is one write transaction (so the steps of several processes take turns) that copies
//! the next chunk of the history, skipping events that have a row already (a replay may have
//! delivered some), unless more than two chunks of copied deliveries are still open (dead
//! letters do not count: they wait for an operator). Copied deliveries are due at the
//! subscription's creation, before anything published since, so the history is claimed first,
//! in log order. The step that reaches the head ends the backfill; the next reports it done.

use super::replay::{Wanted, copy};
use super::{SqliteStore, subscribed};
use osa_events_core::Result;
use osa_events_core::operations::{BackfillStep, checked_backfill_chunk};

const PENDING_SQL: &str = r#"
select backfill_after, backfill_head, created_at from subscriptions where id = ?1
"#;

/// The copied deliveries still open, counted up to `?3`.
pub(super) const OPEN_SQL: &str = r#"
select count(*) from (
    select 1 from deliveries
    where subscription_id = ?1 and event_position <= ?2 and status <> 'dead'
    limit ?3
)
"#;

const ADVANCE_SQL: &str = "update subscriptions set backfill_after = ?2 where id = ?1";

const FINISH_SQL: &str =
    "update subscriptions set backfill_after = null, backfill_head = null where id = ?1";

/// One step of the backfill of `handler`; wakes its workers when it copied anything.
pub(super) async fn step(store: &SqliteStore, handler: &str, chunk: u32) -> Result<BackfillStep> {
    let chunk = checked_backfill_chunk(chunk)?;
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
    let subscription = subscribed(&mut tx, handler).await?;
    let (after, head, created_at): (Option<i64>, Option<i64>, f64) = sqlx::query_as(PENDING_SQL)
        .bind(subscription.id)
        .fetch_one(&mut *tx)
        .await?;
    let (Some(after), Some(head)) = (after, head) else {
        return Ok(BackfillStep::Done);
    };
    if after >= head {
        sqlx::query(FINISH_SQL)
            .bind(subscription.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Ok(BackfillStep::Done);
    }
    let cap = 2 * i64::from(chunk) + 1;
    let open: i64 = sqlx::query_scalar(OPEN_SQL)
        .bind(subscription.id)
        .bind(head)
        .bind(cap)
        .fetch_one(&mut *tx)
        .await?;
    if open >= cap {
        return Ok(BackfillStep::Waiting);
    }
    let wanted = Wanted {
        routing_key: subscription.routing_key.as_deref(),
        ..Wanted::default()
    };
    let copied = copy(
        &mut tx,
        &subscription,
        (after, head),
        chunk,
        wanted,
        Some(created_at),
    )
    .await?;
    let through = copied.last_read.unwrap_or(head).max(after);
    let advance = if through >= head {
        sqlx::query(FINISH_SQL).bind(subscription.id)
    } else {
        sqlx::query(ADVANCE_SQL).bind(subscription.id).bind(through)
    };
    advance.execute(&mut *tx).await?;
    tx.commit().await?;
    if copied.inserted > 0 {
        store.wake_subscription(subscription.id());
    }
    Ok(BackfillStep::Copied {
        delivered: copied.inserted,
        through,
        end: head,
    })
}
