//! 3. Poison and bad input, mixed into one stream.
//!
//! Two `osa-chaos` workers run `chaos.poison` (4 claim loops each, batch 8, 2 retries, 300 ms
//! timeout). The test first measures the rate of a clean stream, then publishes the same number of
//! healthy events shuffled with poison of every kind: a handler that always fails, one that fails
//! permanently, one that panics, one that hangs past its timeout, payloads with fields of the
//! wrong type, and JSON of the wrong shape. Each poison event must end
//! as its own dead letter with the reason and the expected number of attempts, every healthy
//! event must be handled exactly once, and the healthy part must flow at (nearly) the clean rate.
//! Oversized payloads are refused at publish, with the limit in the error, before anything is
//! written; the limit is configurable.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use osa_events::{Error, Event, Outgoing};
use osa_events_suite::chaos_events::{Mode, Poison};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Proc, Scene, eventually, mib, replay_hint, report, scaled, seeded_rng, serial};

/// The same event name with fields of the wrong type.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "chaos.poison")]
struct WrongTypes {
    seq: String,
    mode: bool,
}

/// The same event name, not even an object.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "chaos.poison")]
struct NotAnObject(Vec<i64>);

/// A healthy event with a large attachment.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "chaos.poison")]
struct WithBlob {
    seq: i64,
    mode: Mode,
    blob: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Fail,
    Permanent,
    Panic,
    Hang,
    WrongTypes,
    NotAnObject,
}

impl Kind {
    // A newer event version is not poison: it is deferred for newer code, never dead
    // (tests/it/versions.rs).
    const ALL: [Kind; 6] = [
        Kind::Fail,
        Kind::Permanent,
        Kind::Panic,
        Kind::Hang,
        Kind::WrongTypes,
        Kind::NotAnObject,
    ];

    fn outgoing(self, seq: i64) -> Outgoing {
        let poison = |mode| Outgoing::new(&Poison { seq, mode });
        match self {
            Kind::Fail => poison(Mode::Fail),
            Kind::Permanent => poison(Mode::Permanent),
            Kind::Panic => poison(Mode::Panic),
            Kind::Hang => poison(Mode::Hang),
            Kind::WrongTypes => Outgoing::new(&WrongTypes {
                seq: format!("seq {seq}"),
                mode: true,
            }),
            Kind::NotAnObject => Outgoing::new(&NotAnObject(vec![seq, 1, 2])),
        }
        .expect("a small event serializes")
    }

    /// The attempts its dead letter shows, and what its error says.
    fn expected(self) -> (i32, &'static str) {
        match self {
            Kind::Fail => (3, "the backend rejects it every time"),
            Kind::Permanent => (1, "malformed beyond repair"),
            Kind::Panic => (3, "the handler panicked: poison"),
            Kind::Hang => (3, "the handler timed out after 300ms"),
            Kind::WrongTypes | Kind::NotAnObject => (1, "the payload does not decode as"),
        }
    }
}

