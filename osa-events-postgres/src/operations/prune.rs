//! Retention: deleting old events that nothing needs any more, a batch per short transaction.
//!
//! A step examines the next batch of the log in position order and stops at the first event
//! younger than the cutoff (positions follow publish order closely; an older event behind a
//! younger one waits for the next pass). Of the older ones it deletes those that no delivery
//! refers to (open, or dead unless the pass includes dead letters) and that every projection's
//! checkpoint has passed, then the commit rows left without events. It deletes rows only
//! publishers never touch, so it takes no lock a publisher waits for; the retention lock (an
//! advisory lock held for the step's transaction) keeps two passes from doing the same batch.

use super::{PgStore, seconds};
use osa_events_core::Result;
use osa_events_core::operations::{Prune, PruneStep};

/// `hashtext('osa_events.retention')`, in the advisory-lock space of the projections' leader
/// locks' first key (see projection/leader.rs): one key for the whole database.
const LOCK_SQL: &str = "select pg_try_advisory_xact_lock(hashtext('osa_events.retention'))";

/// The lookups below go by primary key, subscription by subscription, whatever the statistics;
/// no JIT (the disabled scans' costs would pass its thresholds and compile every step, 100 ms of
/// a 150 ms step); and the step commits without waiting for its WAL to be flushed: a step lost
/// in a server crash only leaves its events for the next pass, and publishers' commits do not
/// queue behind its flushes.
const PLAN_SQL: &str = r#"
select set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
       set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true),
       set_config('enable_material', 'off', true), set_config('jit', 'off', true),
       set_config('synchronous_commit', 'off', true)
"#;

const EXAMINE_SQL: &str = r#"
select e.position, e.created_at < now() - make_interval(secs => $3)
from osa_events.events e
where e.position > $1
order by e.position
limit $2
"#;

/// The events of `$1` that no projection still has ahead of it.
const PASSED_SQL: &str = r#"
select e.position
from unnest($1::int8[]) as c (position)
join osa_events.events e on e.position = c.position
join osa_events.commits k on k.id = e.commit_id
where not exists (
    select 1 from osa_events.checkpoints p
    where (k.seq, e.position) > (p.commit_seq, p.position)
)
"#;

/// Dead letters of the events in `$1` that have no open delivery.
const DEAD_SQL: &str = r#"
with c as (select unnest($1::int8[]) as position),
open_events as (
    select c.position from c
    cross join osa_events.subscriptions s
    join osa_events.deliveries d
      on d.subscription_id = s.id and d.event_position = c.position and d.status <> 'dead'
), gone as (
    delete from osa_events.deliveries d
    using osa_events.subscriptions s, c
    where d.subscription_id = s.id and d.event_position = c.position and d.status = 'dead'
      and c.position not in (select position from open_events)
    returning 1
)
select count(*) from gone
"#;

const DELETE_SQL: &str = r#"
with c as (select unnest($1::int8[]) as position),
free as (
    select c.position from c
    where not exists (
        select 1 from osa_events.subscriptions s
        join osa_events.deliveries d on d.subscription_id = s.id and d.event_position = c.position
    )
), gone as (
    delete from osa_events.events e using free f where e.position = f.position
    returning e.commit_id
)
select count(*), coalesce(array_agg(distinct commit_id), '{}') from gone
"#;

const COMMITS_SQL: &str = r#"
delete from osa_events.commits k
where k.id = any($1) and k.seq is not null
  and not exists (select 1 from osa_events.events e where e.commit_id = k.id)
"#;

pub(super) async fn step(store: &PgStore, prune: &Prune, after: i64) -> Result<PruneStep> {
    let batch = prune.checked_batch()?;
    let mut tx = store.pool().begin().await?;
    let (locked,): (bool,) = sqlx::query_as(LOCK_SQL)
        .fetch_one(store.ops(&mut tx))
        .await?;
    if !locked {
        return Ok(PruneStep {
            through: after,
            busy: true,
            ..PruneStep::default()
        });
    }
    sqlx::query(PLAN_SQL).execute(store.ops(&mut tx)).await?;
    let examined: Vec<(i64, bool)> = sqlx::query_as(EXAMINE_SQL)
        .bind(after)
        .bind(i64::from(batch))
        .bind(seconds(prune.older_than))
        .fetch_all(store.ops(&mut tx))
        .await?;
    let old: Vec<i64> = examined
        .iter()
        .take_while(|(_, old)| *old)
        .map(|(position, _)| *position)
        .collect();
    let done = old.len() < examined.len() || examined.len() < batch as usize;
    let Some(&through) = old.last() else {
        return Ok(PruneStep {
            through: after,
            done: true,
            ..PruneStep::default()
        });
    };
    let passed: Vec<(i64,)> = sqlx::query_as(PASSED_SQL)
        .bind(&old)
        .fetch_all(store.ops(&mut tx))
        .await?;
    let passed: Vec<i64> = passed.into_iter().map(|(position,)| position).collect();
    let mut dead = 0;
    if prune.include_dead && !passed.is_empty() {
        let (gone,): (i64,) = sqlx::query_as(DEAD_SQL)
            .bind(&passed)
            .fetch_one(store.ops(&mut tx))
            .await?;
        dead = u64::try_from(gone).unwrap_or(0);
    }
    let mut events = 0;
    if !passed.is_empty() {
        let (deleted, commits): (i64, Vec<i64>) = sqlx::query_as(DELETE_SQL)
            .bind(&passed)
            .fetch_one(store.ops(&mut tx))
            .await?;
        events = u64::try_from(deleted).unwrap_or(0);
        sqlx::query(COMMITS_SQL)
            .bind(&commits)
            .execute(store.ops(&mut tx))
            .await?;
    }
    tx.commit().await?;
    Ok(PruneStep {
        events,
        dead,
        kept: old.len() as u64 - events,
        through,
        done,
        busy: false,
    })
}
