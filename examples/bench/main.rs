//! The benchmark: osa-events against two raw-SQL baselines, in one run, on one database server:
//! the minimal single-table queue (`minimal_queue.rs`: what a durable queue on PostgreSQL costs at
//! least) and a loop issuing osa-events' own statements (`baseline.rs`: what the runtime costs).
//!
//! ```text
//! cargo run --release --example bench            # the full run (about 40 minutes, estimated)
//! cargo run --release --example bench -- --quick # a smoke run in under a minute (what CI runs)
//! cargo run --release --example bench -- --long-transaction-only # latencies beside a 30 s transaction
//! cargo run --release --example bench -- --drain-and-publish-only # the claim and publish paths only
//! cargo run --release --example bench -- --scenario "batch 1000" --scenario backlog # a rerun
//! cargo run --release --example bench -- --sqlite-only # the SQLite rows, no PostgreSQL needed
//! ```
//!
//! `--scenario <substring>` (repeatable) runs only the scenarios with a row whose name contains
//! one of the substrings (case matters); `--long-transaction-only` is `--scenario "transaction
//! open"`, and `--drain-and-publish-only` narrows either to the drain and publish scenarios.
//!
//! Uses the server in `DATABASE_URL` (an admin URL: each scenario gets a fresh database), or a
//! throwaway cluster when it is unset. Prints the server's durability settings, each row as its
//! scenario ends, then the table of medians over the repetitions with osa-events' ratio to each
//! baseline. `BENCHMARKS.md` holds the figures of the last full run and what limits each.

mod baseline;
mod handlers;
mod latency;
mod minimal_queue;
mod report;
mod scenarios;
mod schema_costs;
mod sqlite;

use std::time::Duration;

use report::Row;
use scenarios::Bench;

/// The sizes of one run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) repetitions: usize,
    /// Drain sizes; batch-1 settings run only at the first (smallest).
    pub(crate) drain_sizes: Vec<u64>,
    pub(crate) publish_single: u64,
    pub(crate) publish_batched: u64,
    /// Events of each bulk publish scenario (5,000 per transaction).
    pub(crate) publish_bulk: u64,
    pub(crate) latency_events: usize,
    pub(crate) latency_gap: Duration,
    /// How long the transaction beside the long-transaction latency scenarios stays open, at
    /// least.
    pub(crate) long_transaction: Duration,
    pub(crate) backlog_rows: u64,
    pub(crate) overhead_events: u64,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            repetitions: 3,
            drain_sizes: vec![20_000, 200_000],
            publish_single: 2_000,
            publish_batched: 50_000,
            publish_bulk: 50_000,
            latency_events: 200,
            latency_gap: Duration::from_millis(20),
            long_transaction: Duration::from_secs(30),
            backlog_rows: 1_000_000,
            overhead_events: 200_000,
        }
    }

    fn quick() -> Plan {
        Plan {
            repetitions: 1,
            drain_sizes: vec![500],
            publish_single: 100,
            publish_batched: 2_000,
            publish_bulk: 5_000,
            latency_events: 20,
            latency_gap: Duration::from_millis(20),
            long_transaction: Duration::from_secs(1),
            backlog_rows: 20_000,
            overhead_events: 20_000,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Default)]
struct Options {
    quick: bool,
    long_transaction_only: bool,
    drain_and_publish_only: bool,
    sqlite_only: bool,
    scenarios: Vec<String>,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut options = Options::default();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--long-transaction-only" => options.long_transaction_only = true,
                "--drain-and-publish-only" => options.drain_and_publish_only = true,
                "--sqlite-only" => options.sqlite_only = true,
                "--scenario" => options.scenarios.push(
                    args.next()
                        .ok_or("`--scenario` needs a substring of a scenario's name")?,
                ),
                other => {
                    return Err(format!(
                        "unknown argument `{other}`, expected `--quick`, `--long-transaction-only`, \
                         `--drain-and-publish-only`, `--sqlite-only` or `--scenario <substring>`"
                    ));
                }
            }
        }
        // Both scenarios beside a long transaction, and only those, have this in their names.
        if options.long_transaction_only {
            options.scenarios.push("transaction open".to_owned());
        }
        Ok(options)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = Options::parse()?;
    let plan = if options.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let wants = |name: &str| {
        options.scenarios.is_empty() || options.scenarios.iter().any(|filter| name.contains(filter))
    };
    // `--sqlite-only`: no PostgreSQL server is needed.
    if options.sqlite_only {
        println!("SQLite {}; plan: {plan:?}", sqlite_version().await?);
        let rows = sqlite::all(&plan, wants).await?;
        print_table(&rows);
        return Ok(());
    }
    let (admin_url, _cluster) = osa_events_fixtures::pg::database_url_or_throwaway()?;
    let bench = Bench::new(admin_url, plan.clone(), options.scenarios.clone());
    bench.print_settings().await?;

    let mut rows: Vec<Row> = Vec::new();
    rows.extend(bench.drain_all().await?);
    rows.extend(bench.ordered_keys().await?);
    rows.extend(bench.publish_all().await?);
    rows.extend(sqlite::all(&plan, wants).await?);
    // `--drain-and-publish-only`: the claim and publish paths, what a change to them reruns.
    if options.drain_and_publish_only {
        print_table(&rows);
        return Ok(());
    }
    rows.extend(bench.latency_idle().await?);
    rows.extend(bench.latency_beside_a_long_transaction().await?);
    rows.extend(bench.projection_latency_beside_a_long_transaction().await?);
    rows.extend(bench.backlog().await?);
    rows.extend(bench.relaxed_bookkeeping().await?);
    rows.extend(bench.commit_order_cost().await?);
    rows.extend(bench.foreign_key_cost().await?);
    let (overhead_events, repetitions) = (plan.overhead_events, plan.repetitions);
    if bench.wants(&[&scenarios::in_memory_overhead_name(overhead_events)]) {
        rows.extend(
            tokio::task::spawn_blocking(move || {
                scenarios::in_memory_overhead(overhead_events, repetitions)
                    .map_err(|e| e.to_string())
            })
            .await??,
        );
    }

    print_table(&rows);
    Ok(())
}

/// The version of the SQLite compiled into the store.
async fn sqlite_version() -> Result<String, Box<dyn std::error::Error>> {
    let store = osa_events::SqliteStore::temporary().await?;
    let version: String = sqlx::query_scalar("select sqlite_version()")
        .fetch_one(store.pool())
        .await?;
    store.close().await;
    Ok(version)
}

fn print_table(rows: &[Row]) {
    println!();
    println!("{}", report::HEADER);
    for row in rows {
        println!("{row}");
    }
}
