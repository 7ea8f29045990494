//! Failures never stop a worker: errors, permanent errors, panics, timeouts and undecodable
//! payloads each fail their own delivery, retried with backoff and then dead-lettered with a
//! message a human can act on, while other deliveries and other handlers keep flowing.

use std::sync::Mutex;
use std::time::Duration;

use osa_events::Outgoing;
use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

use crate::support::{Db, eventually};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.failures.job")]
struct Job {
    n: u32,
}

/// The same event name with another shape: what a buggy or outdated publisher would send.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.failures.job")]
struct MisshapenJob {
    label: String,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.failures.job", version = 2)]
struct JobV2 {
    n: u32,
}

/// What handlers saw: `(n, attempt)` per call.
#[derive(Default)]
struct Calls(Mutex<Vec<(u32, u32)>>);

impl Calls {
    fn record(&self, n: u32, ctx: &Ctx) {
        self.0.lock().unwrap().push((n, ctx.attempt()));
    }

    fn seen(&self) -> Vec<(u32, u32)> {
        let mut seen = self.0.lock().unwrap().clone();
        seen.sort_unstable();
        seen
    }
}

const WAIT: Duration = Duration::from_secs(20);

#[event_handler(
    name = "failures.retry",
    retries = 2,
    backoff = "10ms",
    max_backoff = "40ms",
    poll = "20ms"
)]
async fn always_retry(job: Job, calls: State<Calls>, ctx: Ctx) -> Result<(), HandlerError> {
    calls.record(job.n, &ctx);
    Err(HandlerError::retry(std::io::Error::other(
        "vector backend down",
    )))
}

#[tokio::test]
async fn retries_with_backoff_then_dead_letters_with_the_error() {
    let db = Db::new().await;
    let calls = std::sync::Arc::new(Calls::default());
    let running = db
        .start(
            &["failures.retry"],
            Resources::new().with_arc(calls.clone()),
        )
        .await;
    osa_events::publish(db.pool(), &Job { n: 1 }).await.unwrap();
    eventually(WAIT, "a dead letter", || async {
        db.deliveries(Some("dead")).await == 1
    })
    .await;
    running.stop().await;

    assert_eq!(
        calls.seen(),
        vec![(1, 1), (1, 2), (1, 3)],
        "first attempt plus two retries"
    );
    let dead = db.dead_letters().await;
    assert_eq!(dead[0].0, 3);
    let error = &dead[0].1;
    assert!(error.contains("`test.failures.job` event"), "{error}");
    assert!(error.contains("attempt 3 of 3"), "{error}");
    assert!(error.ends_with("vector backend down"), "{error}");
}

#[event_handler(
    name = "failures.permanent",
    retries = 5,
    backoff = "10ms",
    poll = "20ms"
)]
async fn reject_odd(job: Job, calls: State<Calls>, ctx: Ctx) -> Result<(), HandlerError> {
    calls.record(job.n, &ctx);
    if job.n % 2 == 1 {
        return Err(HandlerError::permanent(format!(
            "record {} is malformed",
            job.n
        )));
    }
    Ok(())
}

#[tokio::test]
async fn a_permanent_error_dead_letters_at_once_and_others_flow() {
    let db = Db::new().await;
    let calls = std::sync::Arc::new(Calls::default());
    let running = db
        .start(
            &["failures.permanent"],
            Resources::new().with_arc(calls.clone()),
        )
        .await;
    let batch: Vec<Outgoing> = (0..10)
        .map(|n| Outgoing::new(&Job { n }).unwrap())
        .collect();
    osa_events::publish_batch(db.pool(), &batch).await.unwrap();
    eventually(WAIT, "odd jobs dead, even jobs done", || async {
        db.deliveries(Some("dead")).await == 5 && db.deliveries(None).await == 5
    })
    .await;
    running.stop().await;
    assert_eq!(
        calls.seen().len(),
        10,
        "one attempt each, no retry of a permanent error"
    );
    assert!(
        db.dead_letters()
            .await
            .iter()
            .all(|(attempts, error)| *attempts == 1 && error.contains("is malformed"))
    );
}

/// Rate-limited for its first two calls, each asking to be called again after 700 ms;
/// `retries = 0`, so one counted failure would dead-letter it.
#[event_handler(name = "failures.retry_after", retries = 0, poll = "20ms")]
async fn rate_limited(job: Job, calls: State<Calls>, ctx: Ctx) -> Result<(), HandlerError> {
    calls.record(job.n, &ctx);
    if calls.seen().len() <= 2 {
        return Err(HandlerError::retry_after(
            Duration::from_millis(700),
            "rate limited (HTTP 429)",
        ));
    }
    Ok(())
}

