//! The second baseline: the minimal single-table queue, written the way someone comparing queues
//! would write it (design D of the pgbench schema-design measurements for issue #14).
//!
//! One table, one partial index, three statements: claim, complete, insert. No subscriptions, no
//! attempts, no claim expiry, no dead letters: every event is one row whatever the number of
//! handlers, and a claimed row stays claimed if its worker dies. That is the floor a durable
//! per-event queue on PostgreSQL can reach, so the ratio osa-events / minimal queue says what
//! osa-events' guarantees cost, where the ratio to its own statements says what the runtime costs.
//!
//! The drain decodes each payload into the bench's [`Job`] with serde, as osa-events' per-event
//! handlers do, so both sides do the same client work per event.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use sqlx::types::Json;

use super::handlers::{Job, now_ns};
use super::scenarios::BoxError;

/// The queue's schema, created beside osa-events' in every scenario's fresh database. The partial
/// index holds only pending rows, in claim order, so done rows cost the claim nothing but heap
/// size.
const SCHEMA_SQL: &str = r#"
create schema minimal_queue;
create table minimal_queue.jobs (
    id      bigint generated always as identity primary key,
    run_at  timestamptz not null default now(),
    status  smallint    not null default 0, -- 0 pending, 1 claimed, 2 done
    payload jsonb       not null
);
create index jobs_pending on minimal_queue.jobs (run_at, id) where status = 0;
"#;

/// Claims up to `$1` due rows, skipping rows another claimer holds.
const CLAIM_SQL: &str = "\
update minimal_queue.jobs set status = 1
where id in (select id from minimal_queue.jobs
             where status = 0 and run_at <= now()
             order by run_at, id
             limit $1
             for update skip locked)
returning id, payload";

/// Marks the claimed rows `$1` done.
const COMPLETE_SQL: &str = "update minimal_queue.jobs set status = 2 where id = any($1)";

/// Inserts one row per payload of `$1`, in one statement.
const INSERT_SQL: &str =
    "insert into minimal_queue.jobs (payload) select * from unnest($1::jsonb[])";

/// Inserts one row.
const INSERT_ONE_SQL: &str = "insert into minimal_queue.jobs (payload) values ($1)";

/// Inserts one row and wakes the listeners when it commits: what a queue with idle workers adds.
const INSERT_ONE_NOTIFYING_SQL: &str = "\
with job as (insert into minimal_queue.jobs (payload) values ($1) returning id)
select pg_notify('minimal_queue', id::text) from job";

/// Events per insert statement when publishing in bulk (and when filling a drain's backlog).
pub(crate) const BULK: u64 = 5_000;

/// Creates the queue's schema in the database of `pool`.
pub(crate) async fn create(pool: &PgPool) -> Result<(), BoxError> {
    sqlx::raw_sql(SCHEMA_SQL).execute(pool).await?;
    Ok(())
}

/// Inserts jobs `jobs`, one statement per `per_statement`, each statement its own transaction:
/// a single-row insert at one per statement, else the `unnest` insert. Payloads are serialized
/// here, as a user binding `Json` would.
async fn insert(
    pool: &PgPool,
    jobs: std::ops::Range<u64>,
    per_statement: u64,
) -> Result<(), BoxError> {
    let mut n = jobs.start;
    while n < jobs.end {
        let end = jobs.end.min(n + per_statement);
        if per_statement == 1 {
            sqlx::query(INSERT_ONE_SQL)
                .bind(Json(Job::now(n)))
                .execute(pool)
                .await?;
        } else {
            let payloads: Vec<Json<Job>> = (n..end).map(|n| Json(Job::now(n))).collect();
            sqlx::query(INSERT_SQL).bind(payloads).execute(pool).await?;
        }
        n = end;
    }
    Ok(())
}

/// Enqueues `count` jobs for a drain (not timed), in bulk.
pub(crate) async fn prepare(pool: &PgPool, count: u64) -> Result<(), BoxError> {
    insert(pool, 0..count, BULK).await
}

