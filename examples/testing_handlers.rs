//! Unit-testing handlers without a database: the indexing pipeline under `osa_events_testing::Harness`,
//! on fake time.
//!
//! ```text
//! cargo run --example testing_handlers     # runs both scenarios and prints what happened
//! cargo test --example testing_handlers    # the same scenarios, as tests
//! ```
//!
//! Every `RecordPublished` goes to two handlers: the vector index and the keyword index. The tests
//! give them test doubles through `Resources` (`State<T>`), run them on an in-memory store and a
//! `FakeClock`, and check what was handled, retried and dead-lettered. Minutes of backoff pass in
//! microseconds: the harness moves the fake clock straight to each retry. Expected output (the
//! real time varies; the fake time is the same on every run, because the retry jitter is seeded):
//!
//! ```text
//! outage: the keyword backend is down for 2 minutes
//!   +0.000s  index.keyword  position 1  attempt 1  retried in 24.941s: `record.published` event 68e6… (position 1), attempt 1 of 5: keyword backend unavailable
//!   +24.941s  index.keyword  position 1  attempt 2  retried in 54.827s: `record.published` event 68e6… (position 1), attempt 2 of 5: keyword backend unavailable
//!   +79.768s  index.keyword  position 1  attempt 3  retried in 118.877s: `record.published` event 68e6… (position 1), attempt 3 of 5: keyword backend unavailable
//!   +198.646s  index.keyword  position 1  attempt 4  handled
//!   handled after 3m18s of fake time, in 586.3µs of real time
//! untokenizable titles: retried, then dead-lettered
//!   +0.000s  index.keyword  position 1  attempt 1  handled
//!   +0.000s  index.keyword  position 2  attempt 1  retried in 24.941s: `record.published` event 4a0e… (position 2), attempt 1 of 5: cannot tokenize "Ærøskøbing harbour"
//!   ...
//!   +331.574s  index.keyword  position 2  attempt 5  dead-lettered: `record.published` event 4a0e… (position 2), attempt 5 of 5: cannot tokenize "Ærøskøbing harbour"
//!   3 dead letters after 5m31s of fake time, in 576.2µs of real time
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

use osa_events::prelude::*;
use osa_events_testing::{FakeClock, Harness};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
    title: String,
}

/// The vector index's client. In production it talks to a vector database; in tests it records.
#[derive(Default)]
struct VectorIndex {
    indexed: Mutex<Vec<String>>,
}

/// The keyword index's client: a test double that is down until `down_until` (fake time) and
/// cannot tokenize non-ASCII titles.
struct KeywordIndex {
    clock: FakeClock,
    down_until: tokio::time::Instant,
    indexed: Mutex<Vec<String>>,
}

impl KeywordIndex {
    fn index(&self, record: &RecordPublished) -> Result<(), HandlerError> {
        if self.clock.now() < self.down_until {
            return Err(HandlerError::retry("keyword backend unavailable"));
        }
        if record.title.is_empty() {
            return Err(HandlerError::permanent(format!(
                "record {} has no title",
                record.srn
            )));
        }
        if !record.title.is_ascii() {
            return Err(HandlerError::retry(format!(
                "cannot tokenize {:?}",
                record.title
            )));
        }
        self.indexed.lock().unwrap().push(record.srn.clone());
        Ok(())
    }
}

#[event_handler(name = "index.vector", batch = 64)]
async fn index_vectors(
    records: Batch<RecordPublished>,
    index: State<VectorIndex>,
) -> Result<(), HandlerError> {
    let mut indexed = index.indexed.lock().unwrap();
    indexed.extend(records.iter().map(|record| record.srn.clone()));
    Ok(())
}

#[event_handler(
    name = "index.keyword",
    retries = 4,
    backoff = "30s",
    max_backoff = "5m"
)]
async fn index_keywords(
    record: RecordPublished,
    index: State<KeywordIndex>,
) -> Result<(), HandlerError> {
    index.index(&record)
}

fn record(srn: &str, title: &str) -> RecordPublished {
    RecordPublished {
        srn: srn.into(),
        title: title.into(),
    }
}

/// A harness running both indexers, with the keyword backend down for `outage`.
async fn pipeline(outage: Duration) -> Harness {
    let clock = FakeClock::new();
    let keywords = KeywordIndex {
        down_until: clock.now() + outage,
        clock: clock.clone(),
        indexed: Mutex::default(),
    };
    Harness::builder()
        .clock(clock)
        .resources(Resources::new().with(VectorIndex::default()).with(keywords))
        .only(["index.vector", "index.keyword"])
        .build()
        .await
        .expect("both handlers have their resources")
}