#[tokio::test]
async fn retry_after_delays_by_the_handlers_choice_without_counting_the_attempt() {
    let db = Db::new().await;
    let calls = std::sync::Arc::new(Calls::default());
    let running = db
        .start(
            &["failures.retry_after"],
            Resources::new().with_arc(calls.clone()),
        )
        .await;
    let started = tokio::time::Instant::now();
    osa_events::publish(db.pool(), &Job { n: 1 }).await.unwrap();
    eventually(WAIT, "the first call asked to retry later", || async {
        !calls.seen().is_empty() && db.deliveries(Some("pending")).await == 1
    })
    .await;
    let (attempts, last_error, delay): (i32, String, f64) = sqlx::query_as(
        "select attempts, last_error, extract(epoch from run_at - updated_at)::float8 \
         from osa_events.deliveries",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(attempts, 0, "the attempt was given back");
    assert!(
        last_error.contains("attempt 1 not counted: retry after 700ms: rate limited (HTTP 429)"),
        "{last_error}"
    );
    assert!(
        (delay - 0.7).abs() < 1e-6,
        "due 700 ms after the write, by database time: {delay}"
    );

    eventually(WAIT, "handled at the third call", || async {
        db.deliveries(None).await == 0
    })
    .await;
    running.stop().await;
    assert!(
        started.elapsed() >= Duration::from_millis(1_400),
        "two delays of 700 ms: {:?}",
        started.elapsed()
    );
    assert_eq!(
        calls.seen(),
        [(1, 1), (1, 1), (1, 1)],
        "never counted: each call was attempt 1"
    );
}

#[event_handler(name = "failures.panic", retries = 1, backoff = "10ms", poll = "20ms")]
async fn panic_on_three(job: Job, calls: State<Calls>, ctx: Ctx) -> Result<(), HandlerError> {
    calls.record(job.n, &ctx);
    assert!(job.n != 3, "index for record {} is corrupt", job.n);
    Ok(())
}

#[tokio::test]
async fn a_panic_is_a_failed_attempt_with_its_message() {
    let db = Db::new().await;
    let calls = std::sync::Arc::new(Calls::default());
    let running = db
        .start(
            &["failures.panic"],
            Resources::new().with_arc(calls.clone()),
        )
        .await;
    let batch: Vec<Outgoing> = (0..6).map(|n| Outgoing::new(&Job { n }).unwrap()).collect();
    osa_events::publish_batch(db.pool(), &batch).await.unwrap();
    eventually(WAIT, "the panicking job dead, the rest done", || async {
        db.deliveries(Some("dead")).await == 1 && db.deliveries(None).await == 1
    })
    .await;
    running.stop().await;
    let dead = db.dead_letters().await;
    assert_eq!(dead[0].0, 2, "a panic is retried like an error");
    assert!(
        dead[0]
            .1
            .contains("the handler panicked: index for record 3 is corrupt"),
        "{}",
        dead[0].1
    );
    assert_eq!(calls.seen().iter().filter(|(n, _)| *n == 3).count(), 2);
}

#[event_handler(name = "failures.decode", retries = 5, poll = "20ms")]
async fn count_jobs(job: Job, calls: State<Calls>, ctx: Ctx) -> Result<(), HandlerError> {
    calls.record(job.n, &ctx);
    Ok(())
}

#[tokio::test]
async fn an_undecodable_payload_is_dead_lettered_at_once() {
    let db = Db::new().await;
    let calls = std::sync::Arc::new(Calls::default());
    let running = db
        .start(
            &["failures.decode"],
            Resources::new().with_arc(calls.clone()),
        )
        .await;
    let bad = osa_events::publish(db.pool(), &MisshapenJob { label: "x".into() })
        .await
        .unwrap()
        .id;
    osa_events::publish(db.pool(), &JobV2 { n: 9 })
        .await
        .unwrap();
    osa_events::publish(db.pool(), &Job { n: 1 }).await.unwrap();
    // The newer version is not dead: it waits for newer code (tests/it/versions.rs).
    eventually(WAIT, "one dead letter and the good job done", || async {
        db.deliveries(Some("dead")).await == 1 && db.deliveries(None).await == 2
    })
    .await;
    running.stop().await;
    assert_eq!(
        calls.seen(),
        vec![(1, 1)],
        "only the good job reaches the handler"
    );
    let dead = db.dead_letters().await;
    assert_eq!(dead[0].0, 1, "no retry for a payload that cannot decode");
    assert!(
        dead[0].1.contains(&bad.to_string()),
        "names the event id: {}",
        dead[0].1
    );
    assert!(
        dead[0].1.contains("the payload does not decode as"),
        "{}",
        dead[0].1
    );
    assert!(
        dead[0].1.contains("missing field `n`"),
        "keeps the serde error: {}",
        dead[0].1
    );
    assert_eq!(
        dead.len(),
        1,
        "a newer version is not a dead letter: {dead:?}"
    );
}

#[event_handler(
    name = "failures.timeout",
    retries = 0,
    timeout = "100ms",
    poll = "20ms"
)]
async fn hang(_job: Job) -> Result<(), HandlerError> {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}

