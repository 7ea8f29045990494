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

use std::time::{Duration, Instant};

use osa_events::Outgoing;
use osa_events_suite::chaos_events::{KEYED_SEQ_STRIDE, Keyed};
use osa_events_testing::Rng;
use sqlx::PgPool;

use super::{Proc, Scene, replay_hint, report, scaled, seeded_rng, serial};

const HANDLERS: &str = "chaos.ordered";
const WORKERS: usize = 3;
const KEYS: i64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_and_failures_never_break_the_order_of_a_key() {
    let _turn = serial().await;
    let scene = Scene::new("ordered").await;
    let mut rng = seeded_rng();
    let seed = rng.seed();
    let replay = replay_hint(seed);
    let events = scaled(2000) as i64;
    let run_for = Duration::from_secs(scaled(10));
    let started = Instant::now();

    let mut workers: Vec<Proc> = (0..WORKERS)
        .map(|slot| scene.worker(&format!("worker{slot}"), HANDLERS, &[]))
        .collect();
    scene.subscribed(&["chaos.ordered"]).await;
    let stream = keyed_stream(&mut rng, events);
    let publishing = tokio::spawn(publish_spread(scene.pool.clone(), stream, run_for));

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
        let replacement = scene.worker(&format!("worker{slot}-{kills}"), HANDLERS, &[]);
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
    for worker in &mut workers {
        let (status, _) = worker.stop(Duration::from_secs(20)).await;
        assert!(status.success(), "{} exited with {status}", worker.name);
    }

    let (effects, distinct) = scene.ledger("chaos.ordered").await;
    let (calls, _) = scene.ledger("chaos.ordered.start").await;
    let out_of_order = effects_out_of_order(&scene.pool).await;
    let calls_out_of_order = calls_out_of_order(&scene.pool).await;
    let failed_attempts: i64 = sqlx::query_scalar(
        "select count(*) - count(distinct seq) from chaos_ledger where handler = 'chaos.ordered.start'",
    )
    .fetch_one(&scene.pool)
    .await
    .unwrap();
    report(
        "ordered",
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
            ("calls_out_of_order", calls_out_of_order.to_string()),
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
        (effects, distinct),
        (events, events),
        "every event's effect exactly once {replay}"
    );
    assert!(
        out_of_order.is_empty(),
        "keys whose effects are not 0, 1, 2, ... in the order written: {out_of_order:?} {replay}"
    );
    assert_eq!(
        calls_out_of_order, 0,
        "calls of an event began after a call of a later event of its key {replay}"
    );
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

/// Publishes `stream` in chunks of 50 spread evenly over `over`, in order.
async fn publish_spread(pool: PgPool, stream: Vec<Keyed>, over: Duration) {
    const CHUNK: usize = 50;
    let chunks = stream.len().div_ceil(CHUNK);
    let pause = over / u32::try_from(chunks.max(1)).unwrap_or(u32::MAX);
    for chunk in stream.chunks(CHUNK) {
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

/// The keys whose `chaos.ordered` effects, in the order they were written, are not exactly
/// `0, 1, 2, ...`.
async fn effects_out_of_order(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar(
        "select key from ( \
             select seq / $1 as key, seq % $1 as n, \
                    row_number() over (partition by seq / $1 order by handled_at) - 1 as place \
             from chaos_ledger where handler = 'chaos.ordered') as effects \
         where n <> place group by key order by key",
    )
    .bind(KEYED_SEQ_STRIDE)
    .fetch_all(pool)
    .await
    .expect("read the ledger")
}

/// How many `chaos.ordered.start` rows, in the order written, came after a row of a later event
/// of their key.
async fn calls_out_of_order(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select count(*) from ( \
             select seq % $1 as n, \
                    max(seq % $1) over (partition by seq / $1 order by handled_at \
                                        rows between unbounded preceding and 1 preceding) as before \
             from chaos_ledger where handler = 'chaos.ordered.start') as calls \
         where n < before",
    )
    .bind(KEYED_SEQ_STRIDE)
    .fetch_one(pool)
    .await
    .expect("read the ledger")
}