/// The keyword backend is down for two minutes: its handler retries with backoff (30 s, 60 s,
/// ...) until the backend is back. The vector index is never held back.
async fn outage_is_retried_until_the_backend_recovers() -> Harness {
    let mut harness = pipeline(Duration::from_secs(120)).await;
    harness.publish(&record("srn:1", "Whale songs"));
    harness.drain().await;

    harness.assert_handled("index.vector", 1);
    harness.assert_handled("index.keyword", 1);
    harness.assert_dead_lettered("index.keyword", 0);
    let retries = harness.retries("index.keyword");
    assert!(retries.len() >= 2, "down for 2 minutes: {retries:?}");
    assert!(
        retries
            .iter()
            .all(|a| a.error().unwrap().contains("unavailable"))
    );
    assert!(harness.elapsed() >= Duration::from_secs(120));
    harness.assert_idle();
    harness
}

/// Titles the keyword backend cannot tokenize fail on every attempt: dead-lettered after the
/// handler's 4 retries, with the last error kept. A record without a title is dead at once.
async fn untokenizable_titles_are_dead_lettered_after_their_retries() -> Harness {
    let mut harness = pipeline(Duration::ZERO).await;
    for (srn, title) in [
        ("srn:1", "Whale songs"),
        ("srn:2", "Ærøskøbing harbour"),
        ("srn:3", "Tide tables"),
        ("srn:4", "Ørsted's notebooks"),
        ("srn:5", ""),
    ] {
        harness.publish(&record(srn, title));
    }
    harness.drain().await;

    harness.assert_handled("index.vector", 5);
    harness.assert_handled("index.keyword", 2);
    harness.assert_retried("index.keyword", 8); // two titles, four retries each
    harness.assert_dead_lettered("index.keyword", 3);
    let mut dead = harness.dead_letters("index.keyword");
    dead.sort_by_key(|attempt| attempt.position);
    let last_errors: Vec<(u32, &str)> = dead
        .iter()
        .map(|attempt| (attempt.attempt, attempt.error().unwrap()))
        .collect();
    assert!(
        last_errors[0]
            .1
            .ends_with("attempt 5 of 5: cannot tokenize \"Ærøskøbing harbour\"")
    );
    assert!(
        last_errors[1]
            .1
            .ends_with("attempt 5 of 5: cannot tokenize \"Ørsted's notebooks\"")
    );
    assert_eq!(last_errors[2].0, 1, "a permanent error is not retried");
    assert!(last_errors[2].1.ends_with("record srn:5 has no title"));
    let handled: Vec<String> = harness
        .handled_events::<RecordPublished>("index.keyword")
        .into_iter()
        .map(|record| record.srn)
        .collect();
    assert_eq!(handled, ["srn:1", "srn:3"]);
    harness.assert_idle();
    harness
}

#[tokio::test]
async fn outage() {
    outage_is_retried_until_the_backend_recovers().await;
}

#[tokio::test]
async fn untokenizable_titles() {
    untokenizable_titles_are_dead_lettered_after_their_retries().await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let started = Instant::now();
    let harness = outage_is_retried_until_the_backend_recovers().await;
    let real = started.elapsed();
    println!("outage: the keyword backend is down for 2 minutes");
    print_journal(&harness, "index.keyword");
    println!(
        "  handled after {} of fake time, in {real:.1?} of real time",
        humanize(harness.elapsed())
    );

    let started = Instant::now();
    let harness = untokenizable_titles_are_dead_lettered_after_their_retries().await;
    let real = started.elapsed();
    println!("untokenizable titles: retried, then dead-lettered");
    print_journal(&harness, "index.keyword");
    println!(
        "  {} dead letters after {} of fake time, in {real:.1?} of real time",
        harness.dead_letters("index.keyword").len(),
        humanize(harness.elapsed())
    );
}

fn print_journal(harness: &Harness, handler: &str) {
    for attempt in harness.attempts(handler) {
        println!("  {attempt}");
    }
}

fn humanize(duration: Duration) -> String {
    let seconds = duration.as_secs();
    format!("{}m{:02}s", seconds / 60, seconds % 60)
}
