//! Consumer processes on one durable consumer, SIGKILLed while they hold unacknowledged messages,
//! with poison among the jobs.
//!
//! Three `osa-nats-chaos consume` processes run `chaos.js` (2 claim loops, batch 16, ack wait 2
//! s) on jobs the test published to the stream. A killed process's messages (fetched, perhaps
//! handled, not acknowledged) come back after the ack wait and the others handle them. Afterwards
//! every healthy job is in the ledger, twice only when its first handling died with a killed
//! process before the ack; every poison job is on the dead-letter subject exactly once, with its
//! error; nothing is left pending or unacknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer;
use osa_events::nats::source::{consumer_name, dead};
use osa_events::nats::{Subjects, headers};
use osa_events_suite::chaos_events::{self, Job};

use super::super::{Proc, Scene, replay_hint, report, scaled, seeded_rng, serial, tail};
use super::{STREAM, header, stream_messages};
use crate::nats::Nats;

const HANDLER: &str = "chaos.js";
const CONSUMERS: usize = 3;
/// `chaos.js`'s `concurrency` and `batch` (src/bin/osa-nats-chaos/consume.rs): at most this many
/// handled-but-unacknowledged messages die with one process.
const LOOPS: i64 = 2;
const BATCH: i64 = 16;
/// Kills, spread over the run; each but the last is followed by a replacement, so the last
/// victim's messages go to the two that are left.
const KILLS: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_consumers_messages_are_handled_by_the_others_and_poison_is_dead_lettered_once() {
    let _turn = serial().await;
    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.events_stream().await;
    let scene = Scene::new("nats_consumer_crash").await;
    let mut rng = seeded_rng();
    let seed = rng.seed();
    let replay = replay_hint(seed);
    let jobs = scaled(4_000) as i64;
    let poison: BTreeSet<i64> = (0..jobs).filter(|_| rng.chance(0.01)).collect();
    let healthy = jobs - poison.len() as i64;
    let started = Instant::now();

    let url = nats.server.url();
    let args = ["consume", "--nats-url", &url, "--work-ms", "2"];
    let mut consumers: Vec<Proc> = (0..CONSUMERS)
        .map(|slot| scene.nats_chaos(&format!("consumer{slot}"), &args))
        .collect();
    // The durable consumer delivers what is published after it was made (`start_from` now).
    super::super::eventually(
        Duration::from_secs(30),
        "the consumers registered `chaos.js`",
        || async { consumer_info(&nats).await.is_some() },
    )
    .await;
    publish_jobs(&nats, jobs, &poison).await;
    let mut killed: Vec<i32> = Vec::new();
    let mut retired: Vec<Proc> = Vec::new();
    for kill in 0..KILLS {
        let at = healthy * (kill as i64 + 1) / (KILLS as i64 + 2);
        super::super::eventually(
            Duration::from_secs(60),
            &format!("{at} jobs handled before kill {kill}"),
            || async { scene.ledger(HANDLER).await.1 >= at },
        )
        .await;
        let slot = rng.index(consumers.len());
        consumers[slot].kill().await;
        killed.push(consumers[slot].pid() as i32);
        let victim = consumers.remove(slot);
        retired.push(victim);
        if kill + 1 < KILLS {
            consumers.push(scene.nats_chaos(&format!("consumer{}", CONSUMERS + kill), &args));
        }
    }
    let last_kill = Instant::now();
    let dead_subject = format!("osa-dead.{}", consumer_name(HANDLER));
    super::super::eventually(
        Duration::from_secs(60 + scaled(30)),
        &format!("every healthy job handled and every poison job dead-lettered (seed {seed})"),
        || async {
            // Cheapest first: reading the dead letters makes a consumer.
            scene.ledger(HANDLER).await.1 == healthy
                && consumer_settled(&nats).await
                && stream_messages(&nats, &dead_subject).await.len() >= poison.len()
        },
    )
    .await;
    let recovered_after_last_kill = last_kill.elapsed();
    for consumer in &mut consumers {
        let (status, _) = consumer.stop(Duration::from_secs(20)).await;
        assert!(
            status.success(),
            "{} exited with {status}: {}",
            consumer.name,
            tail(&consumer.stderr_text(), 20)
        );
    }

    let (rows, distinct) = scene.ledger(HANDLER).await;
    let missing = missing_healthy(&scene, jobs, &poison).await;
    let poison_handled: i64 = sqlx::query_scalar(
        "select count(*) from chaos_ledger where handler = $1 and seq = any($2)",
    )
    .bind(HANDLER)
    .bind(poison.iter().copied().collect::<Vec<_>>())
    .fetch_one(&scene.pool)
    .await
    .unwrap();
    // Jobs with more than one row from processes that were never killed: unexplained.
    let unexplained: i64 = sqlx::query_scalar(
        "select count(*) from (select seq from chaos_ledger where handler = $1 \
         group by seq having count(*) filter (where pid <> all($2)) > 1) d",
    )
    .bind(HANDLER)
    .bind(&killed)
    .fetch_one(&scene.pool)
    .await
    .unwrap();
    let by_killed: i64 = sqlx::query_scalar(
        "select count(*) from chaos_ledger where handler = $1 and pid = any($2)",
    )
    .bind(HANDLER)
    .bind(&killed)
    .fetch_one(&scene.pool)
    .await
    .unwrap();
    let redelivered: i64 =
        sqlx::query_scalar("select count(*) from chaos_ledger where handler = $1 and attempt > 1")
            .bind(HANDLER)
            .fetch_one(&scene.pool)
            .await
            .unwrap();
    let dead_letters = stream_messages(&nats, &dead_subject).await;
    let mut dead_by_seq: BTreeMap<i64, usize> = BTreeMap::new();
    for letter in &dead_letters {
        let job: Job =
            serde_json::from_slice(&letter.payload).expect("a dead letter's body is the job");
        *dead_by_seq.entry(job.seq).or_default() += 1;
        let error = header(letter, dead::ERROR).unwrap_or_default();
        assert!(
            error.contains(&format!("job {}: poison, refused for good", job.seq)),
            "dead letter of job {}: `Osa-Error` is {error:?} {replay}",
            job.seq
        );
        assert_eq!(header(letter, dead::HANDLER), Some(HANDLER), "{replay}");
    }
    let duplicates = rows - distinct;
    let bound = killed.len() as i64 * LOOPS * BATCH;

    report(
        "nats_consumer_crash",
        &[
            ("jobs", jobs.to_string()),
            ("poison", poison.len().to_string()),
            ("consumers", CONSUMERS.to_string()),
            ("kills", killed.len().to_string()),
            ("rows_by_killed", by_killed.to_string()),
            ("redelivered_rows", redelivered.to_string()),
            ("duplicates", duplicates.to_string()),
            ("duplicate_bound", bound.to_string()),
            ("lost", missing.len().to_string()),
            ("dead_letters", dead_letters.len().to_string()),
            (
                "recovered_after_last_kill",
                format!("{recovered_after_last_kill:.1?}"),
            ),
            ("seconds", format!("{:.1}", started.elapsed().as_secs_f64())),
            ("seed", seed.to_string()),
        ],
    );
    assert!(
        missing.is_empty(),
        "healthy jobs never handled: {missing:?} {replay}"
    );
    assert_eq!(
        poison_handled, 0,
        "poison jobs were recorded as handled {replay}"
    );
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates, over kills x loops x batch = {bound} {replay}"
    );
    assert_eq!(
        unexplained, 0,
        "{unexplained} jobs were handled twice by consumers that were never killed {replay}"
    );
    assert_eq!(
        dead_by_seq.keys().copied().collect::<BTreeSet<_>>(),
        poison,
        "the dead letters are the poison jobs {replay}"
    );
    assert!(
        dead_by_seq.values().all(|copies| *copies == 1),
        "a poison job was dead-lettered more than once: {dead_by_seq:?} {replay}"
    );
}

