//! NATS (RELIABILITY.md, section 18): the relay and the JetStream consumers under faults, as
//! processes (`src/bin/osa-nats-chaos`) against a throwaway `nats-server -js` of each test's own.
//!
//! - `relay_crash`: the relay process SIGKILLed at random moments and restarted while the log
//!   grows;
//! - `nats_restart`: the nats-server restarted, and stopped for a few seconds, under the running
//!   relay;
//! - `connection_cut`: the relay's connection cut while the server stays up (a proxy between
//!   them), so that a reconnect would succeed at once;
//! - `consumer_crash`: one of three consumer processes SIGKILLed while it holds unacknowledged
//!   messages, poison among the jobs.
//!
//! The relay tests check the stream against the log: every event in it exactly once (as many
//! messages as events, each `Nats-Msg-Id` once), in the log's commit order (the `Osa-Position`s in
//! stream order are the log's positions ordered by their transaction's commit number, the order
//! the relay reads in, see `osa-events-postgres/src/projection/read.rs`).
//!
//! Under `CI=true` they fail when no nats-server can be had; elsewhere they skip with a note (see
//! `crate::nats`).

mod connection_cut;
mod consumer_crash;
mod nats_restart;
mod relay_crash;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures_util::StreamExt;
use osa_events::PgStore;
use osa_events::nats::{Relay, Subjects, headers};
use osa_events_suite::chaos_events::{self, Item};
use osa_events_testing::Rng;
use sqlx::PgPool;

use crate::nats::Nats;

/// The stream the tests create (`Nats::events_stream`): `osa.>` and `osa-dead.>`.
const STREAM: &str = "EVENTS";

/// The relay `osa-nats-chaos relay` runs, as the test reads its status: the same name and types.
fn chaos_relay() -> Relay {
    Relay::builder("chaos")
        .events::<Item>()
        .build()
        .expect("the relay's configuration is valid")
}

/// The arguments of `osa-nats-chaos relay` against `nats`.
fn relay_args(nats: &Nats) -> Vec<String> {
    ["relay", "--nats-url", &nats.server.url()]
        .into_iter()
        .chain(["--batch", "500", "--window", "128"])
        .map(str::to_owned)
        .collect()
}

/// `args` as the `&str`s `Scene::nats_chaos` takes.
fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// What the publishing tasks did.
#[derive(Debug, Default)]
struct Published {
    transactions: AtomicU64,
}

