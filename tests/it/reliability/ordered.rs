//! Per-key order under chaos: worker processes SIGKILLed at random moments and restarted, and
//! handler failures, while events of many ordering keys flow through an ordered handler.
//!
//! Three `osa-chaos` workers run `chaos.ordered` (`ordered = "block"`, eight claim loops each, so
//! 24 loops race for the keys). The test publishes the events of `KEYS` keys in random order,
//! in chunks, while it kills a random worker every 0.3-1.2 s and starts a new one; about one
//! attempt in eight fails and is retried. The handler writes a start row as it begins (every
//! call, those of killed workers too) and its effect through its `Tx` (exactly once).
//!
//! Afterwards, for every key: the effects are exactly `0, 1, 2, ...` in the order they were
//! written (nothing lost, nothing twice, nothing out of order), and no call of event `n` started
//! after a call of a later event of its key (a killed worker's call may repeat, never come back
//! out of order). Nothing is left pending, waiting, claimed or dead.
//!
//! The second test runs the same chaos through `chaos.ordered.turns` (batches of 2, no `Tx`),
//! publishing in eight bursts so the keys have backlogs and the batches are full: the runtime then
//! carries each batch's completion with its next claim, and PostgreSQL hands keys on to the loops
//! that completed their heads (the `key_turns` migration); it checks that this happened while
//! workers died. Its effects are written at least once (a killed worker's may repeat), so it
//! checks that every event's effect is there and that none was written after an effect of a
//! later event of its key.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use osa_events::Outgoing;
use osa_events_suite::chaos_events::{KEYED_SEQ_STRIDE, Keyed};
use osa_events_testing::Rng;
use sqlx::PgPool;

use super::{Proc, Scene, replay_hint, report, scaled, seeded_rng, serial};

const WORKERS: usize = 3;
const KEYS: i64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_and_failures_never_break_the_order_of_a_key() {
    let most_turns = run("ordered", "chaos.ordered", 50, Effects::ExactlyOnce).await;
    eprintln!("chaos.ordered: at most {most_turns} turns in a row seen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_never_break_the_order_of_a_key_handed_on_in_turns() {
    let most_turns = run(
        "ordered_turns",
        "chaos.ordered.turns",
        250,
        Effects::AtLeastOnce,
    )
    .await;
    assert!(
        most_turns > 0,
        "no key was handed on to the loop that completed its head: the test did not exercise \
         key turns"
    );
}

/// How the handler writes its effects: through its `Tx` (`chaos.ordered`), or in a statement of
/// its own before the delivery completes (`chaos.ordered.turns`: a killed worker's effect may be
/// written again by the next attempt, right after the first).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Effects {
    ExactlyOnce,
    AtLeastOnce,
}

/// The chaos through `handler` (the scene `name`), published in chunks of `chunk` spread over
/// the run; returns the most turns in a row any key was seen at (sampled every 20 ms).
async fn run(name: &'static str, handler: &'static str, chunk: usize, written: Effects) -> i32 {
    let _turn = serial().await;
    let scene = Scene::new(name).await;
    let mut rng = seeded_rng();
    let seed = rng.seed();
    let replay = replay_hint(seed);
    let events = scaled(2000) as i64;
    let run_for = Duration::from_secs(scaled(10));
    let started = Instant::now();

    let mut workers: Vec<Proc> = (0..WORKERS)
        .map(|slot| scene.worker(&format!("worker{slot}"), handler, &[]))
        .collect();
    scene.subscribed(&[handler]).await;
    let stream = keyed_stream(&mut rng, events);
    let publishing = tokio::spawn(publish_spread(scene.pool.clone(), stream, chunk, run_for));
    let most_turns = Arc::new(AtomicI32::new(0));
    let sampling = tokio::spawn(sample_turns(scene.pool.clone(), Arc::clone(&most_turns)));

    let mut kills = 0;
    let mut retired: Vec<Proc> = Vec::new();
    let chaos_started = Instant::now();
    while chaos_started.elapsed() < run_for {
        tokio::time::sleep(rng.duration(Duration::from_millis(300)..Duration::from_millis(1200)))
            .await;
        let slot = rng.below(WORKERS as u64) as usize;
        workers[slot].kill().await;
        kills += 1;
        tokio::time::sleep(rng.duration(Duration::ZERO..Duration::from_millis(300))).await;
        let replacement = scene.worker(&format!("worker{slot}-{kills}"), handler, &[]);
        retired.push(std::mem::replace(&mut workers[slot], replacement));
    }
    publishing.await.expect("the publishing task");
    scene
        .drained(
            Duration::from_secs(120 + scaled(30)),
            &format!("seed {seed}"),
        )
        .await;
    let open = scene.open().await;
    sampling.abort();
    for worker in &mut workers {
        let (status, _) = worker.stop(Duration::from_secs(20)).await;
        assert!(status.success(), "{} exited with {status}", worker.name);
    }

    let starts = format!("{handler}.start");
    let (effects, distinct) = scene.ledger(handler).await;
    let (calls, _) = scene.ledger(&starts).await;
    let out_of_order = effects_out_of_order(&scene.pool, handler).await;
    let effects_behind = rows_out_of_order(&scene.pool, handler).await;
    let calls_out_of_order = rows_out_of_order(&scene.pool, &starts).await;
    let failed_attempts: i64 = sqlx::query_scalar(
        "select count(*) - count(distinct seq) from chaos_ledger where handler = $1",
    )
    .bind(&starts)
    .fetch_one(&scene.pool)
    .await
    .unwrap();
    let most_turns = most_turns.load(Ordering::Relaxed);
    report(
        name,
        &[
            ("events", events.to_string()),
            ("keys", KEYS.to_string()),
            ("workers", WORKERS.to_string()),
            ("claim_loops", (WORKERS * 8).to_string()),
            ("kills", kills.to_string()),
            ("calls", calls.to_string()),
            ("repeated_calls", failed_attempts.to_string()),
            ("effects", effects.to_string()),
            ("keys_out_of_order", out_of_order.len().to_string()),
            ("effects_behind_a_later_one", effects_behind.to_string()),
            ("calls_out_of_order", calls_out_of_order.to_string()),
            ("most_turns_in_a_row", most_turns.to_string()),
            ("stuck", open.unfinished().to_string()),
            ("dead", open.dead.to_string()),
            ("seconds", format!("{:.1}", started.elapsed().as_secs_f64())),
            ("seed", seed.to_string()),
        ],
    );
    assert!(kills > 0, "the test killed no worker {replay}");
    assert!(
        failed_attempts > 0,
        "no call was repeated: the failures did not happen {replay}"
    );
    assert_eq!(open, super::Open::NONE, "{replay}");
    assert_eq!(
        effects_behind, 0,
        "effects written after an effect of a later event of their key {replay}"
    );
    if written == Effects::ExactlyOnce {
        assert_eq!(
            (effects, distinct),
            (events, events),
            "every event's effect exactly once {replay}"
        );
        assert!(
            out_of_order.is_empty(),
            "keys whose effects are not 0, 1, 2, ... in the order written: {out_of_order:?} {replay}"
        );
    } else {
        assert_eq!(
            distinct, events,
            "every event's effect at least once {replay}"
        );
    }
    assert_eq!(
        calls_out_of_order, 0,
        "calls of an event began after a call of a later event of its key {replay}"
    );
    most_turns
}

