//! [`Status`] on PostgreSQL: one statement over the subscriptions, each figure from an index.
//!
//! The counts are index-only scans of `deliveries_claimable` (which carries the state) and
//! `deliveries_dead`, each stopped after [`HandlerStatus::EXACT_UP_TO`] rows; the oldest due
//! delivery and the next one to be claimed are the first entry of `deliveries_claimable`; live
//! claims are read from the rows (few: at most every loop's batch); the last error is the
//! subscription's own column, kept by `fail_deliveries`. So status costs about the same at a
//! million open deliveries as at a thousand.

use sqlx::Row;

use super::{PgStore, subscription_id};
use crate::store::{age, from_epoch_seconds};
use osa_events_core::Result;
use osa_events_core::operations::{Count, HandlerStatus, Liveness, Status};

/// Every subscription's figures; `$1` is the cap of each count.
pub const STATUS_SQL: &str = r#"
select s.id, s.name, s.event_type, s.routing_key,
       extract(epoch from s.paused_at)::float8,
       extract(epoch from s.retired_at)::float8,
       s.last_error, extract(epoch from s.last_failed_at)::float8,
       s.backfill_after, s.backfill_head,
       (select count(*) from (select 1 from osa_events.deliveries d
         where d.subscription_id = s.id and d.status <> 'dead' and d.run_at <= now()
         limit $1) as due) as due,
       (select count(*) from (select 1 from osa_events.deliveries d
         where d.subscription_id = s.id and d.status <> 'dead' and d.run_at > now()
           and d.status = 'pending'
         limit $1) as scheduled) as scheduled,
       (select count(*) from (select 1 from osa_events.deliveries d
         where d.subscription_id = s.id and d.status <> 'dead' and d.run_at > now()
           and d.status = 'claimed'
         limit $1) as claimed) as claimed,
       (select count(*) from (select 1 from osa_events.deliveries d
         where d.subscription_id = s.id and d.status = 'dead'
         limit $1) as dead) as dead,
       (select extract(epoch from now() - d.run_at)::float8 from osa_events.deliveries d
         where d.subscription_id = s.id and d.status <> 'dead' and d.run_at <= now()
         order by d.run_at limit 1) as oldest_due,
       claims.oldest, claims.workers,
       next.event_position, extract(epoch from now() - e.created_at)::float8,
       s.config,
       (select count(*) from (select 1 from osa_events.deliveries d
         where d.subscription_id = s.id and d.status <> 'dead' and d.run_at = 'infinity'
           and d.status = 'waiting'
         limit $1) as waiting) as waiting
from osa_events.subscriptions s
left join lateral (
    select extract(epoch from now() - min(c.claimed_at))::float8 as oldest,
           array(select distinct w from unnest(array_agg(c.claimed_by)) as w
                 where w is not null order by w limit 20) as workers
    from (select d.claimed_at, d.claimed_by from osa_events.deliveries d
          where d.subscription_id = s.id and d.status <> 'dead' and d.run_at > now()
            and d.status = 'claimed'
          limit 1000) as c
) as claims on true
left join lateral (
    select d.event_position from osa_events.deliveries d
    where d.subscription_id = s.id and d.status <> 'dead' and d.run_at < 'infinity'
    order by d.run_at, d.event_position limit 1
) as next on true
left join osa_events.events e on e.position = next.event_position
order by s.name
"#;

/// Index walks only, whatever the statistics: on a table never analyzed the planner takes a
/// bitmap scan for each count, which reads the whole range instead of stopping at the cap. No
/// JIT: the statement's estimated cost passes its thresholds, and compiling took 17 ms of a 61 ms
/// call at a million open deliveries.
pub const STATUS_PLAN_SQL: &str = r#"
select set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
       set_config('jit', 'off', true)
"#;

const HEAD_SQL: &str = r#"
select coalesce((select max(position) from osa_events.events), 0),
       extract(epoch from now())::float8
"#;

pub(super) async fn status(store: &PgStore) -> Result<Status> {
    let nodes = super::nodes::list(store).await?;
    let projections = super::Operations::projections(store).await?;
    let mut conn = store.pool().begin().await?;
    sqlx::query(STATUS_PLAN_SQL)
        .execute(store.ops(&mut conn))
        .await?;
    let (head, now): (i64, f64) = sqlx::query_as(HEAD_SQL)
        .fetch_one(store.ops(&mut conn))
        .await?;
    let cap = HandlerStatus::EXACT_UP_TO;
    let rows = sqlx::query(STATUS_SQL)
        .bind(i64::try_from(cap).unwrap_or(i64::MAX))
        .fetch_all(store.ops(&mut conn))
        .await?;
    conn.commit().await?;
    let count = |n: i64| Count::capped(u64::try_from(n).unwrap_or(0), cap);
    let mut handlers = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get(1)?;
        let event_type: String = row.try_get(2)?;
        let routing_key: Option<String> = row.try_get(3)?;
        let mut handler = HandlerStatus::idle(
            subscription_id(row.try_get(0)?),
            &name,
            &event_type,
            routing_key.as_deref(),
        );
        handler.paused_at = row.try_get::<Option<f64>, _>(4)?.map(from_epoch_seconds);
        handler.retired_at = row.try_get::<Option<f64>, _>(5)?.map(from_epoch_seconds);
        handler.last_error = row
            .try_get::<Option<String>, _>(6)?
            .zip(row.try_get::<Option<f64>, _>(7)?.map(from_epoch_seconds));
        let through: Option<i64> = row.try_get(9)?;
        handler.backfill = row
            .try_get::<Option<i64>, _>(8)?
            .map(|after| (after, through));
        handler.due = count(row.try_get(10)?);
        handler.scheduled = count(row.try_get(11)?);
        handler.claimed = count(row.try_get(12)?);
        handler.dead = count(row.try_get(13)?);
        handler.waiting = count(row.try_get(20)?);
        handler.oldest_due = age(row.try_get(14)?);
        handler.oldest_claim = age(row.try_get(15)?);
        handler.claimed_by = row
            .try_get::<Option<Vec<String>>, _>(16)?
            .unwrap_or_default();
        if let Some(position) = row.try_get::<Option<i64>, _>(17)? {
            handler.lag_events = u64::try_from(head.saturating_sub(position)).unwrap_or(0);
            handler.lag = age(row.try_get(18)?).unwrap_or_default();
        }
        handler.config = row.try_get(19)?;
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
