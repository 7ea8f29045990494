//! The SQLite scenarios: osa-events on [`SqliteStore`] against a raw-SQL loop issuing the store's
//! own statements (`osa_events::__private::sqlite_sql`) in the same transactions, on a fresh
//! temporary file per side and repetition. No minimal-queue column: the point is what the runtime
//! costs on top of the statements SQLite runs; the PostgreSQL rows compare the statements
//! themselves with a minimal queue.
//!
//! Drains at batch 1 and 64 (one claim loop: SQLite runs one writer at a time, so more loops only
//! take turns), and publishes of 1 and 100 events per transaction to one subscription.

use std::time::{Duration, Instant};

use osa_events::__private::sqlite_sql::{
    CLAIM_SQL, COMPLETE_SQL, FAN_OUT_SQL, INSERT_EVENTS_SQL, PICK_SQL,
};
use osa_events::{Outgoing, Resources, Runtime, SqliteStore};
use sqlx::{Row, SqliteConnection};

use super::Plan;
use super::handlers::{Job, Progress};
use super::report::{Row as ReportRow, Samples, rate};
use super::scenarios::{BoxError, run_until};

/// A fresh temporary store with `handler`'s subscription; its id.
async fn fresh(handler: &str) -> Result<(SqliteStore, i32), BoxError> {
    let store = SqliteStore::temporary().await?;
    store.migrate().await?;
    let runtime = Runtime::builder(store.clone())
        .only([handler])
        .resources(Resources::new().with(Progress::new(0)))
        .build()?;
    let registered = runtime.register().await?;
    Ok((store, registered[0].0))
}

