//! Pausing, resuming and retiring subscriptions, and listing them with their liveness.
//!
//! Pause and retirement are columns of the subscription that every claim reads (`PICK_SQL`), so
//! every process sharing the file honours them at its next claim, without a message to any.
//! Retirement also stops publishing to the subscription (the fan-out skips retired ones) and
//! deletes its work. On SQLite no publish can straddle the retirement: writers take turns, and a
//! publish reads `retired_at` inside its own write transaction, so one that commits after the
//! retirement sees it, and one that committed before left rows the retirement deletes. Nothing
//! is left behind to wait for.

use super::{SqliteStore, count, nodes, subscribed};
use crate::time::from_epoch_seconds;
use osa_events_core::operations::{Liveness, RetireMode, Retired, SubscriptionInfo};
use osa_events_core::store::SubscriptionId;
use osa_events_core::{Error, Result};

const PAUSE_SQL: &str = r#"
update subscriptions set paused_at = unixepoch('subsec'), updated_at = unixepoch('subsec')
where id = ?1 and paused_at is null
"#;

const RESUME_SQL: &str = r#"
update subscriptions set paused_at = null, updated_at = unixepoch('subsec')
where id = ?1 and paused_at is not null
"#;

pub(super) const SUBSCRIPTIONS_SQL: &str = r#"
select s.id, s.name, s.event_type, s.routing_key, s.created_at, s.paused_at, s.retired_at,
       (select count(*) from deliveries d
         where d.subscription_id = s.id and d.status <> 'dead'),
       (select count(*) from deliveries d indexed by deliveries_dead
         where d.subscription_id = s.id and d.status = 'dead')
from subscriptions s
order by s.name
"#;

/// Retired since it first was; a pending backfill is dropped with the work.
const RETIRE_SQL: &str = r#"
update subscriptions
set retired_at = coalesce(retired_at, unixepoch('subsec')), backfill_after = null,
    backfill_head = null, updated_at = unixepoch('subsec')
where id = ?1
"#;

pub(super) const DELETE_WORK_SQL: &str =
    "delete from deliveries where subscription_id = ?1 returning status";

pub(super) async fn pause(store: &SqliteStore, handler: &str) -> Result<bool> {
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
    let subscription = subscribed(&mut tx, handler).await?;
    let changed = sqlx::query(PAUSE_SQL)
        .bind(subscription.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(changed > 0)
}

/// Resumes, and wakes the subscription's workers: what accumulated while it was paused is due.
pub(super) async fn resume(store: &SqliteStore, handler: &str) -> Result<bool> {
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
    let subscription = subscribed(&mut tx, handler).await?;
    let changed = sqlx::query(RESUME_SQL)
        .bind(subscription.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    if changed > 0 {
        store.wake_subscription(subscription.id());
    }
    Ok(changed > 0)
}

type SubscriptionRow = (
    i32,
    String,
    String,
    Option<String>,
    f64,
    Option<f64>,
    Option<f64>,
    i64,
    i64,
);

pub(super) async fn subscriptions(store: &SqliteStore) -> Result<Vec<SubscriptionInfo>> {
    let mut tx = store.pool().begin().await?;
    let nodes = nodes::list(&mut tx).await?;
    let rows: Vec<SubscriptionRow> = sqlx::query_as(SUBSCRIPTIONS_SQL)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|row| SubscriptionInfo {
            id: SubscriptionId(row.0),
            liveness: Liveness::of(&row.1, &nodes),
            name: row.1,
            event_type: row.2,
            routing_key: row.3,
            created_at: from_epoch_seconds(row.4),
            paused_at: row.5.map(from_epoch_seconds),
            retired_at: row.6.map(from_epoch_seconds),
            open: count(row.7),
            dead: count(row.8),
        })
        .collect())
}

/// Retires `handler` in one write transaction: its liveness is judged from the nodes as that
/// transaction sees them, and its work is deleted with the retirement.
pub(super) async fn retire(
    store: &SqliteStore,
    handler: &str,
    mode: RetireMode,
) -> Result<Retired> {
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
    let subscription = subscribed(&mut tx, handler).await?;
    let nodes = nodes::list(&mut tx).await?;
    if let (Liveness::Running { nodes }, RetireMode::IfNotRunning) =
        (Liveness::of(&subscription.name, &nodes), mode)
    {
        return Err(Error::Config(
            format!(
                "handler `{handler}` is running on {nodes} live node(s): retiring it would leave \
                 them claiming nothing; stop or redeploy them without it first, or retire it \
                 even if running (`RetireMode::EvenIfRunning`, `osa-events retire --even-if-running`)"
            )
            .into(),
        ));
    }
    sqlx::query(RETIRE_SQL)
        .bind(subscription.id)
        .execute(&mut *tx)
        .await?;
    let deleted: Vec<String> = sqlx::query_scalar(DELETE_WORK_SQL)
        .bind(subscription.id)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let dead = deleted.iter().filter(|status| *status == "dead").count() as u64;
    Ok(Retired {
        open: deleted.len() as u64 - dead,
        dead,
    })
}
