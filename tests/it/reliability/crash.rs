//! 1. Crash: worker processes SIGKILLed at random moments and restarted, while a stream of events
//!    flows through them.
//!
//! Three `osa-chaos` workers run `chaos.ledger` (ledger row in its own statement: duplicates
//! visible) and `chaos.tx` (ledger row through `Tx`: duplicates impossible). The test publishes
//! the stream in chunks while it kills a random worker every 0.3-1.2 s and starts a new one.
//! Afterwards: every event is in the ledger of both handlers, nothing is pending, claimed or dead,
//! `chaos.tx` has no duplicate, and every duplicate of `chaos.ledger` is explained by a kill (at
//! most one row per event comes from a process that was never killed) and bounded by
//! kills x claim loops x batch size.

use std::time::{Duration, Instant};

use osa_events::Outgoing;
use osa_events_suite::chaos_events;
use sqlx::PgPool;

use super::{Proc, Scene, count_lines, mib, replay_hint, report, scaled, seeded_rng, serial};

const HANDLERS: &str = "chaos.ledger,chaos.tx";
/// `chaos.ledger`'s `concurrency` and `batch` (src/bin/osa-chaos/handlers.rs): at most this many
/// handled-but-not-completed deliveries die with one process.
const LOOPS: i64 = 2;
const BATCH: i64 = 16;
const WORKERS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_no_event_and_transactional_effects_stay_exactly_once() {
    let _turn = serial().await;
    let scene = Scene::new("crash").await;
    let mut rng = seeded_rng();
    let seed = rng.seed();
    let replay = replay_hint(seed);
    let events = scaled(4000) as i64;
    let run_for = Duration::from_secs(scaled(10));
    let started = Instant::now();

    let mut workers: Vec<Proc> = (0..WORKERS)
        .map(|slot| scene.worker(&format!("worker{slot}"), HANDLERS, &[]))
        .collect();
    scene.subscribed(&["chaos.ledger", "chaos.tx"]).await;
    let publishing = tokio::spawn(publish_spread(scene.pool.clone(), events, run_for));

    let mut killed: Vec<i32> = Vec::new();
    let mut retired: Vec<Proc> = Vec::new();
    let chaos_started = Instant::now();
    let mut last_kill = Instant::now();
    while chaos_started.elapsed() < run_for {
        tokio::time::sleep(rng.duration(Duration::from_millis(300)..Duration::from_millis(1200)))
            .await;
        let slot = rng.below(WORKERS as u64) as usize;
        workers[slot].kill().await;
        last_kill = Instant::now();
        killed.push(workers[slot].pid() as i32);
        tokio::time::sleep(rng.duration(Duration::ZERO..Duration::from_millis(300))).await;
        let replacement = scene.worker(&format!("worker{slot}-{}", killed.len()), HANDLERS, &[]);
        retired.push(std::mem::replace(&mut workers[slot], replacement));
    }
    publishing.await.expect("the publishing task");
    let kills = killed.len() as i64;

    scene
        .drained(
            Duration::from_secs(120 + scaled(30)),
            &format!("seed {seed}"),
        )
        .await;
    let recovered_after_last_kill = last_kill.elapsed();
    let open = scene.open().await;
    for worker in &mut workers {
        let (status, _) = worker.stop(Duration::from_secs(20)).await;
        assert!(status.success(), "{} exited with {status}", worker.name);
    }

    let (ledger_rows, ledger_distinct) = scene.ledger("chaos.ledger").await;
    let (tx_rows, tx_distinct) = scene.ledger("chaos.tx").await;
    let lost_ledger = scene.missing("chaos.ledger", events).await;
    let lost_tx = scene.missing("chaos.tx", events).await;
    let duplicates = ledger_rows - ledger_distinct;
    let bound = kills * LOOPS * BATCH;
    // Rows per duplicated event that no killed process wrote: more than one is unexplained.
    let unexplained: i64 = sqlx::query_scalar(
        "select count(*) from (select seq from chaos_ledger where handler = 'chaos.ledger' \
         group by seq having count(*) filter (where pid <> all($1)) > 1) d",
    )
    .bind(&killed)
    .fetch_one(&scene.pool)
    .await
    .unwrap();
    let logs: String = workers
        .iter()
        .chain(&retired)
        .map(Proc::stderr_text)
        .collect();
    let lost_claims = count_lines(&logs, &[" WARN ", "completions refused"])
        + count_lines(&logs, &[" WARN ", "abandoned the batch"]);
    let peak_rss = workers
        .iter()
        .chain(&retired)
        .map(|worker| worker.peak_rss_kib)
        .max()
        .unwrap_or(0);

    report(
        "crash",
        &[
            ("events", events.to_string()),
            ("workers", WORKERS.to_string()),
            ("kills", kills.to_string()),
            ("restarts", retired.len().to_string()),
            ("duplicates", duplicates.to_string()),
            ("duplicate_bound", bound.to_string()),
            ("tx_duplicates", (tx_rows - tx_distinct).to_string()),
            ("lost", (lost_ledger.len() + lost_tx.len()).to_string()),
            ("stuck", open.unfinished().to_string()),
            ("dead", open.dead.to_string()),
            (
                "recovered_after_last_kill",
                format!("{recovered_after_last_kill:.1?}"),
            ),
            ("peak_rss", mib(peak_rss)),
            ("seconds", format!("{:.1}", started.elapsed().as_secs_f64())),
            ("seed", seed.to_string()),
        ],
    );
    assert!(kills > 0, "the test killed no worker {replay}");
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
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates, over kills x loops x batch = {bound} {replay}"
    );
    assert!(
        unexplained == 0 || lost_claims > 0,
        "{unexplained} events were handled twice by processes that were never killed, \
         and no worker logged a lost claim {replay}"
    );
}

/// Publishes `0..events` in chunks of 100 spread evenly over `over`.
async fn publish_spread(pool: PgPool, events: i64, over: Duration) {
    const CHUNK: i64 = 100;
    let chunks = (events + CHUNK - 1) / CHUNK;
    let pause = over / u32::try_from(chunks.max(1)).unwrap_or(u32::MAX);
    for chunk in 0..chunks {
        let batch: Vec<Outgoing> = (chunk * CHUNK..events.min((chunk + 1) * CHUNK))
            .map(|seq| chaos_events::item(seq, 64))
            .collect();
        osa_events::publish_batch(&pool, &batch)
            .await
            .expect("publish a chunk");
        tokio::time::sleep(pause).await;
    }
}