/// Publishes `count` jobs through the store, 1,000 per transaction (the drains' input).
async fn publish_jobs(store: &SqliteStore, count: u64) -> Result<(), BoxError> {
    let mut n = 0;
    while n < count {
        let chunk: Vec<Outgoing> = (n..count.min(n + 1000))
            .map(|n| Outgoing::new(&Job::now(n)))
            .collect::<Result<_, _>>()?;
        n += chunk.len() as u64;
        let mut tx = store.begin().await?;
        osa_events::sqlite::publish_batch(&mut tx, &chunk).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Drain and publish rows for SQLite.
pub(crate) async fn all(
    plan: &Plan,
    wants: impl Fn(&str) -> bool,
) -> Result<Vec<ReportRow>, BoxError> {
    let mut rows = Vec::new();
    let size = plan.drain_sizes[0];
    for (batch, handler) in [(1, "bench.b1.c1"), (64, "bench.b64.c1")] {
        let scenario = format!("sqlite: drain {size}, batch {batch}, concurrency 1");
        if !wants(&scenario) {
            continue;
        }
        let mut samples = Samples::default();
        for _ in 0..plan.repetitions {
            let (store, subscription) = fresh(handler).await?;
            publish_jobs(&store, size).await?;
            let elapsed = drain_baseline(&store, subscription, batch).await?;
            assert_drained(&store).await?;
            samples.own.push(rate(size, elapsed));
            store.close().await;

            let (store, _) = fresh(handler).await?;
            publish_jobs(&store, size).await?;
            let (elapsed, _) = run_until(&store, handler, size).await?;
            samples.osa.push(rate(size, elapsed));
            store.close().await;
        }
        let row = samples.row(scenario, "ev/s");
        println!("{row}");
        rows.push(row);
    }
    for (per_tx, count) in [(1, plan.publish_single), (100, plan.publish_batched)] {
        let scenario = format!("sqlite: publish {per_tx} per transaction, 1 subscription(s)");
        if !wants(&scenario) {
            continue;
        }
        let mut samples = Samples::default();
        for _ in 0..plan.repetitions {
            let (store, _) = fresh("bench.b64.c1").await?;
            let elapsed = publish_baseline(&store, count, per_tx).await?;
            samples.own.push(rate(count, elapsed));
            store.close().await;

            let (store, _) = fresh("bench.b64.c1").await?;
            let elapsed = publish_timed(&store, count, per_tx).await?;
            samples.osa.push(rate(count, elapsed));
            store.close().await;
        }
        let row = samples.row(scenario, "ev/s");
        println!("{row}");
        rows.push(row);
    }
    Ok(rows)
}

async fn assert_drained(store: &SqliteStore) -> Result<(), BoxError> {
    let left: i64 = sqlx::query_scalar("select count(*) from deliveries")
        .fetch_one(store.pool())
        .await?;
    if left != 0 {
        return Err(format!("the baseline left {left} deliveries").into());
    }
    Ok(())
}

/// The store's claim in its transaction: the picked rows, then their tokens; returns
/// `(position, token)` of each claimed delivery.
async fn claim(
    conn: &mut SqliteConnection,
    subscription: i32,
    batch: u32,
) -> Result<Vec<(i64, String)>, BoxError> {
    let picked = sqlx::query(PICK_SQL)
        .bind(subscription)
        .bind(i64::from(batch))
        .fetch_all(&mut *conn)
        .await?;
    if picked.is_empty() {
        return Ok(Vec::new());
    }
    let positions: Vec<i64> = picked.iter().map(|row| row.get("event_position")).collect();
    let claimed = sqlx::query(CLAIM_SQL)
        .bind(subscription)
        .bind(serde_json::to_string(&positions)?)
        .bind("baseline")
        .bind(60.0_f64)
        .fetch_all(&mut *conn)
        .await?;
    Ok(claimed
        .iter()
        .map(|row| (row.get("event_position"), row.get("claim_token")))
        .collect())
}

/// The runtime's drain, statement for statement: a first claim, then the completion of each batch and the claim of the next in one write transaction, until a claim
/// comes back empty.
async fn drain_baseline(
    store: &SqliteStore,
    subscription: i32,
    batch: u32,
) -> Result<Duration, BoxError> {
    let pool = store.pool();
    let started = Instant::now();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut held = claim(&mut tx, subscription, batch).await?;
    tx.commit().await?;
    while !held.is_empty() {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(COMPLETE_SQL)
            .bind(subscription)
            .bind(serde_json::to_string(&held)?)
            .execute(&mut *tx)
            .await?;
        held = claim(&mut tx, subscription, batch).await?;
        tx.commit().await?;
    }
    Ok(started.elapsed())
}

/// The store's publish, statement for statement: in a write transaction, a savepoint, the events
/// as one JSON array, their fan-out.
async fn publish_baseline(
    store: &SqliteStore,
    count: u64,
    per_tx: u64,
) -> Result<Duration, BoxError> {
    let pool = store.pool();
    let started = Instant::now();
    let mut n = 0;
    while n < count {
        let end = count.min(n + per_tx);
        let events: Vec<serde_json::Value> = (n..end)
            .map(|n| {
                serde_json::json!([
                    // Time-ordered, as `Outgoing` makes them: the ids' index grows at its end.
                    uuid::Uuid::now_v7().simple().to_string(),
                    "bench.job",
                    1,
                    null,
                    serde_json::to_string(&Job::now(n)).expect("a job serializes"),
                    null,
                ])
            })
            .collect();
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::raw_sql("savepoint osa_events_publish")
            .execute(&mut *tx)
            .await?;
        let positions: Vec<(i64,)> = sqlx::query_as(INSERT_EVENTS_SQL)
            .bind(serde_json::Value::Array(events).to_string())
            .fetch_all(&mut *tx)
            .await?;
        let positions: Vec<i64> = positions.into_iter().map(|(p,)| p).collect();
        let _delivered: Vec<(i32, bool)> = sqlx::query_as(FAN_OUT_SQL)
            .bind(serde_json::to_string(&positions)?)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::raw_sql("release osa_events_publish")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        n = end;
    }
    Ok(started.elapsed())
}

/// osa-events' publish: `publish` (1 per transaction) or `publish_batch`, in `begin()`'s
/// transactions.
async fn publish_timed(store: &SqliteStore, count: u64, per_tx: u64) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let mut n = 0;
    while n < count {
        let end = count.min(n + per_tx);
        let mut tx = store.begin().await?;
        if per_tx == 1 {
            osa_events::sqlite::publish(&mut tx, &Job::now(n)).await?;
        } else {
            let chunk: Vec<Outgoing> = (n..end)
                .map(|n| Outgoing::new(&Job::now(n)))
                .collect::<Result<_, _>>()?;
            osa_events::sqlite::publish_batch(&mut tx, &chunk).await?;
        }
        tx.commit().await?;
        n = end;
    }
    Ok(started.elapsed())
}
