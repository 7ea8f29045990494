//! The scenarios: drain, publish, idle latency, drain with a large backlog. Each runs the baseline
//! and osa-events alternately on a fresh database and keeps the median of the repetitions.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use osa_events::{Outgoing, PgStore, Resources, Runtime};
use osa_events_fixtures::pg::TestDatabase;
use sqlx::PgPool;

use super::handlers::{Job, Progress};
use super::{Plan, baseline};

pub(crate) type BoxError = Box<dyn std::error::Error>;

/// One line of the report.
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) baseline: Option<f64>,
    pub(crate) osa: f64,
    pub(crate) unit: &'static str,
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = self.unit;
        let digits = if unit == "ev/s" { 0 } else { 2 };
        match self.baseline {
            Some(baseline) => write!(
                f,
                "| {} | {baseline:.digits$} {unit} | {:.digits$} {unit} | {:.2} |",
                self.scenario,
                self.osa,
                self.osa / baseline
            ),
            None => write!(
                f,
                "| {} | | {:.digits$} {unit} | |",
                self.scenario, self.osa
            ),
        }
    }
}

pub(crate) struct Bench {
    pub(crate) admin_url: String,
    pub(crate) plan: Plan,
}

/// The (batch, concurrency) settings and the handler that has them.
const SETTINGS: [(u32, u32, &str); 4] = [
    (1, 1, "bench.b1.c1"),
    (1, 4, "bench.b1.c4"),
    (64, 1, "bench.b64.c1"),
    (64, 4, "bench.b64.c4"),
];

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// A fresh database with the schema, its store, and the ids of `handlers`' subscriptions, in
/// handler-name order (the runtime sorts handlers by name).
async fn fresh(
    admin_url: &str,
    handlers: &[&str],
) -> Result<(TestDatabase, PgStore, Vec<i32>), BoxError> {
    let database = TestDatabase::create_on(admin_url).await?;
    let store = PgStore::connect(database.url()).await?;
    store.migrate().await?;
    let runtime = Runtime::builder(store.clone())
        .only(handlers.iter().copied())
        .resources(Resources::new().with(Progress::new(0)))
        .build()?;
    let ids = runtime
        .register()
        .await?
        .into_iter()
        .map(|id| id.0)
        .collect();
    Ok((database, store, ids))
}

async fn publish_jobs(pool: &PgPool, count: u64) -> Result<(), BoxError> {
    let mut n = 0;
    while n < count {
        let chunk: Vec<Outgoing> = (n..count.min(n + 1000))
            .map(|n| Outgoing::new(&Job::now(n)))
            .collect::<Result<_, _>>()?;
        n += chunk.len() as u64;
        osa_events::publish_batch(pool, &chunk).await?;
    }
    Ok(())
}

async fn vacuum(pool: &PgPool) -> Result<(), BoxError> {
    sqlx::query("vacuum (analyze) osa_events.deliveries")
        .execute(pool)
        .await?;
    Ok(())
}

/// Runs `handler` until it has handled `count` events; returns the time from start to the last.
async fn run_until(
    store: &PgStore,
    handler: &str,
    count: u64,
) -> Result<(Duration, Arc<Progress>), BoxError> {
    let progress = Arc::new(Progress::new(count));
    let runtime = Runtime::builder(store.clone())
        .only([handler])
        .resources(Resources::new().with_arc(progress.clone()))
        .handle_signals(false)
        .build()?;
    let shutdown = runtime.shutdown_token();
    let started = Instant::now();
    let running = tokio::spawn(runtime.run());
    progress.done.notified().await;
    let elapsed = started.elapsed();
    shutdown.cancel();
    running.await??;
    Ok((elapsed, progress))
}

impl Bench {
    pub(crate) fn new(admin_url: String, plan: Plan) -> Bench {
        Bench { admin_url, plan }
    }