/// Publishes `count` jobs, `per_tx` per transaction (one statement each); the time it took.
pub(crate) async fn publish(pool: &PgPool, count: u64, per_tx: u64) -> Result<Duration, BoxError> {
    let started = Instant::now();
    insert(pool, 0..count, per_tx).await?;
    Ok(started.elapsed())
}

/// Publishes one job and notifies, for the latency scenarios.
pub(crate) async fn publish_notifying(pool: &PgPool, job: &Job) -> Result<(), BoxError> {
    sqlx::query(INSERT_ONE_NOTIFYING_SQL)
        .bind(Json(job))
        .execute(pool)
        .await?;
    Ok(())
}

/// Claims `batch` at a time, decodes and completes each batch, on `concurrency` tasks, until a
/// claim comes back empty; the time it took.
pub(crate) async fn drain(pool: &PgPool, batch: u32, concurrency: u32) -> Duration {
    let started = Instant::now();
    let loops: Vec<_> = (0..concurrency)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { while claim_and_complete(&pool, batch, |_| {}).await > 0 {} })
        })
        .collect();
    for task in loops {
        task.await.expect("minimal queue loop");
    }
    started.elapsed()
}

/// One claim, `handle` on each decoded job, one completion; how many were claimed.
async fn claim_and_complete(pool: &PgPool, batch: u32, mut handle: impl FnMut(Job)) -> usize {
    let rows: Vec<(i64, Json<Job>)> = sqlx::query_as(CLAIM_SQL)
        .bind(i64::from(batch))
        .fetch_all(pool)
        .await
        .expect("minimal queue claim");
    if rows.is_empty() {
        return 0;
    }
    let claimed = rows.len();
    let ids: Vec<i64> = rows
        .into_iter()
        .map(|(id, Json(job))| {
            handle(job);
            id
        })
        .collect();
    sqlx::query(COMPLETE_SQL)
        .bind(ids)
        .execute(pool)
        .await
        .expect("minimal queue complete");
    claimed
}

/// Fails unless every job is done: a loop that stopped early would report a rate for work it did
/// not do.
pub(crate) async fn assert_drained(pool: &PgPool) -> Result<(), BoxError> {
    let left: i64 = sqlx::query_scalar("select count(*) from minimal_queue.jobs where status <> 2")
        .fetch_one(pool)
        .await?;
    if left > 0 {
        return Err(format!("the minimal queue's drain left {left} jobs").into());
    }
    Ok(())
}

/// An idle worker: LISTEN, and on each notification (or every second) drain the queue at batch
/// 64, recording publish-to-handler latency from each job's `sent_ns`, until `count` are seen.
pub(crate) async fn listen_and_drain(
    pool: PgPool,
    count: usize,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Vec<Duration> {
    let mut listener = PgListener::connect_with(&pool)
        .await
        .expect("minimal queue listen");
    listener
        .listen("minimal_queue")
        .await
        .expect("minimal queue listen");
    let _ = ready.send(());
    let mut latencies = Vec::with_capacity(count);
    while latencies.len() < count {
        let _ = tokio::time::timeout(Duration::from_secs(1), listener.recv()).await;
        while claim_and_complete(&pool, 64, |job| {
            latencies.push(Duration::from_nanos(now_ns().saturating_sub(job.sent_ns)));
        })
        .await
            > 0
        {}
    }
    latencies
}

/// `rows` done jobs: a queue that has seen a lot and never deletes (osa-events' drain backlog is
/// other subscriptions' open work and dead letters, which a single-table queue does not have).
pub(crate) async fn fill_backlog(pool: &PgPool, rows: u64) -> Result<(), BoxError> {
    sqlx::query(
        "insert into minimal_queue.jobs (status, payload) \
         select 2, '{\"n\": 0, \"sent_ns\": 0}'::jsonb from generate_series(1, $1)",
    )
    .bind(i64::try_from(rows)?)
    .execute(pool)
    .await?;
    Ok(())
}
