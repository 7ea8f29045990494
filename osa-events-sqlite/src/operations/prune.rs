//! Retention: deleting old events that nothing needs any more, a batch per short write
//! transaction.
//!
//! A step examines the next batch of the log in position order and stops at the first event
//! younger than the cutoff (positions follow commit order, and publish times with them unless
//! the clock was set back; an older event behind a younger one waits for the next pass). Of the older ones it deletes those that no delivery refers to (open,
//! or dead unless the pass includes dead letters) and that every projection's checkpoint has
//! passed. It selects them with the condition of the trigger `events_keep_their_deliveries`,
//! so the trigger never refuses what it deletes.
//!
//! There is no retention lock to take, and [`PruneStep::busy`] is never set: a step is one write
//! transaction, which SQLite runs alone, so two passes (one per process) never work at the same
//! time. A second pass's step waits for the first's (up to the busy timeout), then examines what
//! the first left; it repeats no deletion.

use super::SqliteStore;
use osa_events_core::Result;
use osa_events_core::operations::{Prune, PruneStep};

/// The next `?2` events after `?1`, and whether each was published more than `?3` seconds ago.
const EXAMINE_SQL: &str = r#"
select position, created_at < unixepoch('subsec') - ?3
from events
where position > ?1
order by position
limit ?2
"#;

/// The events of `?1` (a JSON array of positions) that every projection has passed: on SQLite
/// the log's order is position order, so a checkpoint has passed every position up to its own.
macro_rules! passed {
    () => {
        r#"
with passed as (
    select c.value as position from json_each(?1) as c
    where not exists (select 1 from checkpoints k where k.position < c.value)
)"#
    };
}

/// Some subscription's delivery (`$status`: any, open or dead) of the event at `$position`.
/// `cross join` keeps SQLite's planner from driving the join from `deliveries` (a scan of every
/// row, without statistics): the few subscriptions outside, one primary-key probe each. The
/// trigger `events_keep_their_deliveries` checks the same condition.
macro_rules! delivered {
    ($position:literal, $status:literal) => {
        concat!(
            "exists (select 1 from subscriptions s cross join deliveries d\n",
            "          on d.subscription_id = s.id and d.event_position = ",
            $position,
            "\n          where ",
            $status,
            ")"
        )
    };
}

/// Dead letters of the passed events of `?1` that have no open delivery.
pub(super) const DEAD_SQL: &str = concat!(
    passed!(),
    r#"
delete from deliveries
where status = 'dead'
  and (subscription_id, event_position) in (
    select s.id, p.position from passed p cross join subscriptions s
    where not "#,
    delivered!("p.position", "d.status <> 'dead'"),
    r#"
  )
"#
);

/// The passed events of `?1` that no delivery refers to.
pub(super) const DELETE_SQL: &str = concat!(
    passed!(),
    r#"
delete from events
where position in (select position from passed)
  and not "#,
    delivered!("events.position", "true"),
    "\n"
);

/// One step of `prune` after `after`, in one write transaction.
pub(super) async fn step(store: &SqliteStore, prune: &Prune, after: i64) -> Result<PruneStep> {
    let batch = prune.checked_batch()?;
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
    let examined: Vec<(i64, bool)> = sqlx::query_as(EXAMINE_SQL)
        .bind(after)
        .bind(i64::from(batch))
        .bind(prune.older_than.as_secs_f64())
        .fetch_all(&mut *tx)
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
    let positions = serde_json::to_string(&old).expect("positions serialize");
    let dead = if prune.include_dead {
        sqlx::query(DEAD_SQL)
            .bind(&positions)
            .execute(&mut *tx)
            .await?
            .rows_affected()
    } else {
        0
    };
    let events = sqlx::query(DELETE_SQL)
        .bind(&positions)
        .execute(&mut *tx)
        .await?
        .rows_affected();
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
