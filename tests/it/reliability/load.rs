//! 4. Load: many concurrent publishers and workers, sustained.
//!
//! An `osa-chaos publish` process with 8 concurrent publishers publishes at a steady rate, in
//! transactions of 10 events, while three `osa-chaos` workers run `chaos.ledger` and `chaos.tx`.
//! The test samples the open deliveries every 250 ms and the workers' RSS after warm-up and at the
//! end. It checks that the consumers keep up (publication-to-handling latency bounded, backlog
//! bounded), that memory does not grow, that every event is handled and that the deliveries
//! table is empty at the end (completed work is deleted; only dead letters would stay).

use std::time::{Duration, Instant};

use super::{Proc, Scene, mib, report, scaled, serial};

const HANDLERS: &str = "chaos.ledger,chaos.tx";
const WORKERS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_load_keeps_latency_memory_and_the_hot_table_bounded() {
    let _turn = serial().await;
    let scene = Scene::new("load").await;
    let rate: u64 = std::env::var("OSA_RELIABILITY_LOAD_RATE")
        .ok()
        .and_then(|rate| rate.parse().ok())
        .unwrap_or(250);
    let duration = Duration::from_secs(scaled(12));
    let events = rate * duration.as_secs();
    let started = Instant::now();

    let mut workers: Vec<Proc> = (0..WORKERS)
        .map(|slot| scene.worker(&format!("worker{slot}"), HANDLERS, &[]))
        .collect();
    scene.subscribed(&["chaos.ledger", "chaos.tx"]).await;
    let mut publisher = scene.publisher(
        "publisher",
        &[
            "--events",
            &events.to_string(),
            "--publishers",
            "8",
            "--batch",
            "10",
            "--rate",
            &rate.to_string(),
            "--pad",
            "256",
        ],
    );

    let load_started = Instant::now();
    let warm_up = (duration / 5).max(Duration::from_secs(2));
    let mut rss_start: Vec<u64> = Vec::new();
    let mut backlog: Vec<i64> = Vec::new();
    while publisher.running() {
        if rss_start.is_empty() && load_started.elapsed() >= warm_up {
            rss_start = workers.iter_mut().map(rss).collect();
        }
        let open = scene.open().await;
        backlog.push(open.unfinished());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let status = publisher.exit(Duration::from_secs(10)).await;
    assert!(status.success(), "the publisher exited with {status}");
    let publish_took = load_started.elapsed();
    let drained = scene.drains_within(Duration::from_secs(60)).await;
    let drained_after = load_started.elapsed();
    let max_backlog = backlog.iter().copied().max().unwrap_or(0);
    // The backlog at the end of each tenth of the publishing time.
    let backlog_by_tenth: Vec<i64> = (1..=10)
        .filter_map(|tenth| {
            backlog
                .get((backlog.len() * tenth / 10).saturating_sub(1))
                .copied()
        })
        .collect();
    let rss_end: Vec<u64> = workers.iter_mut().map(rss).collect();
    let open = scene.open().await;
    let (deliveries_bytes, events_bytes): (i64, i64) = sqlx::query_as(
        "select pg_total_relation_size('osa_events.deliveries'), \
                pg_total_relation_size('osa_events.events')",
    )
    .fetch_one(&scene.pool)
    .await
    .unwrap();
    // How autovacuum kept up with the churn (statistics lag by up to a second).
    let (dead_tuples, autovacuums): (i64, i64) = sqlx::query_as(
        "select n_dead_tup, autovacuum_count from pg_stat_user_tables \
         where relid = 'osa_events.deliveries'::regclass",
    )
    .fetch_one(&scene.pool)
    .await
    .unwrap();
    for worker in &mut workers {
        let (status, _) = worker.stop(Duration::from_secs(20)).await;
        assert!(status.success(), "{} exited with {status}", worker.name);
    }

    let (ledger_rows, ledger_distinct) = scene.ledger("chaos.ledger").await;
    let (tx_rows, tx_distinct) = scene.ledger("chaos.tx").await;
    let (p50, p99, max) = scene.latency("chaos.ledger").await;
    let (tx_p50, tx_p99, tx_max) = scene.latency("chaos.tx").await;
    let by_tenth = |latencies: Vec<f64>| {
        latencies
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let p99_by_tenth = by_tenth(scene.latency_by_tenth("chaos.ledger").await);
    let tx_p99_by_tenth = by_tenth(scene.latency_by_tenth("chaos.tx").await);
    let peak_rss = workers.iter().map(|w| w.peak_rss_kib).max().unwrap_or(0);
    let throughput = events as f64 / drained_after.as_secs_f64();
    report(
        "load",
        &[
            ("events", events.to_string()),
            ("publishers", "8".to_owned()),
            ("workers", WORKERS.to_string()),
            ("target_rate", format!("{rate}/s")),
            (
                "publish_seconds",
                format!("{:.1}", publish_took.as_secs_f64()),
            ),
            ("handled_per_handler", format!("{throughput:.0}/s")),
            (
                "latency_ms_p50_p99_max",
                format!("{p50:.0}/{p99:.0}/{max:.0}"),
            ),
            (
                "tx_latency_ms_p50_p99_max",
                format!("{tx_p50:.0}/{tx_p99:.0}/{tx_max:.0}"),
            ),
            ("p99_ms_by_tenth", p99_by_tenth),
            ("tx_p99_ms_by_tenth", tx_p99_by_tenth),
            ("max_backlog", max_backlog.to_string()),
            (
                "backlog_by_tenth",
                backlog_by_tenth
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "rss_start",
                rss_start
                    .iter()
                    .map(|kib| mib(*kib))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "rss_end",
                rss_end
                    .iter()
                    .map(|kib| mib(*kib))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("peak_rss", mib(peak_rss)),
            (
                "deliveries_left",
                (open.unfinished() + open.dead).to_string(),
            ),
            (
                "deliveries_table",
                format!("{}KiB", deliveries_bytes / 1024),
            ),
            ("events_table", format!("{}KiB", events_bytes / 1024)),
            ("deliveries_dead_tuples", dead_tuples.to_string()),
            ("deliveries_autovacuums", autovacuums.to_string()),
            ("duplicates", (ledger_rows - ledger_distinct).to_string()),
            ("tx_duplicates", (tx_rows - tx_distinct).to_string()),
            ("seconds", format!("{:.1}", started.elapsed().as_secs_f64())),
        ],
    );

    assert!(
        drained,
        "the workers did not catch up within 60 s after the load"
    );
    assert_eq!(
        ledger_distinct, events as i64,
        "chaos.ledger handled every event"
    );
    assert_eq!(tx_distinct, events as i64, "chaos.tx handled every event");
    assert_eq!(tx_rows, tx_distinct, "no duplicate Tx effect");
    assert_eq!(open, super::Open::NONE, "the hot table is empty");
    // Consumers keep up: nothing waits long, and the backlog stays within a few seconds of load.
    for (handler, p99, max) in [("chaos.ledger", p99, max), ("chaos.tx", tx_p99, tx_max)] {
        assert!(p99 < 5_000.0, "{handler}: p99 latency {p99:.0} ms");
        assert!(max < 15_000.0, "{handler}: max latency {max:.0} ms");
    }
    assert!(
        max_backlog <= (rate * 2 * 5) as i64,
        "{max_backlog} open deliveries at peak: more than 5 s of load"
    );
    assert_eq!(rss_start.len(), WORKERS, "RSS sampled after warm-up");
    for ((worker, start), end) in workers.iter().zip(&rss_start).zip(&rss_end) {
        assert!(
            *end <= start + (start / 2).max(16 * 1024),
            "{}: RSS grew from {} to {}",
            worker.name,
            mib(*start),
            mib(*end)
        );
    }
}

/// Current RSS of a running worker, in KiB.
fn rss(worker: &mut Proc) -> u64 {
    worker
        .memory()
        .unwrap_or_else(|| panic!("{} is not running", worker.name))
        .0
}