/// Keeps in `most` the highest `turn` of any key (how many times in a row it was handed on to
/// the loop that completed its head), reading it every 20 ms until aborted.
async fn sample_turns(pool: PgPool, most: Arc<AtomicI32>) {
    loop {
        let turn: Option<i32> =
            sqlx::query_scalar("select max(turn) from osa_events.ordering_keys")
                .fetch_one(&pool)
                .await
                .expect("read the keys' turns");
        most.fetch_max(turn.unwrap_or(0), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `events` events over [`KEYS`] keys, each key's numbered from 0 in stream order: a random key
/// per event.
fn keyed_stream(rng: &mut Rng, events: i64) -> Vec<Keyed> {
    let mut next = vec![0_i64; KEYS as usize];
    (0..events)
        .map(|_| {
            let key = rng.below(KEYS as u64) as i64;
            let n = next[key as usize];
            next[key as usize] += 1;
            Keyed { key, n }
        })
        .collect()
}

/// Publishes `stream` in chunks of `chunk` spread evenly over `over`, in order.
async fn publish_spread(pool: PgPool, stream: Vec<Keyed>, chunk: usize, over: Duration) {
    let chunks = stream.len().div_ceil(chunk);
    let pause = over / u32::try_from(chunks.max(1)).unwrap_or(u32::MAX);
    for chunk in stream.chunks(chunk) {
        let batch: Vec<Outgoing> = chunk
            .iter()
            .map(|keyed| Outgoing::new(keyed).expect("a keyed event serializes"))
            .collect();
        osa_events::publish_batch(&pool, &batch)
            .await
            .expect("publish a chunk");
        tokio::time::sleep(pause).await;
    }
}

/// The keys whose effects (`handler`'s rows), in the order they were written, are not exactly
/// `0, 1, 2, ...`.
async fn effects_out_of_order(pool: &PgPool, handler: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "select key from ( \
             select seq / $1 as key, seq % $1 as n, \
                    row_number() over (partition by seq / $1 order by handled_at) - 1 as place \
             from chaos_ledger where handler = $2) as effects \
         where n <> place group by key order by key",
    )
    .bind(KEYED_SEQ_STRIDE)
    .bind(handler)
    .fetch_all(pool)
    .await
    .expect("read the ledger")
}

/// How many of the ledger's `rows` (calls or effects), in the order written, came after a row of
/// a later event of their key.
async fn rows_out_of_order(pool: &PgPool, rows: &str) -> i64 {
    sqlx::query_scalar(
        "select count(*) from ( \
             select seq % $1 as n, \
                    max(seq % $1) over (partition by seq / $1 order by handled_at \
                                        rows between unbounded preceding and 1 preceding) as before \
             from chaos_ledger where handler = $2) as calls \
         where n < before",
    )
    .bind(KEYED_SEQ_STRIDE)
    .bind(rows)
    .fetch_one(pool)
    .await
    .expect("read the ledger")
}
