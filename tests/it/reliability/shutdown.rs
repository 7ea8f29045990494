//! 5. Shutdown: SIGTERM during load.
//!
//! Three `osa-chaos` workers run `chaos.slow` (a `Tx` handler that works `--work-ms` per event,
//! claim timeout 60 s) while a publisher process publishes a steady stream:
//! - `patient` (300 ms per event, 10 s grace) gets SIGTERM while it holds claims: its running
//!   handlers finish within the grace period, it completes them and exits with 0;
//! - `stubborn` (60 s per event, 300 ms grace) gets SIGTERM while it holds claims it cannot finish
//!   in time: it stops its handlers, releases their claims and exits with 0, and `survivor` picks
//!   the released deliveries up at once, long before their 60 s claims could have expired;
//! - `survivor` (20 ms per event) finishes the stream and exits with 0 on SIGTERM.
//!
//! Every event is handled exactly once (the handler writes through `Tx`).

use std::time::{Duration, Instant};

use super::{Proc, Scene, count_lines, eventually, mib, report, scaled, serial};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_or_releases_in_flight_work_and_exits_cleanly() {
    let _turn = serial().await;
    let scene = Scene::new("shutdown").await;
    let events = scaled(120);
    let started = Instant::now();

    let mut patient = scene.worker(
        "patient",
        "chaos.slow",
        &["--work-ms", "300", "--grace-ms", "10000"],
    );
    // An event takes it far longer than the test: from its first claim on it is always in the
    // middle of one (with 3 s events, SIGTERM could fall between two, with nothing to release).
    let mut stubborn = scene.worker(
        "stubborn",
        "chaos.slow",
        &["--work-ms", "60000", "--grace-ms", "300"],
    );
    let mut survivor = scene.worker(
        "survivor",
        "chaos.slow",
        &["--work-ms", "20", "--grace-ms", "10000"],
    );
    scene.subscribed(&["chaos.slow"]).await;
    let mut publisher = scene.publisher(
        "publisher",
        &[
            "--events",
            &events.to_string(),
            "--publishers",
            "4",
            "--batch",
            "2",
            "--rate",
            "20",
        ],
    );

    // Under load for a while first.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The patient worker finishes what it holds.
    let held = claims_of(&scene, &patient).await;
    let (status, patient_exit) = patient.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "patient exited with {status}");
    assert!(
        patient_exit < Duration::from_secs(10),
        "patient took {patient_exit:?}, over its grace period"
    );
    let finished_by_patient = handled_by(&scene, &held, patient.pid()).await;
    assert_eq!(
        finished_by_patient,
        held.len(),
        "patient completed every event it held when SIGTERM came ({held:?})"
    );
    assert_eq!(
        claims_now(&scene, &patient).await,
        0,
        "patient left no claim behind"
    );

    // The stubborn worker releases what it cannot finish; the survivor takes it at once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = claims_of(&scene, &stubborn).await;
    let (status, stubborn_exit) = stubborn.stop(Duration::from_secs(20)).await;
    let exited = Instant::now();
    assert!(status.success(), "stubborn exited with {status}");
    assert!(
        stubborn_exit < Duration::from_secs(5),
        "stubborn took {stubborn_exit:?} with a 300 ms grace period"
    );
    assert_eq!(
        claims_now(&scene, &stubborn).await,
        0,
        "stubborn released its claims instead of abandoning them"
    );
    let log = stubborn.stderr_text();
    let released: u64 = log
        .lines()
        .filter(|line| line.contains("released unfinished claims at shutdown"))
        .filter_map(|line| line.split("released=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(released > 0, "stubborn released nothing:\n{log}");
    eventually(
        Duration::from_secs(20),
        "the released events handled",
        || async { handled(&scene, &held).await == held.len() },
    )
    .await;
    let picked_up_after = exited.elapsed();
    assert!(
        picked_up_after < Duration::from_secs(10),
        "released deliveries waited {picked_up_after:?}: as if their 60 s claims had to expire"
    );

    let status = publisher.exit(Duration::from_secs(60)).await;
    assert!(status.success(), "the publisher exited with {status}");
    scene
        .drained(Duration::from_secs(60), "after the shutdowns")
        .await;
    let (status, survivor_exit) = survivor.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "survivor exited with {status}");

    let (rows, distinct) = scene.ledger("chaos.slow").await;
    let lost = scene.missing("chaos.slow", events as i64).await;
    let open = scene.open().await;
    let peak_rss = [&patient, &stubborn, &survivor]
        .iter()
        .map(|w| w.peak_rss_kib)
        .max()
        .unwrap_or(0);
    report(
        "shutdown",
        &[
            ("events", events.to_string()),
            ("patient_exit", format!("{patient_exit:.2?}")),
            ("patient_finished_in_grace", finished_by_patient.to_string()),
            ("stubborn_exit", format!("{stubborn_exit:.2?}")),
            ("stubborn_released", released.to_string()),
            ("released_handled_after", format!("{picked_up_after:.2?}")),
            ("survivor_exit", format!("{survivor_exit:.2?}")),
            ("exit_codes", "0,0,0".to_owned()),
            ("duplicates", (rows - distinct).to_string()),
            ("lost", lost.len().to_string()),
            ("stuck", open.unfinished().to_string()),
            (
                "shutdown_warnings",
                count_lines(&log, &[" WARN "]).to_string(),
            ),
            ("peak_rss", mib(peak_rss)),
            ("seconds", format!("{:.1}", started.elapsed().as_secs_f64())),
        ],
    );
    assert!(lost.is_empty(), "never handled: {lost:?}");
    assert_eq!(rows, distinct, "a Tx handler's effect was duplicated");
    assert_eq!(open, super::Open::NONE);
}

/// The `seq`s of the events `worker` holds claims on, once it holds at least one.
async fn claims_of(scene: &Scene, worker: &Proc) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held: Vec<i64> = sqlx::query_scalar(
            "select (e.payload->>'seq')::bigint from osa_events.deliveries d \
             join osa_events.events e on e.position = d.event_position \
             where d.status = 'claimed' and d.claimed_by like $1 order by 1",
        )
        .bind(claimed_by(worker))
        .fetch_all(&scene.pool)
        .await
        .unwrap();
        if !held.is_empty() {
            return held;
        }
        assert!(
            Instant::now() < deadline,
            "{} never held a claim",
            worker.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn claims_now(scene: &Scene, worker: &Proc) -> i64 {
    sqlx::query_scalar("select count(*) from osa_events.deliveries where claimed_by like $1")
        .bind(claimed_by(worker))
        .fetch_one(&scene.pool)
        .await
        .unwrap()
}

/// `claimed_by` is `host:pid/handler#loop`.
fn claimed_by(worker: &Proc) -> String {
    format!("%:{}/%", worker.pid())
}

/// How many of `seqs` have a ledger row written by process `pid`.
async fn handled_by(scene: &Scene, seqs: &[i64], pid: u32) -> usize {
    let count: i64 = sqlx::query_scalar(
        "select count(distinct seq) from chaos_ledger where handler = 'chaos.slow' and seq = any($1) and pid = $2",
    )
    .bind(seqs)
    .bind(pid as i32)
    .fetch_one(&scene.pool)
    .await
    .unwrap();
    count as usize
}

/// How many of `seqs` have a ledger row.
async fn handled(scene: &Scene, seqs: &[i64]) -> usize {
    let count: i64 = sqlx::query_scalar(
        "select count(distinct seq) from chaos_ledger where handler = 'chaos.slow' and seq = any($1)",
    )
    .bind(seqs)
    .fetch_one(&scene.pool)
    .await
    .unwrap();
    count as usize
}