    pub(crate) async fn print_settings(&self) -> Result<(), BoxError> {
        let (_db, store, _) = fresh(&self.admin_url, &["bench.b1.c1"]).await?;
        let settings: Vec<(String, String)> = sqlx::query_as(
            "select name, setting from pg_settings where name in \
             ('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections', 'full_page_writes') order by name",
        )
        .fetch_all(store.pool())
        .await?;
        let version: String = sqlx::query_scalar("show server_version")
            .fetch_one(store.pool())
            .await?;
        println!(
            "PostgreSQL {version}; {}",
            settings
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("plan: {:?}", self.plan);
        Ok(())
    }

    /// Drain throughput for every size and setting.
    pub(crate) async fn drain_all(&self) -> Result<Vec<Row>, BoxError> {
        let mut rows = Vec::new();
        for (size_index, &size) in self.plan.drain_sizes.iter().enumerate() {
            for (batch, concurrency, handler) in SETTINGS {
                if batch == 1 && size_index > 0 {
                    continue; // one round trip per event: the smallest size says enough
                }
                let (baseline, osa) = self.drain(size, batch, concurrency, handler, 0).await?;
                println!(
                    "drain {size} batch {batch} concurrency {concurrency}: baseline {baseline:.0}/s, osa-events {osa:.0}/s"
                );
                rows.push(Row {
                    scenario: format!("drain {size}, batch {batch}, concurrency {concurrency}"),
                    baseline: Some(baseline),
                    osa,
                    unit: "ev/s",
                });
            }
        }
        Ok(rows)
    }

    /// Medians of (baseline, osa-events) events/s, with `backlog` dead rows of another
    /// subscription in the tables.
    async fn drain(
        &self,
        size: u64,
        batch: u32,
        concurrency: u32,
        handler: &str,
        backlog: u64,
    ) -> Result<(f64, f64), BoxError> {
        // With a backlog, a second subscription owns the dead rows; its fresh copies of the
        // measured events are dropped before each drain, so both sides drain one subscription.
        let handlers: &[&str] = if backlog > 0 {
            &[handler, "bench.fanout"]
        } else {
            &[handler]
        };
        let (_db, store, ids) = fresh(&self.admin_url, handlers).await?;
        let measured = ids[0];
        let other = ids.get(1).copied();
        if let Some(other) = other {
            fill_backlog(store.pool(), other, backlog).await?;
        }
        let prepare = |size: u64| {
            let pool = store.pool().clone();
            async move {
                publish_jobs(&pool, size).await?;
                if let Some(other) = other {
                    sqlx::query("delete from osa_events.deliveries where subscription_id = $1 and status <> 'dead'")
                        .bind(other)
                        .execute(&pool)
                        .await?;
                }
                vacuum(&pool).await
            }
        };
        let (mut baselines, mut osas) = (Vec::new(), Vec::new());
        for _ in 0..self.plan.repetitions {
            prepare(size).await?;
            let elapsed = baseline::drain(store.pool(), measured, batch, concurrency).await;
            baselines.push(size as f64 / elapsed.as_secs_f64());

            prepare(size).await?;
            let (elapsed, _) = run_until(&store, handler, size).await?;
            osas.push(size as f64 / elapsed.as_secs_f64());
        }
        Ok((median(baselines), median(osas)))
    }

    /// Publish throughput: one event per transaction and 100 per transaction, to one and two
    /// subscriptions.
    pub(crate) async fn publish_all(&self) -> Result<Vec<Row>, BoxError> {
        let mut rows = Vec::new();
        for (subscriptions, handlers) in [
            (1, &["bench.b64.c1"][..]),
            (2, &["bench.b64.c1", "bench.fanout"][..]),
        ] {
            for per_tx in [1_u64, 100] {
                let count = if per_tx == 1 {
                    self.plan.publish_single
                } else {
                    self.plan.publish_batched
                };
                let (_db, store, _) = fresh(&self.admin_url, handlers).await?;
                let (mut baselines, mut osas) = (Vec::new(), Vec::new());
                for _ in 0..self.plan.repetitions {
                    baselines.push(
                        count as f64
                            / baseline::publish(store.pool(), count, per_tx)
                                .await?
                                .as_secs_f64(),
                    );
                    osas.push(
                        count as f64
                            / publish_timed(store.pool(), count, per_tx)
                                .await?
                                .as_secs_f64(),
                    );
                }
                let (baseline, osa) = (median(baselines), median(osas));
                println!(
                    "publish {per_tx}/tx to {subscriptions} subscription(s): baseline {baseline:.0}/s, osa-events {osa:.0}/s"
                );
                rows.push(Row {
                    scenario: format!(
                        "publish {per_tx} per transaction, {subscriptions} subscription(s)"
                    ),
                    baseline: Some(baseline),
                    osa,
                    unit: "ev/s",
                });
            }
        }
        Ok(rows)
    }

    /// Publish-to-handler-start latency with idle workers: p50, p95, max.
    pub(crate) async fn latency(&self) -> Result<Vec<Row>, BoxError> {
        let count = self.plan.latency_events;
        let (mut baseline_runs, mut osa_runs) = (Vec::new(), Vec::new());
        for _ in 0..self.plan.repetitions {
            let (_db, store, ids) = fresh(&self.admin_url, &["bench.latency"]).await?;
            let (ready, is_ready) = tokio::sync::oneshot::channel();
            let listening = tokio::spawn(baseline::listen_and_drain(
                store.pool().clone(),
                ids[0],
                count,
                ready,
            ));
            is_ready.await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.trickle(store.pool(), count).await?;
            baseline_runs.push(listening.await?);

            let progress = Arc::new(Progress::new(count as u64));
            let runtime = Runtime::builder(store.clone())
                .only(["bench.latency"])
                .resources(Resources::new().with_arc(progress.clone()))
                .handle_signals(false)
                .build()?;
            let shutdown = runtime.shutdown_token();
            let running = tokio::spawn(runtime.run());
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.trickle(store.pool(), count).await?;
            progress.done.notified().await;
            shutdown.cancel();
            running.await??;
            osa_runs.push(progress.latencies.lock().unwrap().clone());
        }
        let mut rows = Vec::new();
        for (label, fraction) in [("p50", 0.5), ("p95", 0.95), ("max", 1.0)] {
            let of = |runs: &[Vec<Duration>]| {
                median(
                    runs.iter()
                        .map(|run| {
                            let mut sorted = run.clone();
                            sorted.sort();
                            percentile(&sorted, fraction)
                        })
                        .collect(),
                )
            };
            let (baseline, osa) = (of(&baseline_runs), of(&osa_runs));
            println!("latency {label}: baseline {baseline:.2} ms, osa-events {osa:.2} ms");
            rows.push(Row {
                scenario: format!(
                    "latency {label}, idle workers, {count} events {} ms apart",
                    self.plan.latency_gap.as_millis()
                ),
                baseline: Some(baseline),
                osa,
                unit: "ms",
            });
        }
        Ok(rows)
    }

    async fn trickle(&self, pool: &PgPool, count: usize) -> Result<(), BoxError> {
        for n in 0..count {
            osa_events::publish(pool, &Job::now(n as u64)).await?;
            tokio::time::sleep(self.plan.latency_gap).await;
        }
        Ok(())
    }

    /// Drain at batch 64 with a backlog of dead rows of another subscription, against the
    /// empty-table figure of the same run.
    pub(crate) async fn backlog(&self, earlier: &[Row]) -> Result<Vec<Row>, BoxError> {
        let size = self.plan.drain_sizes[0];
        let empty = earlier
            .iter()
            .find(|row| row.scenario == format!("drain {size}, batch 64, concurrency 1"))
            .map(|row| row.osa);
        let backlog = self.plan.backlog_rows;
        let (baseline, osa) = self.drain(size, 64, 1, "bench.b64.c1", backlog).await?;
        println!(
            "drain {size} batch 64 with {backlog} backlog rows: baseline {baseline:.0}/s, osa-events {osa:.0}/s"
        );
        let mut rows = vec![Row {
            scenario: format!(
                "drain {size}, batch 64, concurrency 1, {backlog} dead rows of another subscription"
            ),
            baseline: Some(baseline),
            osa,
            unit: "ev/s",
        }];
        if let Some(empty) = empty {
            rows.push(Row {
                scenario: format!("osa-events with backlog / without (drain {size}, batch 64)"),
                baseline: None,
                osa: osa / empty,
                unit: "x",
            });
        }
        Ok(rows)
    }
}

async fn publish_timed(pool: &PgPool, count: u64, per_tx: u64) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let mut n = 0;
    while n < count {
        let end = count.min(n + per_tx);
        if per_tx == 1 {
            osa_events::publish(pool, &Job::now(n)).await?;
        } else {
            let chunk: Vec<Outgoing> = (n..end)
                .map(|n| Outgoing::new(&Job::now(n)))
                .collect::<Result<_, _>>()?;
            let mut tx = pool.begin().await?;
            osa_events::publish_batch(&mut *tx, &chunk).await?;
            tx.commit().await?;
        }
        n = end;
    }
    Ok(started.elapsed())
}

