//! The activity history on PostgreSQL: a running runtime's counts in `osa_events.activity`, and
//! the deletion of old rows (which the contract checks only in memory, where time can leap).

use std::time::{Duration, SystemTime};

use osa_events::Resources;
use osa_events::operations::{ACTIVITY_BUCKET, ActivityBucket, ActivityDelta, ActivityKind};
use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

use super::ops;
use crate::support::{Db, eventually};

/// What `ops.activity.mixed` does with a job.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
enum Fate {
    Complete,
    /// Fails its first attempt retryably, then completes.
    RetryOnce,
    /// Fails permanently: a dead letter.
    Die,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.ops.activity.job")]
struct Job {
    fate: Fate,
}

#[event_handler(
    name = "ops.activity.mixed",
    batch = 5,
    poll = "50ms",
    backoff = "50ms"
)]
async fn mixed(job: Job, ctx: Ctx) -> Result<(), HandlerError> {
    match job.fate {
        Fate::Complete => Ok(()),
        Fate::RetryOnce if ctx.attempt() == 1 => Err(HandlerError::retry("not yet")),
        Fate::RetryOnce => Ok(()),
        Fate::Die => Err(HandlerError::permanent("never")),
    }
}

#[projection(name = "ops.activity.projection", batch = 4, poll = "50ms")]
async fn projected(_jobs: Batch<Job>) -> Result<(), HandlerError> {
    Ok(())
}

const WAIT: Duration = Duration::from_secs(20);

/// (kind, name, handled, failed, dead) per kind and name, summed over the minutes.
fn totals(buckets: &[ActivityBucket]) -> Vec<(ActivityKind, &str, u64, u64, u64)> {
    let mut totals: Vec<(ActivityKind, &str, u64, u64, u64)> = Vec::new();
    for bucket in buckets {
        match totals.last_mut() {
            Some(total) if total.0 == bucket.kind && total.1 == bucket.name => {
                total.2 += bucket.handled;
                total.3 += bucket.failed;
                total.4 += bucket.dead;
            }
            _ => totals.push((
                bucket.kind,
                &bucket.name,
                bucket.handled,
                bucket.failed,
                bucket.dead,
            )),
        }
    }
    totals
}

async fn everything(db: &Db) -> Vec<ActivityBucket> {
    ops(db).activity(SystemTime::UNIX_EPOCH).await.unwrap()
}

/// A runtime with a 200 ms heartbeat: the handler's completions (its retried jobs' second
/// attempts included), retries and dead letters, and the projection's applied events, are in
/// the table while it runs, in whole minutes of the database's clock; its stop adds nothing twice.
#[tokio::test]
async fn a_running_runtime_records_its_handlers_and_projections_activity() {
    use Fate::{Complete, Die, RetryOnce};
    let db = Db::new().await;
    let running = db
        .start_with(
            &["ops.activity.mixed", "ops.activity.projection"],
            Resources::new(),
            |builder| builder.node_heartbeat(Duration::from_millis(200)),
        )
        .await;
    let before = ops(&db).status().await.unwrap().at;
    let fates = [
        [Complete, RetryOnce, Complete, Die, Complete, Complete],
        [RetryOnce, Complete, Die, Complete, RetryOnce, Complete],
        [Complete, Die, Complete, Complete, RetryOnce, Complete],
    ];
    for (n, batch) in fates.iter().enumerate() {
        super::publish_each(&db, 0..6, |i| Job {
            fate: batch[i as usize],
        })
        .await;
        if n == 0 {
            // Some counts land at one heartbeat, the rest at a later one.
            eventually(WAIT, "the first counts are recorded", || async {
                !everything(&db).await.is_empty()
            })
            .await;
        }
    }
    // 18 jobs: 11 complete, 4 fail once and complete, 3 die.
    let expected = [
        (ActivityKind::Handler, "ops.activity.mixed", 15, 4, 3),
        (
            ActivityKind::Projection,
            "ops.activity.projection",
            18,
            0,
            0,
        ),
    ];
    eventually(WAIT, "every count recorded by a heartbeat", || async {
        totals(&everything(&db).await) == expected
    })
    .await;
    assert_eq!(db.deliveries(Some("dead")).await, 3);

    running.stop().await;
    let after = ops(&db).status().await.unwrap().at;
    let buckets = everything(&db).await;
    assert_eq!(totals(&buckets), expected, "the stop flushed nothing twice");
    let minute = |time: SystemTime| {
        let seconds = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds - seconds % 60)
    };
    for bucket in &buckets {
        assert_eq!(bucket.minute, minute(bucket.minute), "a whole minute");
        assert!(
            minute(before) <= bucket.minute && bucket.minute <= after,
            "the database's minutes of the run ({before:?} to {after:?}): {bucket:?}"
        );
    }
}

/// Each record deletes the rows older than two hours before the database's now, through the
/// key (it leads with the minute), whatever the table's size.
#[tokio::test]
async fn recording_deletes_rows_older_than_two_hours_by_a_range_of_the_key() {
    let db = Db::new().await;
    sqlx::query(
        "insert into osa_events.activity (kind, name, minute, handled)
         select 'handler', 'old', date_trunc('minute', now()) - make_interval(mins => m), m
         from unnest(array[180, 121, 119]) as m",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let delta = ActivityDelta {
        kind: ActivityKind::Handler,
        name: "new".into(),
        handled: 1,
        failed: 0,
        dead: 0,
    };
    ops(&db).record_activity(&[delta]).await.unwrap();
    let kept: Vec<(&str, u64)> = everything(&db)
        .await
        .iter()
        .map(|bucket| {
            (
                if bucket.name == "new" { "new" } else { "old" },
                bucket.handled,
            )
        })
        .collect();
    assert_eq!(
        kept,
        [("new", 1), ("old", 119)],
        "the rows of 3 h and 2 h 1 min ago are gone"
    );

    // Only the last hour is read: a range of the key too.
    let since = ops(&db).status().await.unwrap().at - Duration::from_secs(3600);
    let last_hour = ops(&db).activity(since).await.unwrap();
    assert_eq!(last_hour.len(), 1);
    assert_eq!(last_hour[0].name, "new");
    assert!(last_hour[0].minute >= since - ACTIVITY_BUCKET);

    // The delete's plan, with sequential scans off (a table this small is scanned anyway): an
    // index path exists, the primary key's.
    let mut tx = db.pool().begin().await.unwrap();
    sqlx::query("set local enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "explain delete from osa_events.activity where minute < now() - make_interval(secs => 7200)",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert!(
        plan.iter().any(|line| line.contains("activity_pkey")),
        "the delete reads the key: {plan:#?}"
    );
}
