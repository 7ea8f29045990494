//! The benchmark: osa-events against a raw-SQL baseline issuing the store's own statements, in one
//! run, on one database server.
//!
//! ```text
//! cargo run --release --example bench            # the full run (about 17 minutes)
//! cargo run --release --example bench -- --quick # a smoke run in seconds (what CI runs)
//! cargo run --release --example bench -- --long-transaction-only # a projection beside a 30 s transaction
//! cargo run --release --example bench -- --drain-and-publish-only # the claim and publish paths only
//! ```
//!
//! Uses the server in `DATABASE_URL` (an admin URL: each scenario gets a fresh database), or a
//! throwaway cluster when it is unset. Prints the server's durability settings and a table of
//! medians over the repetitions with the ratio osa-events / baseline. `BENCHMARKS.md` holds the
//! figures of the last full run and what limits each.

mod baseline;
mod handlers;
mod scenarios;
mod schema_costs;

use std::time::Duration;

use scenarios::{Bench, Row};

/// The sizes of one run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) repetitions: usize,
    /// Drain sizes; batch-1 settings run only at the first (smallest).
    pub(crate) drain_sizes: Vec<u64>,
    pub(crate) publish_single: u64,
    pub(crate) publish_batched: u64,
    pub(crate) latency_events: usize,
    pub(crate) latency_gap: Duration,
    /// How long the transaction beside the projection-latency scenario stays open, at least.
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
            drain_sizes: vec![2_000],
            publish_single: 200,
            publish_batched: 2_000,
            latency_events: 20,
            latency_gap: Duration::from_millis(20),
            long_transaction: Duration::from_secs(1),
            backlog_rows: 20_000,
            overhead_events: 20_000,
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let plan = if quick { Plan::quick() } else { Plan::full() };
    let (admin_url, _cluster) = osa_events_fixtures::pg::database_url_or_throwaway()?;
    let bench = Bench::new(admin_url, plan.clone());
    bench.print_settings().await?;

    let mut rows: Vec<Row> = Vec::new();
    // `--long-transaction-only`: just the projection latency beside a 30 s transaction.
    if std::env::args().any(|arg| arg == "--long-transaction-only") {
        rows.extend(bench.projection_latency_beside_a_long_transaction().await?);
        print_table(&rows);
        return Ok(());
    }
    rows.extend(bench.drain_all().await?);
    rows.extend(bench.publish_all().await?);
    // `--drain-and-publish-only`: the claim and publish paths, what a change to them reruns.
    if std::env::args().any(|arg| arg == "--drain-and-publish-only") {
        print_table(&rows);
        return Ok(());
    }
    rows.extend(bench.latency().await?);
    rows.extend(bench.backlog(&rows).await?);
    rows.extend(bench.commit_order_cost().await?);
    rows.extend(bench.foreign_key_cost().await?);
    rows.extend(bench.projection_latency_beside_a_long_transaction().await?);
    let overhead_events = plan.overhead_events;
    let repetitions = plan.repetitions;
    rows.push(
        tokio::task::spawn_blocking(move || {
            scenarios::in_memory_overhead(overhead_events, repetitions).map_err(|e| e.to_string())
        })
        .await??,
    );

    print_table(&rows);
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| scenario | baseline | osa-events | osa / baseline |");
    println!("| --- | ---: | ---: | ---: |");
    for row in rows {
        println!("{row}");
    }
}
