//! The throughput scenarios: drain, publish, drain beside a large backlog, and the runtime alone.
//! Each runs the minimal queue, osa-events' own statements and osa-events alternately on a fresh
//! database and keeps the median of the repetitions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use osa_events::{Outgoing, PgStore, Resources, Runtime};
use osa_events_fixtures::pg::TestDatabase;
use sqlx::PgPool;

use super::handlers::{Job, Progress};
use super::report::{RATIO, Row, Samples, median, rate};
use super::{Plan, baseline, minimal_queue};

pub(crate) type BoxError = Box<dyn std::error::Error>;

pub(crate) struct Bench {
    pub(crate) admin_url: String,
    pub(crate) plan: Plan,
    /// `--scenario` values: run only the scenarios whose name contains one (all when empty).
    pub(crate) filters: Vec<String>,
}

/// The (batch, concurrency) settings of the drains and the handler that has them. Batch 1000
/// with 4 loops is where osa-events did best in an earlier comparison with other queues.
const SETTINGS: [(u32, u32, &str); 5] = [
    (1, 1, "bench.b1.c1"),
    (1, 4, "bench.b1.c4"),
    (64, 1, "bench.b64.c1"),
    (64, 4, "bench.b64.c4"),
    (1000, 4, "bench.b1000.c4"),
];

/// The never-run subscriptions of the bench's job, after the measured one, for fan-out and
/// backlogs.
/// The keys of the per-key order scenario ([`Bench::ordered_keys`]).
const ORDERING_KEYS: u64 = 1000;

const OTHERS: [&str; 3] = ["bench.fanout", "bench.fanout.2", "bench.fanout.3"];

/// A fresh database with osa-events' schema, the minimal queue's, and `handlers`' subscriptions;
/// its store, and the subscription ids in the order of `handlers`.
pub(crate) async fn fresh(
    admin_url: &str,
    handlers: &[&str],
) -> Result<(TestDatabase, PgStore, Vec<i32>), BoxError> {
    let database = TestDatabase::create_on(admin_url).await?;
    let store = PgStore::connect(database.url()).await?;
    store.migrate().await?;
    minimal_queue::create(store.pool()).await?;
    let runtime = Runtime::builder(store.clone())
        .only(handlers.iter().copied())
        .resources(Resources::new().with(Progress::new(0)))
        .build()?;
    let registered = runtime.register().await?;
    // The runtime registers its handlers in name order.
    let mut by_name = handlers.to_vec();
    by_name.sort_unstable();
    let ids = handlers
        .iter()
        .map(|handler| {
            let index = by_name
                .binary_search(handler)
                .expect("every handler is in the sorted copy");
            registered[index].0
        })
        .collect();
    Ok((database, store, ids))
}

async fn publish_jobs(pool: &PgPool, count: u64) -> Result<(), BoxError> {
    publish_keyed_jobs(pool, count, None).await
}

/// Publishes `count` jobs, 1,000 per transaction; with `keys`, job `n` has ordering key
/// `n % keys`, so each key's jobs are spread over the whole stream.
async fn publish_keyed_jobs(pool: &PgPool, count: u64, keys: Option<u64>) -> Result<(), BoxError> {
    let mut n = 0;
    while n < count {
        let chunk: Vec<Outgoing> = (n..count.min(n + 1000))
            .map(|n| {
                let job = Outgoing::new(&Job::now(n))?;
                match keys {
                    Some(keys) => job.with_ordering_key(format!("key-{}", n % keys)),
                    None => Ok(job),
                }
            })
            .collect::<Result<_, _>>()?;
        n += chunk.len() as u64;
        osa_events::publish_batch(pool, &chunk).await?;
    }
    Ok(())
}

/// Vacuums both queues' hot tables, before every timed drain of either.
async fn vacuum(pool: &PgPool) -> Result<(), BoxError> {
    sqlx::query("vacuum (analyze) osa_events.deliveries, minimal_queue.jobs")
        .execute(pool)
        .await?;
    Ok(())
}

