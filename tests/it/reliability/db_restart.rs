//! 2. Database restart: every backend of the test database is terminated with
//!    `pg_terminate_backend`, several times, in the middle of a run.
//!
//! Two `osa-chaos` workers (`chaos.ledger`, `chaos.tx`) and an `osa-chaos publish` process with
//! 8 concurrent publishers (whose transactions stay open 20 ms) run while the test cuts every
//! connection to the database, in bursts of five 100 ms apart.
//! The processes see their statements fail, log `tracing` warnings, back off and reconnect; none
//! panics or exits. Afterwards the crash test's invariants hold: every event handled, nothing
//! pending, claimed or dead, no duplicate `Tx` effect. The shared server is never restarted: the
//! test terminates the backends of its own database only.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use super::{Proc, Scene, count_lines, mib, replay_hint, report, scaled, seeded_rng, serial};

const HANDLERS: &str = "chaos.ledger,chaos.tx";
/// How a warning of the runtime starts in `osa-chaos`'s log (after the timestamp).
const RUNTIME_WARNING: &str = " WARN osa_events";
/// How the runtime's INFO line of a batch that did not complete whole starts.
const RUNTIME_RETRIED: &str = "batch handled, not all completed";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_publishers_ride_out_terminated_connections() {
    let _turn = serial().await;
    let scene = Scene::new("db_restart").await;
    let mut rng = seeded_rng();
    let seed = rng.seed();
    let replay = replay_hint(seed);
    let events = scaled(3000);
    let rate = 300;
    let started = Instant::now();

    let mut workers: Vec<Proc> = (0..2)
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
            // Transactions stay open a little, as the application's own would: the outages
            // catch publishers mid-transaction.
            "--hold-ms",
            "20",
        ],
    );

    // A burst of terminations every ~2.5 s while the publisher runs.
    let mut admin = PgConnection::connect(
        &osa_events_fixtures::pg::require_database_url().expect("DATABASE_URL"),
    )
    .await
    .expect("connect to the admin database");
    let publish_for = Duration::from_secs_f64(events as f64 / rate as f64);
    let mut outages = 0u32;
    let mut terminated = 0i64;
    while started.elapsed() + Duration::from_secs(2) < publish_for {
        tokio::time::sleep(rng.duration(Duration::from_millis(1500)..Duration::from_millis(3000)))
            .await;
        outages += 1;
        for _ in 0..5 {
            terminated += terminate_backends(&mut admin, scene.database_name()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let status = publisher.exit(Duration::from_secs(120)).await;
    assert!(status.success(), "the publisher exited with {status}");
    let published = publisher.stdout_text();
    scene
        .drained(Duration::from_secs(120), &format!("seed {seed}"))
        .await;
    let open = scene.open().await;
    for worker in &mut workers {
        assert!(worker.running(), "{} died during the outages", worker.name);
    }
    for worker in &mut workers {
        let (status, _) = worker.stop(Duration::from_secs(20)).await;
        assert!(status.success(), "{} exited with {status}", worker.name);
    }

    let (ledger_rows, ledger_distinct) = scene.ledger("chaos.ledger").await;
    let (tx_rows, tx_distinct) = scene.ledger("chaos.tx").await;
    let lost_ledger = scene.missing("chaos.ledger", events as i64).await;
    let lost_tx = scene.missing("chaos.tx", events as i64).await;
    let worker_logs: Vec<String> = workers.iter().map(Proc::stderr_text).collect();
    let publisher_log = publisher.stderr_text();
    // The runtime's own warnings (sqlx's pool adds its own, not counted here).
    let worker_warnings: Vec<usize> = worker_logs
        .iter()
        .map(|log| count_lines(log, &[RUNTIME_WARNING]))
        .collect();
    let publisher_warnings = count_lines(&publisher_log, &[" WARN ", "publish failed"]);
    let publisher_retries = published
        .split_whitespace()
        .find_map(|field| field.strip_prefix("retries="))
        .unwrap_or("?")
        .to_owned();
    let peak_rss = workers.iter().map(|w| w.peak_rss_kib).max().unwrap_or(0);

    report(
        "db_restart",
        &[
            ("events", events.to_string()),
            ("outages", outages.to_string()),
            ("backends_terminated", terminated.to_string()),
            ("worker_warnings", format!("{worker_warnings:?}")),
            ("publisher_retries", publisher_retries),
            ("duplicates", (ledger_rows - ledger_distinct).to_string()),
            ("tx_duplicates", (tx_rows - tx_distinct).to_string()),
            ("lost", (lost_ledger.len() + lost_tx.len()).to_string()),
            ("stuck", open.unfinished().to_string()),
            ("dead", open.dead.to_string()),
            ("peak_rss", mib(peak_rss)),
            ("seconds", format!("{:.1}", started.elapsed().as_secs_f64())),
            ("seed", seed.to_string()),
        ],
    );
    assert!(
        outages > 0 && terminated > 0,
        "no connection was terminated {replay}"
    );
    assert!(
        lost_ledger.is_empty(),
        "chaos.ledger never saw {lost_ledger:?} {replay}"
    );
    assert!(
        lost_tx.is_empty(),
        "chaos.tx never saw {lost_tx:?} {replay}"
    );
    assert_eq!(open, super::Open::NONE, "{replay}");
    assert_eq!(
        tx_rows, tx_distinct,
        "a Tx handler's effect was duplicated {replay}"
    );
    for (worker, log) in workers.iter().zip(&worker_logs) {
        assert!(
            !log.contains("panicked"),
            "{} panicked:\n{log}",
            worker.name
        );
        // An outage that only cost a `Tx` commit is said in the batch's INFO line, not a WARN.
        let said = count_lines(log, &[RUNTIME_WARNING])
            + count_lines(log, &[RUNTIME_RETRIED, "terminating connection"]);
        assert!(
            said > 0,
            "{} lost its connections without saying so {replay}:\n{}",
            worker.name,
            super::tail(log, 20)
        );
    }
    assert!(
        !publisher_log.contains("panicked"),
        "the publisher panicked:\n{publisher_log}"
    );
    assert!(
        publisher_warnings > 0,
        "the outages never caught a publisher mid-transaction {replay}"
    );
    assert_eq!(
        publisher_warnings.to_string(),
        published
            .split_whitespace()
            .find_map(|field| field.strip_prefix("retries="))
            .unwrap_or("?"),
        "every publish retry is logged as a warning"
    );
}

/// Terminates every backend connected to `database` but the caller's; returns how many.
async fn terminate_backends(admin: &mut PgConnection, database: &str) -> i64 {
    sqlx::query_scalar(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity \
         where datname = $1 and pid <> pg_backend_pid()) terminated",
    )
    .bind(database)
    .fetch_one(admin)
    .await
    .expect("terminate the test database's backends")
}
