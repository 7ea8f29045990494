//! The activity history (`activity`): per handler and projection, what the runtimes counted,
//! added up per minute of the store's clock.
//!
//! One write transaction (`BEGIN IMMEDIATE`) per call, which SQLite runs alone: each upsert adds
//! to the row as the previous writer left it, so the calls of several processes sharing the file
//! lose no count.

use std::time::{Duration, SystemTime};

use super::{SqliteStore, count, epoch_seconds};
use osa_events_core::Result;
use osa_events_core::operations::{ACTIVITY_KEPT, ActivityBucket, ActivityDelta, ActivityKind};

/// The current minute of the store's clock (whole seconds since the Unix epoch), and the time
/// before which rows are deleted (`?1` seconds ago): read once, so every delta of a call goes
/// into the same minute.
const NOW_SQL: &str = "select (unixepoch() / 60) * 60, unixepoch('subsec') - ?1";

/// Adds counts `?3` to `?5` to the row of kind `?1`, name `?2` and minute `?6`, creating it.
const ADD_SQL: &str = r#"
insert into activity (kind, name, minute, handled, failed, dead)
values (?1, ?2, ?6, ?3, ?4, ?5)
on conflict (minute, kind, name) do update
set handled = handled + excluded.handled,
    failed = failed + excluded.failed,
    dead = dead + excluded.dead
"#;

/// Deletes the rows of minutes before `?1`: a range of the key.
pub(super) const FORGET_SQL: &str = "delete from activity where minute < ?1";

/// The rows from minute `?1` on, in the API's order (names compared byte by byte, SQLite's
/// default collation).
pub(super) const LIST_SQL: &str = r#"
select kind, name, minute, handled, failed, dead
from activity
where minute >= ?1
order by kind, name, minute
"#;

/// A count as the INTEGER the table keeps.
fn stored(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

pub(super) async fn record(store: &SqliteStore, deltas: &[ActivityDelta]) -> Result<()> {
    let deltas: Vec<&ActivityDelta> = deltas.iter().filter(|delta| !delta.is_empty()).collect();
    if deltas.is_empty() {
        return Ok(());
    }
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
    let (minute, cutoff): (i64, f64) = sqlx::query_as(NOW_SQL)
        .bind(ACTIVITY_KEPT.as_secs_f64())
        .fetch_one(&mut *tx)
        .await?;
    for delta in deltas {
        sqlx::query(ADD_SQL)
            .bind(delta.kind.as_str())
            .bind(&delta.name)
            .bind(stored(delta.handled))
            .bind(stored(delta.failed))
            .bind(stored(delta.dead))
            .bind(minute)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(FORGET_SQL)
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list(store: &SqliteStore, since: SystemTime) -> Result<Vec<ActivityBucket>> {
    let since = epoch_seconds(since).max(0.0) as i64;
    let rows: Vec<(String, String, i64, i64, i64, i64)> = sqlx::query_as(LIST_SQL)
        .bind(since - since % 60)
        .fetch_all(store.pool())
        .await?;
    rows.into_iter()
        .map(|(kind, name, minute, handled, failed, dead)| {
            Ok(ActivityBucket {
                kind: kind.parse::<ActivityKind>()?,
                name,
                minute: SystemTime::UNIX_EPOCH
                    + Duration::from_secs(u64::try_from(minute).unwrap_or(0)),
                handled: count(handled),
                failed: count(failed),
                dead: count(dead),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use osa_events_core::operations::{ActivityDelta, ActivityKind, Operations};

    use crate::SqliteStore;

    /// A record deletes the rows older than two hours before the store's now (the contract
    /// checks this only where time can leap): rows written as if two and three hours ago.
    #[tokio::test]
    async fn a_record_deletes_rows_older_than_two_hours() {
        let store = SqliteStore::temporary().await.expect("a temporary file");
        store.migrate().await.expect("the migrations run");
        sqlx::query(
            "insert into activity (kind, name, minute, handled)
             select 'handler', 'old', (unixepoch() / 60) * 60 - value * 60, value
             from json_each('[180, 121, 119]')",
        )
        .execute(store.pool())
        .await
        .expect("old rows");
        let new = ActivityDelta {
            kind: ActivityKind::Handler,
            name: "new".into(),
            handled: 1,
            failed: 0,
            dead: 0,
        };
        store.record_activity(&[new]).await.expect("a record");
        let kept: Vec<(String, u64)> = store
            .activity(std::time::SystemTime::UNIX_EPOCH)
            .await
            .expect("the history")
            .into_iter()
            .map(|bucket| (bucket.name, bucket.handled))
            .collect();
        assert_eq!(
            kept,
            [("new".to_owned(), 1), ("old".to_owned(), 119)],
            "the rows of 3 h and 2 h 1 min ago are gone"
        );
    }
}
