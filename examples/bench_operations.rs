//! The operations API's figures (issue #15): status latency at a million open deliveries, the
//! prune rate with a publisher's latency beside it, and the replay rate. Each scenario fills a
//! fresh database with set-based SQL, vacuums and analyzes it, then times the operation through
//! [`Operations`] on a [`PgStore`].
//!
//! ```text
//! cargo run --release --example bench_operations                      # all three (about 5 minutes)
//! cargo run --release --example bench_operations -- --scenario status # status, prune or replay (repeatable)
//! cargo run --release --example bench_operations -- --quick           # a smoke run: 1/100 of the rows
//! cargo run --release --example bench_operations -- --scenario status \
//!     --explain docs/operations-status-explain.txt                    # also write status's plans
//! cargo run --release --example bench_operations -- --scenario status --status-experiments
//! cargo run --release --example bench_operations -- --scenario prune --prune-backlog --prune-seconds 180
//! ```
//!
//! - `--status-experiments`: status timed again with `jit = off` for the database, then also with
//!   an index of the claims: settings and an index of this database only, for comparison.
//! - `--prune-backlog`: the publisher's subscription is not run, so its open deliveries pile up
//!   during the prune (by default a handler in this process handles what it publishes).
//! - `--prune-seconds <n>`: stop the prune after `n` seconds and report the rate so far.
//! - `--prune-jit-off`: the prune scenario with `jit = off` for its database, for comparison.
//!
//! Uses the server in `DATABASE_URL` (an admin URL: each scenario gets a fresh database, dropped
//! afterwards), or a throwaway cluster when it is unset. Prints the cores, load average and server
//! settings, then one block per scenario (figures of a run on 2 busy cores):
//!
//! ```text
//! status: 1000000 open deliveries (945042 due, 49958 scheduled, 5000 claimed) and 50000 dead over 20 subscriptions; filled in 11.3 s, ...
//!   status(): 20 calls, median 61.5 ms, max 69.8 ms (first call 124.4 ms); target < 100 ms; load average 1.39 1.88 2.36
//! prune: 1000000 unreferenced events older than the cutoff (one commit each), 4 subscriptions (the publisher's handled as it publishes), batch 1000; ...
//!     30 s: 342000 deleted, slowest step so far 0.19 s, 2 open deliveries
//!   prune: 1000000 events deleted in 1001 steps, 87.9 s: 11374 events/s; slowest step 0.19 s
//!   publish, one event per transaction: idle p50 0.71 ms, p99 1.34 ms (20193 publishes); during the prune p50 0.92 ms, p99 6.43 ms (62920 publishes): p99 ratio 4.80 (target ≤ 2)
//! replay: 1000000 events to one handler, chunk 1000; ...
//!   replay: 1000000 deliveries created in 1000 steps, 4.6 s: 216049 events/s
//! ```
//!
//! `BENCHMARKS.md` ("Operations (issue #15)") holds the figures of the last runs and what limits
//! each. With `--explain <file>`, the status scenario also runs `status()` on a connection with
//! `auto_explain` loaded (every statement's plan, with `ANALYZE` and `BUFFERS`, sent back as a
//! notice) and writes the plans of its seventh call, when the prepared statements have settled
//! on the plan they keep, to the file. The example exits 0 when its scenarios are done.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osa_events::operations::{Operations, Prune, Replay};
use osa_events::store::Store;
use osa_events::{Event, PgStore};
use osa_events_fixtures::pg::TestDatabase;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the publisher beside the prune publishes, one per transaction.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "bench.ops.tick")]
struct Tick {
    n: u64,
}

/// The handler of the publisher's events in the prune scenario.
const TICKS: &str = "ops.ticks.handled";

#[osa_events::event_handler(name = "ops.ticks.handled", batch = 64, poll = "1s")]
async fn handle_tick(_tick: Tick) -> Result<(), osa_events::HandlerError> {
    Ok(())
}

/// The event type of the filled rows: `status`'s and `replay`'s deliveries, `prune`'s events.
const JOB: &str = "bench.ops.job";

