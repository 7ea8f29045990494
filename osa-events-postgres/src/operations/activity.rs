//! The activity history (`osa_events.activity`): per handler and projection, what the runtimes
//! counted, added up per minute of the database's clock.
//!
//! Several nodes add into the same row at once: the upsert's `on conflict do update` adds to the
//! row's committed counts (a second writer waits for the first's row lock, then adds to what it
//! wrote), so no count is lost ([INSERT ... ON CONFLICT](https://www.postgresql.org/docs/current/sql-insert.html#SQL-ON-CONFLICT)).
//! The rows of one call are written in key order, so two calls never wait for each other in a
//! circle.

use std::time::SystemTime;

use super::{PgStore, epoch_seconds, seconds};
use osa_events_core::Result;
use osa_events_core::operations::{ACTIVITY_KEPT, ActivityBucket, ActivityDelta, ActivityKind};

/// Adds the deltas of arrays `$1` to `$5` (kind, name, handled, failed, dead) to the current
/// minute's rows, and deletes the rows older than `$6` seconds, in one statement. The same name
/// twice in one call is added up first (an upsert may touch a row only once per statement).
const RECORD_SQL: &str = r#"
with added as (
    insert into osa_events.activity as a (kind, name, minute, handled, failed, dead)
    select d.kind, d.name, date_trunc('minute', now()),
           sum(d.handled)::int8, sum(d.failed)::int8, sum(d.dead)::int8
    from unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[])
        as d (kind, name, handled, failed, dead)
    group by d.kind, d.name
    order by d.kind, d.name
    on conflict (minute, kind, name) do update
    set handled = a.handled + excluded.handled,
        failed = a.failed + excluded.failed,
        dead = a.dead + excluded.dead
    returning 1
), forgotten as (
    delete from osa_events.activity
    where minute < now() - make_interval(secs => $6)
    returning 1
)
select (select count(*) from added), (select count(*) from forgotten)
"#;

/// The rows from the minute of `$1` (epoch seconds) on, in the API's order: names compared
/// byte by byte (`collate "C"`), as every store sorts them, whatever the database's collation.
const LIST_SQL: &str = r#"
select kind, name, extract(epoch from minute)::int8, handled, failed, dead
from osa_events.activity
where minute >= date_trunc('minute', to_timestamp($1))
order by kind, name collate "C", minute
"#;

/// A count as the `bigint` the table keeps.
fn stored(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

pub(super) async fn record(store: &PgStore, deltas: &[ActivityDelta]) -> Result<()> {
    let deltas: Vec<&ActivityDelta> = deltas.iter().filter(|delta| !delta.is_empty()).collect();
    if deltas.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = deltas.iter().map(|delta| delta.kind.as_str()).collect();
    let names: Vec<&str> = deltas.iter().map(|delta| delta.name.as_str()).collect();
    let count = |of: fn(&ActivityDelta) -> u64| -> Vec<i64> {
        deltas.iter().map(|delta| stored(of(delta))).collect()
    };
    let mut conn = store.pool().acquire().await?;
    let _: (i64, i64) = sqlx::query_as(RECORD_SQL)
        .bind(kinds)
        .bind(names)
        .bind(count(|delta| delta.handled))
        .bind(count(|delta| delta.failed))
        .bind(count(|delta| delta.dead))
        .bind(seconds(ACTIVITY_KEPT))
        .fetch_one(store.ops(&mut conn))
        .await?;
    Ok(())
}

pub(super) async fn list(store: &PgStore, since: SystemTime) -> Result<Vec<ActivityBucket>> {
    let mut conn = store.pool().acquire().await?;
    let rows: Vec<(String, String, i64, i64, i64, i64)> = sqlx::query_as(LIST_SQL)
        .bind(epoch_seconds(since))
        .fetch_all(store.ops(&mut conn))
        .await?;
    rows.into_iter()
        .map(|(kind, name, minute, handled, failed, dead)| {
            Ok(ActivityBucket {
                kind: kind.parse::<ActivityKind>()?,
                name,
                minute: SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(minute).unwrap_or(0)),
                handled: u64::try_from(handled).unwrap_or(0),
                failed: u64::try_from(failed).unwrap_or(0),
                dead: u64::try_from(dead).unwrap_or(0),
            })
        })
        .collect()
}