/// `rows` events, each with a dead delivery of subscription `other`: a table that has seen a lot.
async fn fill_backlog(pool: &PgPool, other: i32, rows: u64) -> Result<(), BoxError> {
    sqlx::query(
        "insert into osa_events.events (id, event_type, event_version, payload) \
         select gen_random_uuid(), 'bench.job', 1, '{\"n\": 0, \"sent_ns\": 0}'::jsonb from generate_series(1, $1)",
    )
    .bind(i64::try_from(rows)?)
    .execute(pool)
    .await?;
    sqlx::query(
        "insert into osa_events.deliveries (subscription_id, event_position, status, attempts, last_error) \
         select $1, position, 'dead', 6, 'backlog' from osa_events.events",
    )
    .bind(other)
    .execute(pool)
    .await?;
    sqlx::query("vacuum (analyze) osa_events.events")
        .execute(pool)
        .await?;
    Ok(())
}

/// The runtime alone: the no-op batch-64 handler on the in-memory store, on one thread (a
/// current-thread tokio runtime), so the figure is the runtime's own cost per event on one core.
pub(crate) fn in_memory_overhead(events: u64, repetitions: usize) -> Result<Row, BoxError> {
    let mut rates = Vec::new();
    for _ in 0..repetitions {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let rate = runtime.block_on(async {
            let store = osa_events_testing::InMemoryStore::new();
            let progress = Arc::new(Progress::new(events));
            let app = Runtime::builder(store.clone())
                .only(["bench.b64.c1"])
                .resources(Resources::new().with_arc(progress.clone()))
                .handle_signals(false)
                .build()?;
            app.register().await?;
            for n in 0..events {
                store.publish(&Job { n, sent_ns: 0 })?;
            }
            let shutdown = app.shutdown_token();
            let started = Instant::now();
            let running = tokio::spawn(app.run());
            progress.done.notified().await;
            let elapsed = started.elapsed();
            shutdown.cancel();
            running.await??;
            Ok::<f64, BoxError>(events as f64 / elapsed.as_secs_f64())
        })?;
        rates.push(rate);
    }
    let rate = median(rates);
    println!("in-memory store, one thread: {rate:.0} events/s");
    Ok(Row {
        scenario: format!("runtime overhead: in-memory store, one core, {events} events, batch 64"),
        baseline: None,
        osa: rate,
        unit: "ev/s",
    })
}