/// The sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Open deliveries of the status scenario (plus 5% as many dead letters).
    status_open: i64,
    subscriptions: i64,
    status_calls: usize,
    prune_events: i64,
    prune_batch: u32,
    /// How long the publisher runs alone, before the prune.
    idle_publishing: Duration,
    replay_events: i64,
    replay_chunk: u32,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            status_open: 1_000_000,
            subscriptions: 20,
            status_calls: 20,
            prune_events: 1_000_000,
            prune_batch: Prune::DEFAULT_BATCH,
            idle_publishing: Duration::from_secs(15),
            replay_events: 1_000_000,
            replay_chunk: 1_000,
        }
    }

    fn quick() -> Plan {
        Plan {
            status_open: 10_000,
            prune_events: 10_000,
            idle_publishing: Duration::from_secs(2),
            replay_events: 10_000,
            ..Plan::full()
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Default)]
struct Options {
    quick: bool,
    scenarios: Vec<String>,
    explain: Option<String>,
    /// `--status-experiments`: also time status with `jit = off`, then with an index of claims.
    status_experiments: bool,
    /// `--prune-backlog`: the publisher's subscription is not run, so its deliveries pile up.
    prune_backlog: bool,
    /// `--prune-seconds <n>`: stop the prune after this long and report the rate so far.
    prune_limit: Option<Duration>,
    /// `--prune-jit-off`: the prune scenario with `jit = off` for its database.
    prune_jit_off: bool,
    /// `--prune-batch <n>`: events per prune step (default 1,000).
    prune_batch: Option<u32>,
    /// `--prune-pause-ms <n>`: the pause between prune steps (`Prune::pause`; default none).
    prune_pause: Option<Duration>,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut options = Options::default();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--scenario" => {
                    let scenario = args.next().ok_or("`--scenario` needs a scenario's name")?;
                    if !["status", "prune", "replay"].contains(&scenario.as_str()) {
                        return Err(format!(
                            "unknown scenario `{scenario}`, expected `status`, `prune` or `replay`"
                        ));
                    }
                    options.scenarios.push(scenario);
                }
                "--explain" => {
                    options.explain = Some(args.next().ok_or("`--explain` needs a file")?);
                }
                "--prune-backlog" => options.prune_backlog = true,
                "--status-experiments" => options.status_experiments = true,
                "--prune-jit-off" => options.prune_jit_off = true,
                "--prune-batch" => {
                    let batch = args
                        .next()
                        .and_then(|batch| batch.parse().ok())
                        .ok_or("`--prune-batch` needs a number of events")?;
                    options.prune_batch = Some(batch);
                }
                "--prune-pause-ms" => {
                    let millis = args
                        .next()
                        .and_then(|millis| millis.parse().ok())
                        .ok_or("`--prune-pause-ms` needs a number of milliseconds")?;
                    options.prune_pause = Some(Duration::from_millis(millis));
                }
                "--prune-seconds" => {
                    let seconds = args
                        .next()
                        .and_then(|seconds| seconds.parse().ok())
                        .ok_or("`--prune-seconds` needs a number of seconds")?;
                    options.prune_limit = Some(Duration::from_secs(seconds));
                }
                other => {
                    return Err(format!(
                        "unknown argument `{other}`, expected `--quick`, `--scenario <status|prune|replay>`, \
                         `--explain <file>`, `--status-experiments`, `--prune-backlog`, \
                         `--prune-seconds <n>`, `--prune-batch <n>`, `--prune-pause-ms <n>` or \
                         `--prune-jit-off`"
                    ));
                }
            }
        }
        Ok(options)
    }

    fn wants(&self, scenario: &str) -> bool {
        self.scenarios.is_empty() || self.scenarios.iter().any(|wanted| wanted == scenario)
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let options = Options::parse()?;
    let mut plan = if options.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(batch) = options.prune_batch {
        plan.prune_batch = batch;
    }
    let notices = Notices::install();
    let (admin_url, _cluster) = osa_events_fixtures::pg::database_url_or_throwaway()?;
    print_settings(&admin_url).await?;
    println!("plan: {plan:?}");
    if options.wants("status") {
        status(
            &admin_url,
            plan,
            options.explain.as_deref(),
            options.status_experiments,
            &notices,
        )
        .await?;
    }
    if options.wants("prune") {
        let variant = PruneVariant {
            backlog: options.prune_backlog,
            limit: options.prune_limit,
            jit_off: options.prune_jit_off,
            pause: options.prune_pause.unwrap_or_default(),
        };
        prune(&admin_url, plan, variant).await?;
    }
    if options.wants("replay") {
        replay(&admin_url, plan).await?;
    }
    Ok(())
}

