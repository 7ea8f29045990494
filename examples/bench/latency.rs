//! Publish-to-handler-start latency of a per-event handler with idle workers: each side waits on
//! `LISTEN` and drains on a notification, while events are published one at a time. Once on an
//! otherwise idle database, and once beside an unrelated transaction that has written (so it
//! holds a transaction id and the cleanup horizon) and stays open for the whole run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use osa_events::{Resources, Runtime};
use sqlx::{PgPool, Postgres, Transaction};

use super::handlers::{Job, Progress};
use super::report::{Row, median, percentile};
use super::scenarios::{BoxError, fresh};
use super::{Bench, baseline, minimal_queue};

/// How long a side's listener is up before the first event, so no event races the `LISTEN`.
const WARM_UP: Duration = Duration::from_millis(300);

/// The percentiles reported, and their labels.
const PERCENTILES: [(&str, f64); 3] = [("p50", 0.5), ("p95", 0.95), ("max", 1.0)];

/// One repetition's latencies, per side.
#[derive(Default)]
struct Runs {
    minimal: Vec<Vec<Duration>>,
    own: Vec<Vec<Duration>>,
    osa: Vec<Vec<Duration>>,
}

impl Bench {
    /// With idle workers and nothing else on the database.
    pub(crate) async fn latency_idle(&self) -> Result<Vec<Row>, BoxError> {
        let (count, gap) = (self.plan.latency_events, self.plan.latency_gap);
        let setting = format!("idle workers, {count} events {} ms apart", gap.as_millis());
        self.latency(&setting, gap, false).await
    }

    /// Beside an unrelated write transaction open at least `plan.long_transaction` per side: the
    /// events are spread over that time.
    pub(crate) async fn latency_beside_a_long_transaction(&self) -> Result<Vec<Row>, BoxError> {
        let count = self.plan.latency_events;
        let gap = self.plan.long_transaction / u32::try_from(count.max(1))?;
        let setting = format!(
            "per-event handler, an unrelated write transaction open {} s, {count} events {} ms apart",
            self.plan.long_transaction.as_secs(),
            gap.as_millis()
        );
        self.latency(&setting, gap, true).await
    }

    async fn latency(
        &self,
        setting: &str,
        gap: Duration,
        beside_open_transaction: bool,
    ) -> Result<Vec<Row>, BoxError> {
        let names = PERCENTILES.map(|(label, _)| format!("latency {label}, {setting}"));
        if !self.wants(&names.each_ref().map(String::as_str)) {
            return Ok(Vec::new());
        }
        let count = self.plan.latency_events;
        let mut runs = Runs::default();
        for _ in 0..self.plan.repetitions {
            let (_db, store, ids) = fresh(&self.admin_url, &["bench.latency"]).await?;
            let pool = store.pool();
            sqlx::query("create table unrelated (n int)")
                .execute(pool)
                .await?;
            let open = async || -> Result<_, BoxError> {
                if beside_open_transaction {
                    Ok(Some(open_writing_transaction(pool).await?))
                } else {
                    Ok(None)
                }
            };

            let long = open().await?;
            let (ready, is_ready) = tokio::sync::oneshot::channel();
            let listening =
                tokio::spawn(minimal_queue::listen_and_drain(pool.clone(), count, ready));
            is_ready.await?;
            tokio::time::sleep(WARM_UP).await;
            trickle(count, gap, async |job| {
                minimal_queue::publish_notifying(pool, &job).await
            })
            .await?;
            runs.minimal.push(listening.await?);
            close(long).await?;

            let long = open().await?;
            let (ready, is_ready) = tokio::sync::oneshot::channel();
            let listening = tokio::spawn(baseline::listen_and_drain(
                pool.clone(),
                ids[0],
                count,
                ready,
            ));
            is_ready.await?;
            tokio::time::sleep(WARM_UP).await;
            trickle(count, gap, async |job| publish(pool, &job).await).await?;
            runs.own.push(listening.await?);
            close(long).await?;

            let long = open().await?;
            let progress = Arc::new(Progress::new(count as u64));
            let runtime = Runtime::builder(store.clone())
                .only(["bench.latency"])
                .resources(Resources::new().with_arc(progress.clone()))
                .handle_signals(false)
                .build()?;
            let shutdown = runtime.shutdown_token();
            let running = tokio::spawn(runtime.run());
            tokio::time::sleep(WARM_UP).await;
            trickle(count, gap, async |job| publish(pool, &job).await).await?;
            progress.done.notified().await;
            shutdown.cancel();
            running.await??;
            runs.osa.push(progress.latencies.lock().unwrap().clone());
            close(long).await?;
        }
        let rows: Vec<Row> = PERCENTILES
            .iter()
            .zip(names)
            .map(|(&(_, fraction), scenario)| {
                let of = |runs: &[Vec<Duration>]| {
                    median(runs.iter().map(|run| percentile(run, fraction)).collect())
                };
                Row {
                    scenario,
                    minimal: Some(of(&runs.minimal)),
                    own: Some(of(&runs.own)),
                    osa: of(&runs.osa),
                    unit: "ms",
                }
            })
            .collect();
        for row in &rows {
            println!("{row}");
        }
        Ok(rows)
    }
}

/// A transaction that has written a row of an unrelated table, and so holds a transaction id.
async fn open_writing_transaction(
    pool: &PgPool,
) -> Result<(Transaction<'static, Postgres>, Instant), BoxError> {
    let mut transaction = pool.begin().await?;
    sqlx::query("insert into unrelated (n) values (1)")
        .execute(&mut *transaction)
        .await?;
    Ok((transaction, Instant::now()))
}

/// Rolls back a transaction of [`open_writing_transaction`], saying how long it was open.
async fn close(long: Option<(Transaction<'static, Postgres>, Instant)>) -> Result<(), BoxError> {
    if let Some((transaction, opened)) = long {
        let held = opened.elapsed();
        transaction.rollback().await?;
        println!(
            "  (the unrelated transaction was open {:.1} s)",
            held.as_secs_f64()
        );
    }
    Ok(())
}

/// Publishes through osa-events, one event per transaction.
async fn publish(pool: &PgPool, job: &Job) -> Result<(), BoxError> {
    osa_events::publish(pool, job).await?;
    Ok(())
}

/// Publishes `count` jobs one at a time through `publish`, `gap` apart.
async fn trickle(
    count: usize,
    gap: Duration,
    publish: impl AsyncFn(Job) -> Result<(), BoxError>,
) -> Result<(), BoxError> {
    for n in 0..count {
        publish(Job::now(n as u64)).await?;
        tokio::time::sleep(gap).await;
    }
    Ok(())
}