/// Publishes jobs `0..jobs` to the stream as the relay would (`poison` ones refused by the
/// handler), awaiting the PubAcks 256 at a time.
async fn publish_jobs(nats: &Nats, jobs: i64, poison: &BTreeSet<i64>) {
    let subject = Subjects::default().subject("chaos.job", None);
    let mut acks = Vec::new();
    for seq in 0..jobs {
        let id = chaos_events::event_id(seq).to_string();
        let mut message_headers = async_nats::HeaderMap::new();
        message_headers.insert(headers::MSG_ID, id.as_str());
        message_headers.insert(headers::EVENT_ID, id.as_str());
        message_headers.insert(headers::EVENT_TYPE, "chaos.job");
        let job = Job {
            seq,
            poison: poison.contains(&seq),
        };
        let body = serde_json::to_vec(&job).expect("a job serializes");
        acks.push(
            nats.context
                .publish_with_headers(subject.clone(), message_headers, body.into())
                .await
                .expect("publish a job"),
        );
        if acks.len() == 256 || seq + 1 == jobs {
            for ack in acks.drain(..) {
                ack.await.expect("JetStream stores the job");
            }
        }
    }
}

/// The info of `chaos.js`'s durable consumer, once it exists.
async fn consumer_info(nats: &Nats) -> Option<consumer::Info> {
    let stream = nats.context.get_stream(STREAM).await.ok()?;
    let mut consumer = stream
        .get_consumer::<consumer::pull::Config>(&consumer_name(HANDLER))
        .await
        .ok()?;
    consumer.info().await.ok().cloned()
}

/// Whether `chaos.js`'s consumer has nothing pending and nothing awaiting an acknowledgement.
async fn consumer_settled(nats: &Nats) -> bool {
    consumer_info(nats)
        .await
        .is_some_and(|info| info.num_pending == 0 && info.num_ack_pending == 0)
}

/// The healthy jobs of `0..jobs` that the ledger does not have (the first 20).
async fn missing_healthy(scene: &Scene, jobs: i64, poison: &BTreeSet<i64>) -> Vec<i64> {
    sqlx::query_scalar(
        "select s from generate_series(0, $2 - 1) s \
         where s <> all($3) \
         and not exists (select 1 from chaos_ledger l where l.handler = $1 and l.seq = s) \
         order by s limit 20",
    )
    .bind(HANDLER)
    .bind(jobs)
    .bind(poison.iter().copied().collect::<Vec<_>>())
    .fetch_all(&scene.pool)
    .await
    .expect("read the ledger")
}