/// Publishes `chaos.item` events `0..events` from three tasks at once, in transactions of 1–200
/// events, each held open 0–60 ms after its publish so that transactions commit in another order
/// than they took their positions, spread over about `over`. Returns how many transactions
/// committed.
async fn publish_items(pool: PgPool, events: i64, over: Duration, seed: u64) -> u64 {
    const TASKS: u64 = 3;
    const MEAN_SIZE: i64 = 100;
    let transactions = (events / MEAN_SIZE).max(1);
    let mean_pause = over.mul_f64(TASKS as f64 / transactions as f64);
    let next = Arc::new(AtomicI64::new(0));
    let published = Arc::new(Published::default());
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (pool, next, published) = (pool.clone(), next.clone(), published.clone());
            let mut rng = Rng::fork(seed, task);
            tokio::spawn(async move {
                loop {
                    let size = 1 + rng.below(2 * MEAN_SIZE as u64) as i64;
                    let first = next.fetch_add(size, Ordering::SeqCst);
                    if first >= events {
                        return;
                    }
                    let batch: Vec<_> = (first..events.min(first + size))
                        .map(|seq| chaos_events::item(seq, 32))
                        .collect();
                    let mut tx = pool.begin().await.expect("begin");
                    osa_events::publish_batch(&mut *tx, &batch)
                        .await
                        .expect("publish a transaction's events");
                    tokio::time::sleep(rng.duration(Duration::ZERO..Duration::from_millis(60)))
                        .await;
                    tx.commit().await.expect("commit");
                    published.transactions.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(rng.duration(Duration::ZERO..mean_pause * 2)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a publishing task");
    }
    published.transactions.load(Ordering::Relaxed)
}

/// The messages of the stream whose subjects match `filter`, in stream order, read with an
/// ephemeral consumer that acknowledges nothing.
async fn stream_messages(nats: &Nats, filter: &str) -> Vec<Message> {
    let stream = nats.context.get_stream(STREAM).await.expect("the stream");
    let mut consumer = stream
        .create_consumer(pull::Config {
            filter_subject: filter.to_owned(),
            ack_policy: AckPolicy::None,
            deliver_policy: DeliverPolicy::All,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .expect("a consumer to read the stream");
    let mut messages = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(1_000)
            .messages()
            .await
            .expect("fetch from the stream");
        let before = messages.len();
        while let Some(message) = batch.next().await {
            messages.push(message.expect("a message of the stream"));
        }
        if messages.len() == before {
            let info = consumer.info().await.expect("the reading consumer's info");
            if info.num_pending == 0 {
                break;
            }
        }
    }
    messages.sort_by_key(|message| message.info().map_or(0, |info| info.stream_sequence));
    messages
}

/// A header of `message` as text.
fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .headers
        .as_ref()?
        .get(name)
        .map(|value| value.as_str())
}

/// How many messages the stream holds; `None` while NATS does not answer (the test's own client
/// reconnects by itself after a restart).
async fn stream_count(nats: &Nats) -> Option<u64> {
    let mut stream = nats.context.get_stream(STREAM).await.ok()?;
    Some(stream.info().await.ok()?.state.messages)
}

/// Waits until the relay has no lag and the stream holds `events` messages, or more (the check
/// then finds the copies), or fewer but no more come for 5 s with no lag (the check then finds
/// the lost ones).
async fn caught_up(scene: &super::Scene, nats: &Nats, events: i64, context: &str) {
    let relay = chaos_relay();
    let store = PgStore::from_pool(scene.pool.clone());
    let limit = Duration::from_secs(60 + super::scaled(30));
    let deadline = Instant::now() + limit;
    let mut last = (0, Instant::now());
    loop {
        let lag = relay
            .status(&store)
            .await
            .map_or(i64::MAX, |status| status.lag);
        let stored = stream_count(nats).await.unwrap_or(0);
        if lag == 0 && stored >= events as u64 {
            return;
        }
        if stored != last.0 {
            last = (stored, Instant::now());
        } else if lag == 0 && last.1.elapsed() > Duration::from_secs(5) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for the relay to catch up: lag {lag}, {stored} of \
             {events} events in the stream ({context})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log's positions of `chaos.item` events in the order the relay reads them: by the commit
/// number of their transaction, then by position.
const COMMIT_ORDER_SQL: &str = "select e.position from osa_events.events e \
     join osa_events.commits c on c.id = e.commit_id \
     where e.event_type = 'chaos.item' order by c.seq, e.position";

/// Events at or before the relay's checkpoint: what JetStream has acknowledged for sure.
const CHECKPOINTED_SQL: &str = "select count(*) from osa_events.events e \
     join osa_events.commits c on c.id = e.commit_id \
     where e.event_type = 'chaos.item' and (c.seq, e.position) <= \
         (select k.commit_seq, k.position from osa_events.checkpoints k where k.name = 'relay:chaos')";

/// Messages in the stream past the relay's checkpoint while no relay runs: what the next relay
/// sends again, and JetStream drops as copies.
async fn past_checkpoint(scene: &super::Scene, nats: &Nats) -> u64 {
    let checkpointed: i64 = sqlx::query_scalar(CHECKPOINTED_SQL)
        .fetch_one(&scene.pool)
        .await
        .expect("count the checkpointed events");
    let stored = stream_count(nats).await.expect("the stream's count");
    stored.saturating_sub(u64::try_from(checkpointed).unwrap_or(0))
}

/// The stream compared with the log.
#[derive(Debug)]
struct StreamCheck {
    /// Events in the log.
    events: usize,
    /// Messages in the stream.
    stored: usize,
    /// Distinct `Nats-Msg-Id`s among them.
    distinct: usize,
    /// Places where the log's commit order goes back in position (a transaction that took its
    /// positions before the one committed ahead of it): how much commit order differs from
    /// position order here.
    position_steps_back: usize,
    /// The first index at which the stream's positions differ from the log's commit order, with
    /// a few positions each side from both; `None` when they are the same.
    first_difference: Option<String>,
}

impl StreamCheck {
    /// Reads the stream's relayed events and the log.
    async fn read(scene: &super::Scene, nats: &Nats) -> StreamCheck {
        let messages = stream_messages(nats, &Subjects::default().all()).await;
        let ids: HashSet<&str> = messages
            .iter()
            .filter_map(|message| header(message, headers::MSG_ID))
            .collect();
        let positions: Vec<i64> = messages
            .iter()
            .map(|message| {
                header(message, headers::POSITION)
                    .and_then(|position| position.parse().ok())
                    .expect("every relayed message has its position")
            })
            .collect();
        let expected: Vec<i64> = sqlx::query_scalar(COMMIT_ORDER_SQL)
            .fetch_all(&scene.pool)
            .await
            .expect("read the log in commit order");
        let first_difference = (positions != expected).then(|| {
            let at = positions
                .iter()
                .zip(&expected)
                .position(|(stored, logged)| stored != logged)
                .unwrap_or(positions.len().min(expected.len()));
            let around =
                |list: &[i64]| list[at.saturating_sub(3)..(at + 4).min(list.len())].to_vec();
            format!(
                "index {at}: the stream has {:?}, the log's commit order {:?}",
                around(&positions),
                around(&expected)
            )
        });
        StreamCheck {
            position_steps_back: expected.windows(2).filter(|pair| pair[1] < pair[0]).count(),
            events: expected.len(),
            stored: messages.len(),
            distinct: ids.len(),
            first_difference,
        }
    }

    /// Its figures for a test's report line.
    fn figures(&self) -> [(&'static str, String); 4] {
        [
            ("stored", self.stored.to_string()),
            ("distinct", self.distinct.to_string()),
            (
                "in_commit_order",
                self.first_difference.is_none().to_string(),
            ),
            ("position_steps_back", self.position_steps_back.to_string()),
        ]
    }

    /// Every event once, no copy stored, in the log's commit order.
    fn assert_exact(&self, replay: &str) {
        assert_eq!(
            self.distinct, self.events,
            "events in the log vs distinct events in the stream (lost events) {replay}"
        );
        assert_eq!(
            self.stored,
            self.events,
            "messages stored vs events: {} copies stored {replay}",
            self.stored as i64 - self.distinct as i64
        );
        assert!(
            self.first_difference.is_none(),
            "the stream is not in the log's commit order at {} {replay}",
            self.first_difference.as_deref().unwrap_or_default()
        );
    }
}