/// A fresh database with osa-events' schema and its store.
async fn fresh(admin_url: &str) -> Result<(TestDatabase, PgStore), BoxError> {
    let database = TestDatabase::create_on(admin_url).await?;
    let store = PgStore::connect(database.url()).await?;
    store.migrate().await?;
    Ok((database, store))
}

fn ops(store: &PgStore) -> &dyn Operations {
    store.operations().expect("PgStore offers operations")
}

async fn print_settings(admin_url: &str) -> Result<(), BoxError> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await?;
    let settings: Vec<(String, String)> = sqlx::query_as(
        "select name, setting from pg_settings where name in ('fsync', 'synchronous_commit', \
         'shared_buffers', 'work_mem', 'autovacuum', 'max_connections') order by name",
    )
    .fetch_all(&pool)
    .await?;
    let version: String = sqlx::query_scalar("show server_version")
        .fetch_one(&pool)
        .await?;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "{cores} cores; load average {}; PostgreSQL {version}; {}",
        load_average(),
        settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`), or `?` where there is none.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "?".to_owned())
}

async fn vacuum_analyze(pool: &PgPool) -> Result<Duration, BoxError> {
    let started = Instant::now();
    sqlx::query(
        "vacuum (analyze) osa_events.events, osa_events.deliveries, osa_events.subscriptions, \
         osa_events.commits",
    )
    .execute(pool)
    .await?;
    Ok(started.elapsed())
}

/// `count` subscriptions of `event_type` named `<prefix>.01`, `<prefix>.02`, ...; their ids.
async fn subscriptions(
    pool: &PgPool,
    prefix: &str,
    event_type: &str,
    count: i64,
) -> Result<Vec<i32>, BoxError> {
    let ids = sqlx::query_scalar(
        "insert into osa_events.subscriptions (name, event_type) \
         select format('%s.%s', $1::text, lpad(g::text, 2, '0')), $2 from generate_series(1, $3) g \
         order by g returning id",
    )
    .bind(prefix)
    .bind(event_type)
    .bind(count)
    .fetch_all(pool)
    .await?;
    Ok(ids)
}

/// `count` events of `event_type`, published `age_seconds` ago, in one commit (`one_commit`) or
/// one commit each (as a publisher of one event per transaction leaves them).
async fn fill_events(
    pool: &PgPool,
    event_type: &str,
    count: i64,
    age_seconds: f64,
    one_commit: bool,
) -> Result<(), BoxError> {
    let sql = if one_commit {
        "insert into osa_events.events (id, event_type, event_version, payload, created_at) \
         select gen_random_uuid(), $1, 1, jsonb_build_object('n', g), \
                now() - make_interval(secs => $3) \
         from generate_series(1, $2) g"
    } else {
        // The commits' sequence numbers are handed out by their trigger at commit, as usual.
        "with c as (insert into osa_events.commits (seq) select null from generate_series(1, $2) \
                    returning id) \
         insert into osa_events.events (id, event_type, event_version, payload, created_at, commit_id) \
         select gen_random_uuid(), $1, 1, jsonb_build_object('n', c.id), \
                now() - make_interval(secs => $3), c.id \
         from c order by c.id"
    };
    sqlx::query(sql)
        .bind(event_type)
        .bind(count)
        .bind(age_seconds)
        .execute(pool)
        .await?;
    Ok(())
}

/// Status at `plan.status_open` open deliveries over `plan.subscriptions` subscriptions.
///
/// One event per delivery; runs of 21 consecutive positions belong to one subscription (round
/// robin over the subscriptions), and of each run: one dead letter, one scheduled retry (due in up
/// to an hour, attempt 1, with an error), in one run of ten per subscription a claimed delivery
/// (claimed 10 s ago, expiring in 10 minutes: 250 per subscription, about what 4 loops of batch 64
/// hold, 5,000 in all), the rest due, up to an hour overdue. Two live nodes run the subscriptions.
async fn status(
    admin_url: &str,
    plan: Plan,
    explain: Option<&str>,
    experiments: bool,
    notices: &Notices,
) -> Result<(), BoxError> {
    let (database, store) = fresh(admin_url).await?;
    let pool = store.pool();
    let rows = plan.status_open / 20 * 21;
    let started = Instant::now();
    let ids = subscriptions(pool, "ops.handler", JOB, plan.subscriptions).await?;
    fill_events(pool, JOB, rows, 0.0, true).await?;
    sqlx::query(
        "insert into osa_events.deliveries \
             (subscription_id, event_position, status, attempts, run_at, claim_token, claimed_by, \
              claimed_at, last_error, updated_at) \
         select $1[1 + (run % cardinality($1))], p, \
                case when slot = 0 then 'dead' when slot = 1 and (run / 20) % 10 = 0 then 'claimed' \
                     else 'pending' end, \
                case when slot = 0 then 6 when slot in (1, 2) then 1 else 0 end, \
                case when slot = 0 then now() - make_interval(secs => p % 86400) \
                     when slot = 1 and (run / 20) % 10 = 0 then now() + interval '10 minutes' \
                     when slot = 2 then now() + make_interval(secs => 1 + p % 3600) \
                     else now() - make_interval(secs => p % 3600) end, \
                case when slot = 1 and (run / 20) % 10 = 0 then gen_random_uuid() end, \
                case when slot = 1 and (run / 20) % 10 = 0 then format('node-%s/loop-%s', (run / 20) % 2, (run / 20) % 4) end, \
                case when slot = 1 and (run / 20) % 10 = 0 then now() - interval '10 seconds' end, \
                case when slot in (0, 2) then 'handler failed: connection refused' end, \
                now() - make_interval(secs => p % 86400) \
         from (select p, p % 21 as slot, p / 21 as run from osa_events.events as e (p)) as d",
    )
    .bind(&ids)
    .execute(pool)
    .await?;
    sqlx::query(
        "insert into osa_events.nodes (id, name, host, pid, version, handlers, projections, \
                                       started_at, heartbeat) \
         select gen_random_uuid(), format('node-%s', g), 'bench', g, '0.1.0', \
                (select array_agg(name order by name) from osa_events.subscriptions), '{}', \
                now() - interval '1 hour', interval '10 seconds' \
         from generate_series(0, 1) g",
    )
    .execute(pool)
    .await?;
    // The activity history full, as two hours of a busy fleet leave it (the dashboard's charts).
    sqlx::query(
        "insert into osa_events.activity (kind, name, minute, handled, failed, dead) \
         select 'handler', s.name, date_trunc('minute', now()) - make_interval(mins => m), \
                1000 + m, m % 7, m % 3 \
         from osa_events.subscriptions s, generate_series(0, 120) m",
    )
    .execute(pool)
    .await?;
    let filled = started.elapsed();
    let vacuumed = vacuum_analyze(pool).await?;
    let (due, scheduled, claimed, dead): (i64, i64, i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'pending' and run_at <= now()), \
                count(*) filter (where status = 'pending' and run_at > now()), \
                count(*) filter (where status = 'claimed'), \
                count(*) filter (where status = 'dead') \
         from osa_events.deliveries",
    )
    .fetch_one(pool)
    .await?;
    println!(
        "status: {} open deliveries ({due} due, {scheduled} scheduled, {claimed} claimed) and \
         {dead} dead over {} subscriptions; filled in {:.1} s, vacuum analyze {:.1} s; load \
         average {}",
        due + scheduled + claimed,
        ids.len(),
        filled.as_secs_f64(),
        vacuumed.as_secs_f64(),
        load_average(),
    );

    let (first, times) = time_status(&store, plan.status_calls, ids.len()).await?;
    print_times("status()", first, &times, 100);
    for (page, path) in [
        ("dashboard overview", "/".to_owned()),
        (
            "dashboard handler page",
            "/handlers/ops.handler.01".to_owned(),
        ),
        ("dashboard dead letters", "/dead".to_owned()),
    ] {
        let (first, times) = time_page(&store, &path, plan.status_calls).await?;
        print_times(&format!("{page}, GET {path} over HTTP"), first, &times, 200);
    }
    if let Some(path) = explain {
        let plans = explain_status(database.url(), notices).await?;
        let version: String = sqlx::query_scalar("select version()")
            .fetch_one(pool)
            .await?;
        let mut text = String::new();
        writeln!(
            text,
            "The plans of Operations::status() on PostgreSQL, from `cargo run --release --example \
             bench_operations -- --scenario status --explain {path}`."
        )?;
        writeln!(
            text,
            "Data: {} open deliveries ({due} due, {scheduled} scheduled, {claimed} claimed) and \
             {dead} dead letters over {} subscriptions, one event each, two live nodes, no \
             projection; vacuumed and analyzed.",
            due + scheduled + claimed,
            ids.len()
        )?;
        writeln!(
            text,
            "Captured with auto_explain (log_analyze, log_buffers, log_min_duration = 0) on the \
             seventh call of one connection, when the prepared statements use the plan they keep."
        )?;
        writeln!(text, "{version}")?;
        for plan in plans {
            writeln!(text, "\n{}", "-".repeat(100))?;
            writeln!(text, "{}", plan.trim_end())?;
        }
        std::fs::write(path, text)?;
        println!("  plans written to {path}");
    }
    if experiments {
        // Settings of this database only, for the lead to weigh: not what the library does.
        let name = database.name();
        // The name is the fixture's own, `osa_test_<hex>`.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "alter database \"{name}\" set jit = off"
        )))
        .execute(pool)
        .await?;
        let without_jit = PgStore::connect(database.url()).await?;
        let (first, times) = time_status(&without_jit, plan.status_calls, ids.len()).await?;
        print_times(
            "experiment, jit = off for the database: status()",
            first,
            &times,
            100,
        );
        sqlx::query(
            "create index bench_deliveries_claimed on osa_events.deliveries (subscription_id) \
             include (claimed_at, claimed_by) where status = 'claimed'",
        )
        .execute(pool)
        .await?;
        vacuum_analyze(pool).await?;
        let (first, times) = time_status(&without_jit, plan.status_calls, ids.len()).await?;
        print_times(
            "experiment, jit = off and an index of the claims: status()",
            first,
            &times,
            100,
        );
    }
    Ok(())
}

/// Times `calls` calls of `status()`, after a first one that also connects and prepares
/// (returned on its own).
async fn time_status(
    store: &PgStore,
    calls: usize,
    handlers: usize,
) -> Result<(Duration, Vec<Duration>), BoxError> {
    let mut times = Vec::with_capacity(calls);
    let mut first = Duration::ZERO;
    for call in 0..=calls {
        let started = Instant::now();
        let status = ops(store).status().await?;
        let elapsed = started.elapsed();
        assert_eq!(
            status.handlers.len(),
            handlers,
            "status shows every handler"
        );
        if call == 0 {
            first = elapsed;
        } else {
            times.push(elapsed);
        }
    }
    times.sort();
    Ok((first, times))
}

fn print_times(what: &str, first: Duration, sorted: &[Duration], target_ms: u32) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  {what}: {} calls, median {:.1} ms, max {:.1} ms (first call {:.1} ms); target < \
         {target_ms} ms; load average {}",
        sorted.len(),
        ms(sorted[sorted.len() / 2]),
        ms(sorted[sorted.len() - 1]),
        ms(first),
        load_average(),
    );
}

/// Times `calls` requests of the dashboard's page `path`, from the request's first byte to the
/// page's last, over HTTP on loopback: the dashboard served by axum as `osa-events dashboard`
/// serves it, asked by a bare HTTP/1.1 client. The first request is returned on its own.
async fn time_page(
    store: &PgStore,
    path: &str,
    calls: usize,
) -> Result<(Duration, Vec<Duration>), BoxError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = osa_events::dashboard::router(
        store.clone(),
        osa_events::dashboard::DashboardOptions::new(),
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut times = Vec::with_capacity(calls);
    let mut first = Duration::ZERO;
    for call in 0..=calls {
        let started = Instant::now();
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let elapsed = started.elapsed();
        let text = String::from_utf8_lossy(&response);
        if !text.starts_with("HTTP/1.1 200") || !text.contains("</html>") {
            return Err(format!(
                "GET {path} did not answer a page: {}",
                &text[..text.len().min(300)]
            )
            .into());
        }
        if call == 0 {
            first = elapsed;
        } else {
            times.push(elapsed);
        }
    }
    server.abort();
    times.sort();
    Ok((first, times))
}

/// The plans of every statement of one `status()` call, on a connection of its own with
/// `auto_explain` loaded, from its seventh call: PostgreSQL plans a prepared statement afresh
/// for its first five executions, then may switch to a generic plan.
async fn explain_status(url: &str, notices: &Notices) -> Result<Vec<String>, BoxError> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::raw_sql(
                    "load 'auto_explain'; \
                     set auto_explain.log_min_duration = 0; \
                     set auto_explain.log_analyze = on; \
                     set auto_explain.log_buffers = on; \
                     set auto_explain.log_timing = on; \
                     set auto_explain.log_format = text; \
                     set client_min_messages = log",
                )
                .execute(conn)
                .await?;
                Ok(())
            })
        })
        .connect(url)
        .await?;
    let store = PgStore::from_pool(pool);
    for _ in 0..6 {
        ops(&store).status().await?;
    }
    notices.take();
    notices.capture(true);
    ops(&store).status().await?;
    notices.capture(false);
    Ok(notices
        .take()
        .into_iter()
        .filter(|notice| notice.contains("plan:"))
        .collect())
}

/// Prune: `plan.prune_events` events that nothing refers to, two days old, one commit each, a
/// subscription of the publisher's events and three of other types. A publisher publishes one
/// event per transaction back to back, first alone for `plan.idle_publishing`, then while prune
/// steps run to the end (or for `limit`); its latencies are compared.
///
/// By default a handler runs and handles the publisher's events, so open deliveries stay few;
/// with `backlog` its subscription is not run, and its deliveries pile up as the prune goes.
async fn prune(admin_url: &str, plan: Plan, variant: PruneVariant) -> Result<(), BoxError> {
    let PruneVariant {
        backlog,
        limit,
        jit_off,
        pause,
    } = variant;
    let (database, mut store) = fresh(admin_url).await?;
    if jit_off {
        // A setting of this database only, for comparison; new connections take it.
        let name = database.name();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "alter database \"{name}\" set jit = off"
        )))
        .execute(store.pool())
        .await?;
        store = PgStore::connect(database.url()).await?;
        println!("  (experiment: jit = off for the database)");
    }
    let pool = store.pool();
    let started = Instant::now();
    if backlog {
        subscriptions(pool, "ops.ticks", Tick::NAME, 1).await?;
    }
    subscriptions(pool, "ops.other", "bench.ops.other", 3).await?;
    fill_events(pool, JOB, plan.prune_events, 2.0 * 86_400.0, false).await?;
    let filled = started.elapsed();
    let vacuumed = vacuum_analyze(pool).await?;
    let handler = if backlog {
        None
    } else {
        let runtime = osa_events::Runtime::builder(store.clone())
            .only([TICKS])
            .handle_signals(false)
            .build()?;
        runtime.register().await?;
        let shutdown = runtime.shutdown_token();
        Some((shutdown, tokio::spawn(runtime.run())))
    };
    println!(
        "prune: {} unreferenced events older than the cutoff (one commit each), 4 subscriptions \
         ({}), batch {}; filled in {:.1} s, vacuum analyze {:.1} s; load average {}",
        plan.prune_events,
        if backlog {
            "the publisher's not run: its deliveries pile up"
        } else {
            "the publisher's handled as it publishes"
        },
        plan.prune_batch,
        filled.as_secs_f64(),
        vacuumed.as_secs_f64(),
        load_average(),
    );

    // The publisher's own connection, so it never waits for one of the prune's.
    let publisher_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(database.url())
        .await?;
    let phase = Arc::new(Phase::default());
    let publisher = tokio::spawn(publish_continuously(publisher_pool, phase.clone()));

    tokio::time::sleep(plan.idle_publishing).await;
    phase.during.store(true, Ordering::SeqCst);
    let prune = Prune {
        batch: plan.prune_batch,
        ..Prune::older_than(Duration::from_secs(86_400))
    };
    let started = Instant::now();
    let (mut after, mut deleted, mut steps) = (0, 0, 0);
    let (mut slowest, mut reported) = (Duration::ZERO, Instant::now());
    let finished = loop {
        let step_started = Instant::now();
        let step = ops(&store).prune(&prune, after).await?;
        slowest = slowest.max(step_started.elapsed());
        assert!(!step.busy, "no other prune runs");
        deleted += step.events;
        steps += 1;
        after = step.through;
        if step.done {
            break true;
        }
        if limit.is_some_and(|limit| started.elapsed() >= limit) {
            break false;
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        if reported.elapsed() >= Duration::from_secs(30) {
            reported = Instant::now();
            let open: i64 = sqlx::query_scalar(
                "select count(*) from osa_events.deliveries where status <> 'dead'",
            )
            .fetch_one(pool)
            .await?;
            println!(
                "    {:.0} s: {deleted} deleted, slowest step so far {:.2} s, {open} open deliveries",
                started.elapsed().as_secs_f64(),
                slowest.as_secs_f64(),
            );
        }
    };
    let elapsed = started.elapsed();
    phase.stop.store(true, Ordering::SeqCst);
    let (idle, during) = publisher.await??;
    if let Some((shutdown, running)) = handler {
        shutdown.cancel();
        running.await??;
    }
    if finished {
        let left: i64 =
            sqlx::query_scalar("select count(*) from osa_events.events where event_type = $1")
                .bind(JOB)
                .fetch_one(pool)
                .await?;
        assert_eq!(left, 0, "the prune deleted every old event");
    }
    println!(
        "  prune: {deleted} events deleted in {steps} steps, {:.1} s{}: {:.0} events/s; slowest \
         step {:.2} s",
        elapsed.as_secs_f64(),
        if finished {
            ""
        } else {
            " (stopped by --prune-seconds)"
        },
        deleted as f64 / elapsed.as_secs_f64(),
        slowest.as_secs_f64(),
    );
    let (idle_p99, during_p99) = (percentile(&idle, 0.99), percentile(&during, 0.99));
    println!(
        "  publish, one event per transaction: idle p50 {:.2} ms, p99 {idle_p99:.2} ms ({} \
         publishes); during the prune p50 {:.2} ms, p99 {during_p99:.2} ms ({} publishes): p99 \
         ratio {:.2} (target ≤ 2)",
        percentile(&idle, 0.5),
        idle.len(),
        percentile(&during, 0.5),
        during.len(),
        during_p99 / idle_p99,
    );
    Ok(())
}

/// The prune scenario's variant, from the command line.
#[derive(Debug, Clone, Copy)]
struct PruneVariant {
    /// The publisher's subscription is not run: its open deliveries pile up.
    backlog: bool,
    /// Stop the prune after this long.
    limit: Option<Duration>,
    /// `jit = off` for the database.
    jit_off: bool,
    /// The pause between steps.
    pause: Duration,
}

/// Which phase the publisher is in.
#[derive(Debug, Default)]
struct Phase {
    during: AtomicBool,
    stop: AtomicBool,
}

/// Publishes one event per transaction until `phase.stop`; the latencies before and after
/// `phase.during` was set.
async fn publish_continuously(
    pool: PgPool,
    phase: Arc<Phase>,
) -> Result<(Vec<Duration>, Vec<Duration>), BoxError> {
    let (mut idle, mut during) = (Vec::new(), Vec::new());
    let mut n = 0;
    while !phase.stop.load(Ordering::SeqCst) {
        let beside = phase.during.load(Ordering::SeqCst);
        let started = Instant::now();
        osa_events::publish(&pool, &Tick { n }).await?;
        let elapsed = started.elapsed();
        if beside {
            during.push(elapsed);
        } else {
            idle.push(elapsed);
        }
        n += 1;
    }
    Ok((idle, during))
}

/// The `fraction` percentile of `latencies`, in milliseconds (nearest rank).
fn percentile(latencies: &[Duration], fraction: f64) -> f64 {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// Replay: `plan.replay_events` events of one handler's type, none delivered to it, replayed in
/// chunks of `plan.replay_chunk` from the start of the log.
async fn replay(admin_url: &str, plan: Plan) -> Result<(), BoxError> {
    let (_database, store) = fresh(admin_url).await?;
    let pool = store.pool();
    let started = Instant::now();
    subscriptions(pool, "ops.replayed", JOB, 1).await?;
    fill_events(pool, JOB, plan.replay_events, 3_600.0, true).await?;
    let filled = started.elapsed();
    let vacuumed = vacuum_analyze(pool).await?;
    println!(
        "replay: {} events to one handler, chunk {}; filled in {:.1} s, vacuum analyze {:.1} s; \
         load average {}",
        plan.replay_events,
        plan.replay_chunk,
        filled.as_secs_f64(),
        vacuumed.as_secs_f64(),
        load_average(),
    );
    let replay = Replay {
        chunk: plan.replay_chunk,
        ..Replay::everything("ops.replayed.01")
    };
    let started = Instant::now();
    let (mut after, mut end, mut delivered, mut steps) = (0, None, 0, 0);
    loop {
        let step = ops(&store).replay(&replay, after, end).await?;
        delivered += step.delivered;
        steps += 1;
        after = step.through;
        end = Some(step.end);
        if step.done {
            break;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(
        delivered,
        u64::try_from(plan.replay_events)?,
        "every event replayed"
    );
    println!(
        "  replay: {delivered} deliveries created in {steps} steps, {:.1} s: {:.0} events/s",
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64(),
    );
    Ok(())
}

/// The server's notices (sqlx reports them as `tracing` events of target
/// `sqlx::postgres::notice`), kept while capturing: how `auto_explain`'s plans come back.
#[derive(Debug, Clone, Default)]
struct Notices {
    capturing: Arc<AtomicBool>,
    kept: Arc<Mutex<Vec<String>>>,
}

impl Notices {
    /// Installs the subscriber that keeps them, for this target only.
    fn install() -> Notices {
        use tracing_subscriber::layer::SubscriberExt;
        let notices = Notices::default();
        let filter = tracing_subscriber::filter::Targets::new()
            .with_target("sqlx::postgres::notice", tracing::Level::TRACE);
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::Layer::with_filter(notices.clone(), filter),
        );
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber is set");
        notices
    }

    fn capture(&self, on: bool) {
        self.capturing.store(on, Ordering::SeqCst);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.kept.lock().expect("not poisoned"))
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Notices {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if !self.capturing.load(Ordering::SeqCst) {
            return;
        }
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "message" {
                    self.0 = value.to_owned();
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" && self.0.is_empty() {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        self.kept.lock().expect("not poisoned").push(message.0);
    }
}