fn healthy(seqs: std::ops::Range<i64>) -> Vec<Outgoing> {
    seqs.map(|seq| {
        Outgoing::new(&Poison {
            seq,
            mode: Mode::Ok,
        })
        .expect("serializes")
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_one_by_one_while_the_stream_flows() {
    let _turn = serial().await;
    let scene = Scene::new("poison").await;
    let mut rng = seeded_rng();
    let seed = rng.seed();
    let healthy_count = scaled(2500) as i64;
    let per_kind = scaled(4) as i64;
    let started = Instant::now();

    let mut workers: Vec<Proc> = (0..2)
        .map(|slot| scene.worker(&format!("worker{slot}"), "chaos.poison", &[]))
        .collect();
    scene.subscribed(&["chaos.poison"]).await;

    oversized_payloads_are_refused_before_anything_is_written(&scene).await;

    // The clean rate.
    let clean_started = Instant::now();
    osa_events::publish_batch(&scene.pool, &healthy(0..healthy_count))
        .await
        .unwrap();
    handled(&scene, healthy_count).await;
    let clean = clean_started.elapsed();

    // The same amount of healthy events, shuffled with poison.
    let mut stream = healthy(healthy_count..2 * healthy_count);
    let mut kinds: HashMap<Uuid, Kind> = HashMap::new();
    for kind in Kind::ALL {
        for n in 0..per_kind {
            let outgoing = kind.outgoing(-1 - n);
            kinds.insert(outgoing.id(), kind);
            stream.push(outgoing);
        }
    }
    for i in (1..stream.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        stream.swap(i, j);
    }
    let mixed_started = Instant::now();
    osa_events::publish_batch(&scene.pool, &stream)
        .await
        .unwrap();
    handled(&scene, 2 * healthy_count).await;
    let mixed = mixed_started.elapsed();
    let poison_count = kinds.len() as i64;
    eventually(
        Duration::from_secs(60),
        "every poison event dead-lettered",
        || async {
            let open = scene.open().await;
            open.unfinished() == 0 && open.dead == poison_count
        },
    )
    .await;
    let all_dead = mixed_started.elapsed();
    for worker in &mut workers {
        assert!(worker.running(), "{} died of poison", worker.name);
        let (status, _) = worker.stop(Duration::from_secs(20)).await;
        assert!(status.success(), "{} exited with {status}", worker.name);
    }

    let dead: Vec<(Uuid, i32, String)> = sqlx::query_as(
        "select e.id, d.attempts, d.last_error from osa_events.deliveries d \
         join osa_events.events e on e.position = d.event_position where d.status = 'dead'",
    )
    .fetch_all(&scene.pool)
    .await
    .unwrap();
    let (rows, distinct) = scene.ledger("chaos.poison").await;
    let clean_rate = healthy_count as f64 / clean.as_secs_f64();
    let mixed_rate = healthy_count as f64 / mixed.as_secs_f64();
    let peak_rss = workers.iter().map(|w| w.peak_rss_kib).max().unwrap_or(0);
    report(
        "poison",
        &[
            ("healthy", (2 * healthy_count).to_string()),
            ("poison", poison_count.to_string()),
            ("kinds", Kind::ALL.len().to_string()),
            ("dead_letters", dead.len().to_string()),
            ("clean_rate", format!("{clean_rate:.0}/s")),
            ("mixed_rate", format!("{mixed_rate:.0}/s")),
            ("rate_ratio", format!("{:.2}", mixed_rate / clean_rate)),
            ("all_dead_after", format!("{all_dead:.1?}")),
            ("healthy_duplicates", (rows - distinct).to_string()),
            ("peak_rss", mib(peak_rss)),
            ("seconds", format!("{:.1}", started.elapsed().as_secs_f64())),
            ("seed", seed.to_string()),
        ],
    );

    assert_eq!(
        (rows, distinct),
        (2 * healthy_count, 2 * healthy_count),
        "every healthy event handled exactly once, poison in its batches or not"
    );
    assert_eq!(dead.len() as i64, poison_count, "only poison is dead");
    for (id, attempts, error) in &dead {
        let kind = kinds
            .get(id)
            .unwrap_or_else(|| panic!("a healthy event {id} is dead: {error}"));
        let (expected_attempts, reason) = kind.expected();
        assert_eq!(*attempts, expected_attempts, "{kind:?}: {error}");
        assert!(
            error.contains(reason),
            "{kind:?}: expected `{reason}` in: {error}"
        );
        assert!(
            error.contains(&id.to_string()),
            "{kind:?}: names the event: {error}"
        );
    }
    assert!(
        mixed_rate >= 0.5 * clean_rate,
        "poison slowed the healthy stream from {clean_rate:.0}/s to {mixed_rate:.0}/s {}",
        replay_hint(seed)
    );
}

/// Waits until `chaos.poison` has handled `count` healthy events.
async fn handled(scene: &Scene, count: i64) {
    eventually(
        Duration::from_secs(120),
        &format!("{count} healthy events handled"),
        || async { scene.ledger("chaos.poison").await.0 >= count },
    )
    .await;
}

async fn oversized_payloads_are_refused_before_anything_is_written(scene: &Scene) {
    let count = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from osa_events.events")
            .fetch_one(&scene.pool)
            .await
            .unwrap()
    };
    let before = count().await;
    let blob = |bytes: usize| WithBlob {
        seq: -1000,
        mode: Mode::Ok,
        blob: "b".repeat(bytes),
    };

    let error = osa_events::publish(&scene.pool, &blob(osa_events::DEFAULT_MAX_PAYLOAD_BYTES))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::PayloadTooLarge { limit, .. } if limit == osa_events::DEFAULT_MAX_PAYLOAD_BYTES),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("cannot publish `chaos.poison`")
            && message.contains("over the limit of 1048576 bytes")
            && message.contains("with_max_payload_bytes"),
        "a clear error: {message}"
    );

    // The limit is configurable, both ways.
    let error = Outgoing::with_max_payload_bytes(&blob(8 * 1024), 4096).unwrap_err();
    assert!(
        matches!(error, Error::PayloadTooLarge { limit: 4096, size, .. } if size > 8 * 1024),
        "{error:?}"
    );
    Outgoing::with_max_payload_bytes(&blob(2 * osa_events::DEFAULT_MAX_PAYLOAD_BYTES), 4 << 20)
        .expect("a raised limit admits a 2 MiB payload");

    assert_eq!(count().await, before, "nothing was written");
}
