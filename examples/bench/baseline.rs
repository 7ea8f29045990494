//! The own-statements baseline: osa-events' store statements, issued by a minimal hand-written
//! sqlx loop.

use std::time::{Duration, Instant};

use osa_events::__private::sql::{CLAIM_SQL, COMPLETE_SQL};
use sqlx::postgres::{PgListener, PgRow};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Claims `batch` at a time and completes each batch, on `concurrency` tasks, until nothing is left.
pub(crate) async fn drain(
    pool: &PgPool,
    subscription: i32,
    batch: u32,
    concurrency: u32,
) -> Duration {
    let started = Instant::now();
    let loops: Vec<_> = (0..concurrency)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                while claim_and_complete(&pool, subscription, batch).await > 0 {}
            })
        })
        .collect();
    for task in loops {
        task.await.expect("baseline loop");
    }
    started.elapsed()
}

/// The claimed rows of the claim function's answer: when it claims nothing it returns one row that
/// carries only the completion count.
fn claimed(rows: Vec<PgRow>) -> Vec<PgRow> {
    rows.into_iter()
        .filter(|row| row.get::<Option<i64>, _>("event_position").is_some())
        .collect()
}

async fn claim_and_complete(pool: &PgPool, subscription: i32, batch: u32) -> usize {
    let rows = claimed(
        sqlx::query(CLAIM_SQL)
            .bind(subscription)
            .bind(i32::try_from(batch).expect("a batch fits the claim's integer"))
            .bind("baseline")
            .bind(60.0_f64)
            .fetch_all(pool)
            .await
            .expect("baseline claim"),
    );
    if rows.is_empty() {
        return 0;
    }
    let positions: Vec<i64> = rows.iter().map(|row| row.get("event_position")).collect();
    let tokens: Vec<Uuid> = rows.iter().map(|row| row.get("claim_token")).collect();
    sqlx::query(COMPLETE_SQL)
        .bind(subscription)
        .bind(positions)
        .bind(tokens)
        .execute(pool)
        .await
        .expect("baseline complete");
    rows.len()
}

/// An idle worker: LISTEN, and on each notification (or every `poll`) drain the subscription,
/// recording publish-to-claim latency from each payload's `sent_ns`, until `count` are seen.
pub(crate) async fn listen_and_drain(
    pool: PgPool,
    subscription: i32,
    count: usize,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Vec<Duration> {
    let mut listener = PgListener::connect_with(&pool)
        .await
        .expect("baseline listen");
    listener
        .listen("osa_events")
        .await
        .expect("baseline listen");
    let _ = ready.send(());
    let mut latencies = Vec::with_capacity(count);
    while latencies.len() < count {
        let _ = tokio::time::timeout(Duration::from_secs(1), listener.recv()).await;
        loop {
            let rows = claimed(
                sqlx::query(CLAIM_SQL)
                    .bind(subscription)
                    .bind(64_i32)
                    .bind("baseline")
                    .bind(60.0_f64)
                    .fetch_all(&pool)
                    .await
                    .expect("baseline claim"),
            );
            if rows.is_empty() {
                break;
            }
            let now = super::handlers::now_ns();
            let mut positions = Vec::with_capacity(rows.len());
            let mut tokens = Vec::with_capacity(rows.len());
            for row in &rows {
                let payload: String = row.get("payload");
                let job: serde_json::Value = serde_json::from_str(&payload).expect("payload");
                let sent = job["sent_ns"].as_u64().unwrap_or(now);
                latencies.push(Duration::from_nanos(now.saturating_sub(sent)));
                positions.push(row.get::<i64, _>("event_position"));
                tokens.push(row.get::<Uuid, _>("claim_token"));
            }
            sqlx::query(COMPLETE_SQL)
                .bind(subscription)
                .bind(positions)
                .bind(tokens)
                .execute(&pool)
                .await
                .expect("baseline complete");
        }
    }
    latencies
}

/// Publishes `count` events, `per_tx` per transaction, with the store's publish statement bound by
/// hand (payloads serialized here too).
pub(crate) async fn publish(
    pool: &PgPool,
    count: u64,
    per_tx: u64,
) -> Result<Duration, Box<dyn std::error::Error>> {
    use osa_events::__private::sql::PUBLISH_SQL;
    let started = Instant::now();
    let mut n = 0;
    while n < count {
        let end = count.min(n + per_tx);
        let mut tx = pool.begin().await?;
        publish_jobs_through(&mut tx, PUBLISH_SQL, n..end).await?;
        tx.commit().await?;
        n = end;
    }
    Ok(started.elapsed())
}

/// Publishes jobs `jobs` through `statement` (bound as the publish statement is), with payloads
/// serialized by hand, in `conn`'s transaction.
pub(crate) async fn publish_jobs_through(
    conn: &mut sqlx::PgConnection,
    statement: &str,
    jobs: std::ops::Range<u64>,
) -> Result<(), sqlx::Error> {
    let len = usize::try_from(jobs.end - jobs.start).expect("a batch that fits in memory");
    let ids: Vec<Uuid> = (0..len).map(|_| Uuid::new_v4()).collect();
    let payloads: Vec<String> = jobs
        .map(|n| serde_json::to_string(&super::handlers::Job::now(n)).expect("a job serializes"))
        .collect();
    // Fixed statements of the store, or the bench's variant of one: no input in the text.
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .bind(ids)
        .bind(vec!["bench.job"; len])
        .bind(vec![1_i32; len])
        .bind(vec![None::<&str>; len])
        .bind(payloads)
        .bind(vec![None::<&str>; len])
        .bind(vec![None::<f64>; len])
        .bind(vec![None::<f64>; len])
        .bind(vec![None::<&str>; len])
        .execute(conn)
        .await?;
    Ok(())
}
