//! Pausing, resuming and retiring subscriptions, and listing them with their liveness.
//!
//! Pause and retirement are columns of the subscription that `claim_deliveries` reads on every
//! claim, so every node honours them at its next claim, without a message to any node.
//! Retirement also stops publishing to the subscription (the publish statement skips retired
//! ones) and deletes its work.

use std::time::Duration;

use super::{PgStore, subscribed, subscription_id};
use crate::store::from_epoch_seconds;
use osa_events_core::operations::{Liveness, RetireMode, Retired, SubscriptionInfo};
use osa_events_core::{Error, Result};

const PAUSE_SQL: &str = r#"
update osa_events.subscriptions set paused_at = now(), updated_at = now()
where id = $1 and paused_at is null
"#;

const RESUME_SQL: &str = r#"
with resumed as (
    update osa_events.subscriptions set paused_at = null, updated_at = now()
    where id = $1 and paused_at is not null
    returning id
)
select count(*), count(pg_notify('osa_events', id::text)) from resumed
"#;

const SUBSCRIPTIONS_SQL: &str = r#"
select s.id, s.name, s.event_type, s.routing_key, extract(epoch from s.created_at)::float8,
       extract(epoch from s.paused_at)::float8, extract(epoch from s.retired_at)::float8,
       (select count(*) from osa_events.deliveries d
         where d.subscription_id = s.id and d.status <> 'dead'),
       (select count(*) from osa_events.deliveries d
         where d.subscription_id = s.id and d.status = 'dead')
from osa_events.subscriptions s
order by s.name
"#;

const RETIRE_SQL: &str = r#"
update osa_events.subscriptions
set retired_at = coalesce(retired_at, now()), backfill_after = null, backfill_head = null,
    backfill_xmax = null, backfill_through = null, backfill_window = null,
    backfill_holds_claims = false, updated_at = now()
where id = $1
"#;

const DELETE_WORK_SQL: &str = r#"
with gone as (
    delete from osa_events.deliveries where subscription_id = $1 returning status
)
select count(*) filter (where status <> 'dead'), count(*) filter (where status = 'dead') from gone
"#;

/// The bound of the transactions in flight now: once every one of them has ended, no publish
/// statement that started before the retirement committed can still add a delivery.
const XMAX_SQL: &str = "select pg_snapshot_xmax(pg_current_snapshot())::text";
const ENDED_SQL: &str = "select pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8";

/// How long a retirement waits for the transactions that were publishing while it committed.
const STRAGGLER_WAIT: Duration = Duration::from_secs(30);

pub(super) async fn pause(store: &PgStore, handler: &str) -> Result<bool> {
    let mut conn = store.pool().acquire().await?;
    let subscription = subscribed(store, &mut conn, handler).await?;
    let changed = sqlx::query(PAUSE_SQL)
        .bind(subscription.id)
        .execute(store.ops(&mut conn))
        .await?
        .rows_affected();
    Ok(changed > 0)
}

pub(super) async fn resume(store: &PgStore, handler: &str) -> Result<bool> {
    let mut conn = store.pool().acquire().await?;
    let subscription = subscribed(store, &mut conn, handler).await?;
    let (changed, _woken): (i64, i64) = sqlx::query_as(RESUME_SQL)
        .bind(subscription.id)
        .fetch_one(store.ops(&mut conn))
        .await?;
    Ok(changed > 0)
}

pub(super) async fn subscriptions(store: &PgStore) -> Result<Vec<SubscriptionInfo>> {
    let nodes = super::nodes::list(store).await?;
    let mut conn = store.pool().acquire().await?;
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        i32,
        String,
        String,
        Option<String>,
        f64,
        Option<f64>,
        Option<f64>,
        i64,
        i64,
    )> = sqlx::query_as(SUBSCRIPTIONS_SQL)
        .fetch_all(store.ops(&mut conn))
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| SubscriptionInfo {
            id: subscription_id(row.0),
            liveness: Liveness::of(&row.1, &nodes),
            name: row.1,
            event_type: row.2,
            routing_key: row.3,
            created_at: from_epoch_seconds(row.4),
            paused_at: row.5.map(from_epoch_seconds),
            retired_at: row.6.map(from_epoch_seconds),
            open: u64::try_from(row.7).unwrap_or(0),
            dead: u64::try_from(row.8).unwrap_or(0),
        })
        .collect())
}

pub(super) async fn retire(store: &PgStore, handler: &str, mode: RetireMode) -> Result<Retired> {
    let nodes = super::nodes::list(store).await?;
    if let (Liveness::Running { nodes }, RetireMode::IfNotRunning) =
        (Liveness::of(handler, &nodes), mode)
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
    let mut tx = store.pool().begin().await?;
    let subscription = subscribed(store, &mut tx, handler).await?;
    sqlx::query(RETIRE_SQL)
        .bind(subscription.id)
        .execute(store.ops(&mut tx))
        .await?;
    let (open, dead): (i64, i64) = sqlx::query_as(DELETE_WORK_SQL)
        .bind(subscription.id)
        .fetch_one(store.ops(&mut tx))
        .await?;
    tx.commit().await?;
    let mut retired = Retired {
        open: u64::try_from(open).unwrap_or(0),
        dead: u64::try_from(dead).unwrap_or(0),
    };
    // A publish statement that read the subscriptions before the retirement committed may still
    // add a delivery: wait for those transactions, then delete what they added.
    let mut conn = store.pool().acquire().await?;
    let (xmax,): (String,) = sqlx::query_as(XMAX_SQL)
        .fetch_one(store.ops(&mut conn))
        .await?;
    let waited = tokio::time::timeout(STRAGGLER_WAIT, async {
        loop {
            let (ended,): (bool,) = sqlx::query_as(ENDED_SQL)
                .bind(&xmax)
                .fetch_one(store.ops(&mut conn))
                .await?;
            if ended {
                return Ok::<(), Error>(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    match waited {
        Ok(result) => {
            result?;
            let (open, dead): (i64, i64) = sqlx::query_as(DELETE_WORK_SQL)
                .bind(subscription.id)
                .fetch_one(store.ops(&mut conn))
                .await?;
            retired.open += u64::try_from(open).unwrap_or(0);
            retired.dead += u64::try_from(dead).unwrap_or(0);
        }
        Err(_) => tracing::warn!(
            handler,
            "retired, but transactions that were publishing when it was retired are still open \
             after {STRAGGLER_WAIT:?}: deliveries they add are never claimed; retire it again \
             later to delete them"
        ),
    }
    Ok(retired)
}