/// Runs `handler` until it has handled `count` events; returns the time from start to the last.
pub(crate) async fn run_until<S: osa_events::store::Store + Clone>(
    store: &S,
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
    pub(crate) fn new(admin_url: String, plan: Plan, filters: Vec<String>) -> Bench {
        Bench {
            admin_url,
            plan,
            filters,
        }
    }

    /// Whether a scenario that reports the rows `names` is to run.
    pub(crate) fn wants(&self, names: &[&str]) -> bool {
        self.filters.is_empty()
            || names
                .iter()
                .any(|name| self.filters.iter().any(|filter| name.contains(filter)))
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
                let scenario = format!("drain {size}, batch {batch}, concurrency {concurrency}");
                if !self.wants(&[&scenario]) {
                    continue;
                }
                let samples = self.drain(size, batch, concurrency, handler, 0).await?;
                let row = samples.row(scenario, "ev/s");
                println!("{row}");
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// Each side's events/s over the repetitions, with a backlog of `backlog` rows (see
    /// [`fill_backlog`] and [`minimal_queue::fill_backlog`]) in the tables when it is not 0.
    async fn drain(
        &self,
        size: u64,
        batch: u32,
        concurrency: u32,
        handler: &str,
        backlog: u64,
    ) -> Result<Samples, BoxError> {
        // With a backlog, two other subscriptions own its rows; their fresh copies of the
        // measured events are dropped before each drain, so every side drains one queue.
        let handlers: &[&str] = if backlog > 0 {
            &[handler, OTHERS[0], OTHERS[1]]
        } else {
            &[handler]
        };
        let (_db, store, ids) = fresh(&self.admin_url, handlers).await?;
        let pool = store.pool();
        let measured = ids[0];
        let backlog_end = if backlog > 0 {
            minimal_queue::fill_backlog(pool, backlog).await?;
            let end = fill_backlog(pool, ids[1], ids[2], backlog).await?;
            checkpoint(pool).await;
            Some(end)
        } else {
            None
        };
        let prepare = async || {
            publish_jobs(pool, size).await?;
            if let Some(backlog_end) = backlog_end {
                sqlx::query(
                    "delete from osa_events.deliveries where subscription_id <> $1 and event_position > $2",
                )
                .bind(measured)
                .bind(backlog_end)
                .execute(pool)
                .await?;
            }
            vacuum(pool).await
        };
        let mut samples = Samples::default();
        for _ in 0..self.plan.repetitions {
            minimal_queue::prepare(pool, size).await?;
            vacuum(pool).await?;
            let elapsed = minimal_queue::drain(pool, batch, concurrency).await;
            minimal_queue::assert_drained(pool).await?;
            samples.minimal.push(rate(size, elapsed));

            prepare().await?;
            let elapsed = baseline::drain(pool, measured, batch, concurrency).await;
            assert_drained(pool, measured).await?;
            samples.own.push(rate(size, elapsed));

            prepare().await?;
            let (elapsed, _) = run_until(&store, handler, size).await?;
            samples.osa.push(rate(size, elapsed));
        }
        Ok(samples)
    }

    /// The cost of per-key order: the same handler (batch 64, concurrency 4) drains the same
    /// keyed events, [`ORDERING_KEYS`] keys spread over the stream, unordered and then
    /// `ordered = "block"`, each in a fresh database per repetition; and the ratio of the medians.
    pub(crate) async fn ordered_keys(&self) -> Result<Vec<Row>, BoxError> {
        let size = self.plan.drain_sizes[0];
        let keys = ORDERING_KEYS.min(size);
        let scenario = format!("drain {size} over {keys} keys, batch 64, concurrency 4");
        let names = [
            format!("{scenario}, unordered"),
            format!("{scenario}, ordered"),
            format!("{scenario}: ordered / unordered"),
        ];
        if !self.wants(&names.iter().map(String::as_str).collect::<Vec<_>>()) {
            return Ok(Vec::new());
        }
        let (mut unordered, mut ordered) = (Vec::new(), Vec::new());
        for _ in 0..self.plan.repetitions {
            for (handler, rates) in [
                ("bench.b64.c4", &mut unordered),
                ("bench.ordered.b64.c4", &mut ordered),
            ] {
                let (_db, store, _) = fresh(&self.admin_url, &[handler]).await?;
                publish_keyed_jobs(store.pool(), size, Some(keys)).await?;
                vacuum(store.pool()).await?;
                let (elapsed, _) = run_until(&store, handler, size).await?;
                rates.push(rate(size, elapsed));
            }
        }
        let [unordered_name, ordered_name, ratio_name] = names;
        let (unordered, ordered) = (median(unordered), median(ordered));
        let rows = vec![
            Row {
                scenario: unordered_name,
                minimal: None,
                own: None,
                osa: unordered,
                unit: "ev/s",
            },
            Row {
                scenario: ordered_name,
                minimal: None,
                own: None,
                osa: ordered,
                unit: "ev/s",
            },
            Row {
                scenario: ratio_name,
                minimal: None,
                own: None,
                osa: ordered / unordered,
                unit: RATIO,
            },
        ];
        for row in &rows {
            println!("{row}");
        }
        Ok(rows)
    }

    /// Publish throughput: 1 and 100 events per transaction to 1 and 2 subscriptions, and
    /// 5,000 per transaction to 1 and 4. The minimal queue writes one row per event whatever
    /// the subscriptions, one statement per transaction.
    pub(crate) async fn publish_all(&self) -> Result<Vec<Row>, BoxError> {
        let bulk = minimal_queue::BULK;
        let mut rows = Vec::new();
        for (subscriptions, per_tx, count) in [
            (1, 1, self.plan.publish_single),
            (1, 100, self.plan.publish_batched),
            (2, 1, self.plan.publish_single),
            (2, 100, self.plan.publish_batched),
            (1, bulk, self.plan.publish_bulk),
            (4, bulk, self.plan.publish_bulk),
        ] {
            let scenario =
                format!("publish {per_tx} per transaction, {subscriptions} subscription(s)");
            if !self.wants(&[&scenario]) {
                continue;
            }
            let handlers: Vec<&str> = std::iter::once("bench.b64.c1")
                .chain(OTHERS)
                .take(subscriptions)
                .collect();
            let (_db, store, _) = fresh(&self.admin_url, &handlers).await?;
            let pool = store.pool();
            let mut samples = Samples::default();
            for _ in 0..self.plan.repetitions {
                let elapsed = minimal_queue::publish(pool, count, per_tx).await?;
                samples.minimal.push(rate(count, elapsed));
                let elapsed = baseline::publish(pool, count, per_tx).await?;
                samples.own.push(rate(count, elapsed));
                let elapsed = publish_timed(pool, count, per_tx).await?;
                samples.osa.push(rate(count, elapsed));
            }
            let row = samples.row(scenario, "ev/s");
            println!("{row}");
            rows.push(row);
        }
        Ok(rows)
    }

    /// Drain at batch 64 with a backlog of other subscriptions' open work and dead letters (for
    /// the minimal queue, done rows), and the same drain without it, each side's ratio of the two.
    /// The drain without is measured again here, next to the one with, not taken from
    /// [`drain_all`](Self::drain_all): the machine's speed drifts over a run.
    pub(crate) async fn backlog(&self) -> Result<Vec<Row>, BoxError> {
        let size = self.plan.drain_sizes[0];
        let backlog = self.plan.backlog_rows;
        let drain = format!("drain {size}, batch 64, concurrency 1");
        let without_name = format!("{drain}, no backlog (the ratio's other half)");
        let with_name = format!("{drain}, beside a {backlog}-row backlog");
        let ratio_name = format!("{drain}: with the {backlog}-row backlog / without");
        if !self.wants(&[&without_name, &with_name, &ratio_name]) {
            return Ok(Vec::new());
        }
        let without = self.drain(size, 64, 1, "bench.b64.c1", 0).await?;
        let with = self.drain(size, 64, 1, "bench.b64.c1", backlog).await?;
        let (without, with) = (
            without.row(without_name, "ev/s"),
            with.row(with_name, "ev/s"),
        );
        let ratio = |with: Option<f64>, without: Option<f64>| Some(with? / without?);
        let ratios = Row {
            scenario: ratio_name,
            minimal: ratio(with.minimal, without.minimal),
            own: ratio(with.own, without.own),
            osa: with.osa / without.osa,
            unit: RATIO,
        };
        for row in [&without, &with, &ratios] {
            println!("{row}");
        }
        Ok(vec![without, with, ratios])
    }
}

impl Bench {
    /// The gain of [`PgStore::relaxed_bookkeeping`]: osa-events' drain with synchronous
    /// bookkeeping (in the "own statements" column, as the other "off / on" rows) and relaxed (in
    /// the osa-events column), taking turns, at batch 1 and 64.
    pub(crate) async fn relaxed_bookkeeping(&self) -> Result<Vec<Row>, BoxError> {
        let size = self.plan.drain_sizes[0];
        let mut rows = Vec::new();
        for (batch, concurrency, handler) in [
            (1, 1, "bench.b1.c1"),
            (64, 1, "bench.b64.c1"),
            (64, 4, "bench.b64.c4"),
        ] {
            let scenario = format!(
                "drain {size}, batch {batch}, concurrency {concurrency}: synchronous bookkeeping \
                 (baseline) / relaxed"
            );
            if !self.wants(&[&scenario]) {
                continue;
            }
            let (_db, store, _) = fresh(&self.admin_url, &[handler]).await?;
            let relaxed = store.clone().relaxed_bookkeeping();
            let pool = store.pool();
            let mut synchronous = Vec::new();
            let mut asynchronous = Vec::new();
            for _ in 0..self.plan.repetitions {
                for (side, rates) in [(&store, &mut synchronous), (&relaxed, &mut asynchronous)] {
                    publish_jobs(pool, size).await?;
                    vacuum(pool).await?;
                    let (elapsed, _) = run_until(side, handler, size).await?;
                    rates.push(rate(size, elapsed));
                }
            }
            let row = Row {
                scenario,
                minimal: None,
                own: Some(median(synchronous)),
                osa: median(asynchronous),
                unit: "ev/s",
            };
            println!("{row}");
            rows.push(row);
        }
        Ok(rows)
    }
}

/// Writes out what filling a backlog wrote: otherwise its WAL (a million rows in each of three
/// tables, in the full run) sets off a checkpoint in the middle of the timed drains that follow,
/// and whichever side is running then pays for it. Only a warning where the role may not
/// checkpoint (PostgreSQL 15: superuser or `pg_checkpoint`).
async fn checkpoint(pool: &PgPool) {
    if let Err(error) = sqlx::query("checkpoint").execute(pool).await {
        println!(
            "  (no checkpoint after the backlog: {error}; a checkpoint may fall inside a drain)"
        );
    }
}

/// Fails unless subscription `subscription` has no open work left: a loop that stopped early
/// would report a rate for work it did not do.
async fn assert_drained(pool: &PgPool, subscription: i32) -> Result<(), BoxError> {
    let left: i64 = sqlx::query_scalar(
        "select count(*) from osa_events.deliveries where subscription_id = $1 and status <> 'dead'",
    )
    .bind(subscription)
    .fetch_one(pool)
    .await?;
    if left > 0 {
        return Err(format!("the own-statements drain left {left} deliveries").into());
    }
    Ok(())
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

/// `rows` events in the log, half with a due pending delivery of subscription `pending` (open
/// work of a handler that is not running) and half with a dead delivery of subscription `dead`:
/// a table that has seen a lot. Returns the last backlog position.
async fn fill_backlog(pool: &PgPool, pending: i32, dead: i32, rows: u64) -> Result<i64, BoxError> {
    sqlx::query(
        "insert into osa_events.events (id, event_type, event_version, payload) \
         select gen_random_uuid(), 'bench.job', 1, '{\"n\": 0, \"sent_ns\": 0}'::jsonb from generate_series(1, $1)",
    )
    .bind(i64::try_from(rows)?)
    .execute(pool)
    .await?;
    sqlx::query(
        "insert into osa_events.deliveries (subscription_id, event_position, status) \
         select $1, position, 'pending' from osa_events.events where position % 2 = 0",
    )
    .bind(pending)
    .execute(pool)
    .await?;
    sqlx::query(
        "insert into osa_events.deliveries (subscription_id, event_position, status, attempts, last_error) \
         select $1, position, 'dead', 6, 'backlog' from osa_events.events where position % 2 = 1",
    )
    .bind(dead)
    .execute(pool)
    .await?;
    sqlx::query("vacuum (analyze) osa_events.events")
        .execute(pool)
        .await?;
    let end: i64 = sqlx::query_scalar("select max(position) from osa_events.events")
        .fetch_one(pool)
        .await?;
    Ok(end)
}

/// The runtime alone: the no-op batch-64 handler on the in-memory store, on one thread (a
/// current-thread tokio runtime), so the figure is the runtime's own cost per event on one core.
/// Measured three ways in alternation: with nothing observing; with tracing and metrics on as in
/// production (a `fmt` subscriber at INFO writing to a sink, so every span at INFO is built and
/// formatted, and the Prometheus recorder); and the same with `osa_events::worker=debug`, which
/// also builds the per-event `process` spans (and formats the DEBUG lines). Returns the rows and
/// the ratios to the first.
pub(crate) fn in_memory_overhead(events: u64, repetitions: usize) -> Result<Vec<Row>, BoxError> {
    let (mut off, mut on, mut debug) = (Vec::new(), Vec::new(), Vec::new());
    // The in-memory figures swing with the allocator's state from run to run: more runs.
    for _ in 0..repetitions.max(5) {
        off.push(in_memory_drain(events)?);
        on.push(observed(events, "info")?);
        debug.push(observed(events, "info,osa_events::worker=debug")?);
    }
    let (off, on, debug) = (median(off), median(on), median(debug));
    let row = |scenario: String, osa: f64, unit: &'static str| Row {
        scenario,
        minimal: None,
        own: None,
        osa,
        unit,
    };
    let name = in_memory_overhead_name(events);
    let rows = vec![
        row(name.clone(), off, "ev/s"),
        row(format!("{name}, tracing (INFO) and metrics on"), on, "ev/s"),
        row(
            format!("{name}, tracing (osa_events::worker=debug) and metrics on"),
            debug,
            "ev/s",
        ),
        row(
            "runtime overhead, tracing (INFO) and metrics on / off".to_owned(),
            on / off,
            RATIO,
        ),
        row(
            "runtime overhead, tracing (worker=debug) and metrics on / off".to_owned(),
            debug / off,
            RATIO,
        ),
    ];
    for row in &rows {
        println!("{row}");
    }
    Ok(rows)
}

/// [`in_memory_drain`] with a `fmt` subscriber filtered by `filter` (to a sink) and the
/// Prometheus recorder, both for this thread and only while the handler drains (the events are
/// published before, unobserved, as in the run without).
fn observed(events: u64, filter: &str) -> Result<f64, BoxError> {
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::sink)
        .finish();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    drain_observed(events, |drain| {
        tracing::subscriber::with_default(subscriber, || {
            metrics::with_local_recorder(&recorder, drain)
        })
    })
}