#[tokio::test]
async fn a_call_past_its_timeout_fails() {
    let db = Db::new().await;
    let running = db.start(&["failures.timeout"], Resources::new()).await;
    osa_events::publish(db.pool(), &Job { n: 1 }).await.unwrap();
    eventually(WAIT, "the hanging job dead", || async {
        db.deliveries(Some("dead")).await == 1
    })
    .await;
    running.stop().await;
    assert!(
        db.dead_letters().await[0]
            .1
            .ends_with("the handler timed out after 100ms")
    );
}

#[event_handler(
    name = "failures.isolation.broken",
    retries = 1,
    backoff = "10ms",
    poll = "20ms"
)]
async fn broken_backend(_job: Job) -> Result<(), HandlerError> {
    Err(HandlerError::retry("keyword backend down"))
}

#[event_handler(name = "failures.isolation.healthy", batch = 16, poll = "20ms")]
async fn healthy_backend(jobs: Batch<Job>, calls: State<Calls>) -> Result<(), HandlerError> {
    for (ctx, job) in jobs.iter_with_ctx() {
        calls.record(job.n, ctx);
    }
    Ok(())
}

#[tokio::test]
async fn one_failing_handler_does_not_hold_back_another() {
    let db = Db::new().await;
    let calls = std::sync::Arc::new(Calls::default());
    let running = db
        .start(
            &["failures.isolation.broken", "failures.isolation.healthy"],
            Resources::new().with_arc(calls.clone()),
        )
        .await;
    let batch: Vec<Outgoing> = (0..40)
        .map(|n| Outgoing::new(&Job { n }).unwrap())
        .collect();
    osa_events::publish_batch(db.pool(), &batch).await.unwrap();
    eventually(
        WAIT,
        "healthy handler done, broken one dead-lettered",
        || async { db.deliveries(None).await == 40 && db.deliveries(Some("dead")).await == 40 },
    )
    .await;
    running.stop().await;
    assert_eq!(
        calls.seen().len(),
        40,
        "the healthy handler saw every event once"
    );
}

/// A job whose hand-written `Deserialize` panics on `n == 13`.
#[derive(Event, Serialize, Debug)]
#[event(name = "test.failures.fragile")]
struct FragileJob {
    n: u32,
}

impl<'de> Deserialize<'de> for FragileJob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            n: u32,
        }
        let Raw { n } = Raw::deserialize(deserializer)?;
        assert!(n != 13, "cannot decode 13");
        Ok(FragileJob { n })
    }
}

#[event_handler(name = "failures.fragile", concurrency = 1, retries = 5, poll = "20ms")]
async fn count_fragile(job: FragileJob, calls: State<Calls>, ctx: Ctx) -> Result<(), HandlerError> {
    calls.record(job.n, &ctx);
    Ok(())
}

#[tokio::test]
async fn a_panicking_deserialize_dead_letters_the_event_and_the_loop_goes_on() {
    let db = Db::new().await;
    let calls = std::sync::Arc::new(Calls::default());
    let running = db
        .start(
            &["failures.fragile"],
            Resources::new().with_arc(calls.clone()),
        )
        .await;
    let poison = osa_events::publish(db.pool(), &FragileJob { n: 13 })
        .await
        .unwrap();
    osa_events::publish(db.pool(), &FragileJob { n: 1 })
        .await
        .unwrap();
    eventually(WAIT, "the poison dead and the good job done", || async {
        db.deliveries(Some("dead")).await == 1 && db.deliveries(None).await == 1
    })
    .await;
    running.stop().await;
    assert_eq!(calls.seen(), vec![(1, 1)], "the one claim loop went on");
    let dead = db.dead_letters().await;
    assert_eq!(dead[0].0, 1, "permanent: no retry");
    assert!(dead[0].1.contains(&poison.id.to_string()), "{}", dead[0].1);
    assert!(
        dead[0]
            .1
            .ends_with("attempt 1 of 6: decoding the payload panicked: cannot decode 13"),
        "{}",
        dead[0].1
    );
}
