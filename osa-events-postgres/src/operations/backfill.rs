//! The backfill of a new subscription that starts from its history (`start_from`).
//!
//! Registration records where the history starts (`backfill_after`) and the highest position
//! handed out at that moment (`backfill_head`): every event at or below it was published without
//! seeing the subscription. It also holds the subscription's claims. Then each step, in a
//! transaction that locks the subscription's row (so the steps of several nodes take turns):
//!
//! 1. The first step notes the bound of the transactions in flight (`backfill_xmax`): one that
//!    was publishing while the subscription was created may have published without seeing it,
//!    at positions above the head too, and its events become visible only when it commits.
//! 2. Once every one of those has ended, the step notes the highest position handed out by then
//!    (`backfill_through`): every event above it was published by a statement that saw the
//!    subscription, so it has its delivery.
//! 3. The window `(head, through]` is copied first, skipping events that have a delivery already.
//!    Claims are still held, so none of those deliveries can have completed (and disappeared)
//!    before the copy skips it: nothing is delivered twice. Then claims are released.
//! 4. The history up to the head is copied chunk by chunk, at most two chunks open at a time.
//!    Nothing there can have a delivery of its own.
//!
//! Copied deliveries are due at the subscription's creation, before anything published since,
//! so the history is claimed first, in log order; a delayed event whose due time is later is due
//! then instead (see [`COPY_SQL`](super::replay::COPY_SQL)).

use super::replay::copy;
use super::{PgStore, subscribed};
use osa_events_core::Result;
use osa_events_core::operations::{BackfillStep, checked_backfill_chunk};

const LOCK_SQL: &str = r#"
select backfill_after, backfill_head, backfill_xmax::text, backfill_through, backfill_window,
       backfill_holds_claims, extract(epoch from created_at)::float8,
       case when backfill_xmax is null then null
            else pg_snapshot_xmin(pg_current_snapshot()) >= backfill_xmax end
from osa_events.subscriptions where id = $1
for update
"#;

const NOTE_XMAX_SQL: &str = r#"
update osa_events.subscriptions set backfill_xmax = pg_snapshot_xmax(pg_current_snapshot())
where id = $1
"#;

const NOTE_THROUGH_SQL: &str = r#"
update osa_events.subscriptions
set backfill_through = osa_events.allocated_head(), backfill_window = backfill_head
where id = $1
returning backfill_through
"#;

const ADVANCE_WINDOW_SQL: &str = r#"
update osa_events.subscriptions set backfill_window = $2 where id = $1
"#;

/// The window is copied: claims go on, and the claim loops are woken.
const RELEASE_CLAIMS_SQL: &str = r#"
update osa_events.subscriptions set backfill_window = $2, backfill_holds_claims = false
where id = $1
returning pg_notify('osa_events', id::text)
"#;

/// The copied deliveries still open (dead letters do not count: they wait for an operator),
/// counted up to `$3`.
const OPEN_SQL: &str = r#"
select count(*) from (
    select 1 from osa_events.deliveries
    where subscription_id = $1 and event_position <= $2 and status <> 'dead'
    limit $3
) as open
"#;

const ADVANCE_SQL: &str = "update osa_events.subscriptions set backfill_after = $2 where id = $1";

const FINISH_SQL: &str = r#"
update osa_events.subscriptions
set backfill_after = null, backfill_head = null, backfill_xmax = null, backfill_through = null,
    backfill_window = null, backfill_holds_claims = false
where id = $1
"#;

pub(super) async fn step(store: &PgStore, handler: &str, chunk: u32) -> Result<BackfillStep> {
    let chunk = checked_backfill_chunk(chunk)?;
    let mut tx = store.pool().begin().await?;
    let subscription = subscribed(store, &mut tx, handler).await?;
    #[allow(clippy::type_complexity)]
    let (after, head, xmax, through, window, holds_claims, created_at, settled): (
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<i64>,
        Option<i64>,
        bool,
        f64,
        Option<bool>,
    ) = sqlx::query_as(LOCK_SQL)
        .bind(subscription.id)
        .fetch_one(store.ops(&mut tx))
        .await?;
    let (Some(after), Some(head)) = (after, head) else {
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
    let (through, window) = match (through, window) {
        (Some(through), Some(window)) => (through, window),
        _ if settled == Some(true) => {
            let (through,): (i64,) = sqlx::query_as(NOTE_THROUGH_SQL)
                .bind(subscription.id)
                .fetch_one(store.ops(&mut tx))
                .await?;
            (through, head)
        }
        _ => return Ok(BackfillStep::Waiting),
    };
    let due_at = Some(created_at);
    if window < through {
        let copied = copy(
            store,
            &mut tx,
            &subscription,
            window,
            through,
            chunk,
            subscription.routing_key.as_deref(),
            (None, None),
            due_at,
        )
        .await?;
        let window = copied.last_read.unwrap_or(through).max(window);
        let sql = if window >= through {
            RELEASE_CLAIMS_SQL
        } else {
            ADVANCE_WINDOW_SQL
        };
        sqlx::query(sql)
            .bind(subscription.id)
            .bind(window)
            .execute(store.ops(&mut tx))
            .await?;
        tx.commit().await?;
        return Ok(BackfillStep::Copied {
            delivered: copied.inserted,
            through: window,
            end: through,
        });
    }
    // An empty window (nothing was published while the subscription was created): the claims
    // are released by the first history step.
    if holds_claims && after < head {
        sqlx::query(RELEASE_CLAIMS_SQL)
            .bind(subscription.id)
            .bind(window)
            .execute(store.ops(&mut tx))
            .await?;
    }
    if after >= head {
        sqlx::query(FINISH_SQL)
            .bind(subscription.id)
            .execute(store.ops(&mut tx))
            .await?;
        tx.commit().await?;
        return Ok(BackfillStep::Done);
    }
    let cap = 2 * i64::from(chunk) + 1;
    let (open,): (i64,) = sqlx::query_as(OPEN_SQL)
        .bind(subscription.id)
        .bind(head)
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
        head,
        chunk,
        subscription.routing_key.as_deref(),
        (None, None),
        due_at,
    )
    .await?;
    let copied_through = copied.last_read.unwrap_or(head).max(after);
    let sql = if copied_through >= head {
        FINISH_SQL
    } else {
        ADVANCE_SQL
    };
    let mut finish = sqlx::query(sql).bind(subscription.id);
    if copied_through < head {
        finish = finish.bind(copied_through);
    }
    finish.execute(store.ops(&mut tx)).await?;
    tx.commit().await?;
    Ok(BackfillStep::Copied {
        delivered: copied.inserted,
        through: copied_through,
        end: head,
    })
}