/// One drain of `events` by the no-op batch-64 handler on the in-memory store, on a
/// current-thread runtime of its own; returns events per second.
fn in_memory_drain(events: u64) -> Result<f64, BoxError> {
    drain_observed(events, |drain| drain())
}

/// [`in_memory_drain`], with the drain itself (from the runtime's start to the last event
/// handled) run inside `observe`.
fn drain_observed(
    events: u64,
    observe: impl FnOnce(&mut dyn FnMut() -> Result<f64, BoxError>) -> Result<f64, BoxError>,
) -> Result<f64, BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = osa_events_testing::InMemoryStore::new();
    let progress = Arc::new(Progress::new(events));
    let app = Runtime::builder(store.clone())
        .only(["bench.b64.c1"])
        .resources(Resources::new().with_arc(progress.clone()))
        .handle_signals(false)
        .build()?;
    runtime.block_on(app.register())?;
    for n in 0..events {
        store.publish(&Job { n, sent_ns: 0 })?;
    }
    let mut app = Some(app);
    observe(&mut || {
        let app = app.take().ok_or("the drain runs once")?;
        runtime.block_on(async {
            let shutdown = app.shutdown_token();
            let started = Instant::now();
            let running = tokio::spawn(app.run());
            progress.done.notified().await;
            let elapsed = started.elapsed();
            shutdown.cancel();
            running.await??;
            Ok::<f64, BoxError>(events as f64 / elapsed.as_secs_f64())
        })
    })
}

pub(crate) fn in_memory_overhead_name(events: u64) -> String {
    format!("runtime overhead: in-memory store, one core, {events} events, batch 64")
}
