//! `HandlerError::fatal` on the in-memory store: the call's deliveries are given back unfailed
//! (pending, due at once, the attempt not counted, the error kept), the rest of the claim is
//! given back uncalled, a batch gives back its whole call, and the runtime stops: `run` returns
//! `Error::Fatal` after letting the other handlers' running calls finish. A panic stays a failed
//! attempt and stops nothing.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use osa_events::prelude::*;
use osa_events::{BatchOutcome, Error, Runtime};
use osa_events_testing::{AttemptOutcome, DeliveryStatus, Harness, InMemoryStore};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "fatal.test.job")]
struct Job {
    n: u32,
}

/// What went wrong, as the application's own error type: `Error::Fatal`'s source downcasts to it.
#[derive(Debug)]
struct SchemaMismatch(&'static str);

impl std::fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "table `records` has no column `{}`", self.0)
    }
}

impl std::error::Error for SchemaMismatch {}

/// The jobs each handler was called for, in order.
#[derive(Default)]
struct Calls(Mutex<Vec<u32>>);

impl Calls {
    fn record(&self, n: u32) {
        self.0.lock().unwrap().push(n);
    }

    fn seen(&self) -> Vec<u32> {
        self.0.lock().unwrap().clone()
    }
}

/// Job 2 is fatal; job 7 panics.
#[event_handler(
    name = "fatal.each",
    batch = 4,
    retries = 3,
    backoff = "1s",
    poll = "20ms"
)]
async fn each(job: Job, calls: State<Calls>) -> Result<(), HandlerError> {
    calls.record(job.n);
    match job.n {
        2 => Err(HandlerError::fatal(SchemaMismatch("title"))),
        7 => panic!("job 7 hit a bug"),
        _ => Ok(()),
    }
}

/// Fails job 1 with a retryable error and job 2 fatally, in one `BatchOutcome`.
#[event_handler(name = "fatal.batch", batch = 10, retries = 3)]
async fn batch(jobs: Batch<Job>, calls: State<Calls>) -> Result<BatchOutcome, HandlerError> {
    let mut outcome = BatchOutcome::new();
    for (index, job) in jobs.iter().enumerate() {
        calls.record(job.n);
        match job.n {
            1 => outcome.fail(index, HandlerError::retry("job 1 failed")),
            2 => outcome.fail(index, HandlerError::fatal("corrupt index segment")),
            _ => continue,
        };
    }
    Ok(outcome)
}

async fn harness(only: &str, calls: &Arc<Calls>) -> Harness {
    Harness::builder()
        .resources(Resources::new().with_arc(Arc::clone(calls)))
        .only([only])
        .build()
        .await
        .expect("the harness builds")
}

#[tokio::test]
async fn a_fatal_error_gives_back_its_delivery_and_the_rest_of_the_claim() {
    let calls = Arc::new(Calls::default());
    let mut harness = harness("fatal.each", &calls).await;
    for n in 1..=4 {
        harness.publish(&Job { n });
    }
    let attempts = harness.step("fatal.each").await;
    assert_eq!(attempts.len(), 4, "one claim");
    assert!(attempts[0].is_handled(), "{attempts:#?}");
    for attempt in &attempts[1..] {
        let AttemptOutcome::Fatal { error } = &attempt.outcome else {
            panic!("not given back: {attempt}");
        };
        assert!(
            error.starts_with("handler `fatal.each` stopped the runtime with a fatal error at `fatal.test.job` event")
                && error.contains(&format!("(position {})", attempts[1].position))
                && error.ends_with("its deliveries were given back, not failed: table `records` has no column `title`"),
            "{error}"
        );
    }
    assert_eq!(calls.seen(), [1, 2], "the rest of the claim was not called");

    let left = harness.deliveries("fatal.each");
    assert_eq!(left.len(), 3, "jobs 2, 3 and 4 are left");
    for delivery in &left {
        assert_eq!(
            (delivery.status, delivery.attempts),
            (DeliveryStatus::Pending, 0),
            "given back, the attempt not counted: {delivery:?}"
        );
    }
    let kept = left[0]
        .last_error
        .as_deref()
        .expect("the fatal error is kept");
    assert!(
        kept.contains("attempt 1 not counted: handler `fatal.each` stopped the runtime with a fatal error: table `records` has no column `title`"),
        "{kept}"
    );
    assert_eq!(left[1].last_error, None, "never called");

    // Due at once: the next step (a restarted process) meets it again, as attempt 1.
    let again = harness.step("fatal.each").await;
    assert_eq!(again[0].attempt, 1);
    assert!(again[0].is_fatal(), "{again:#?}");
    assert_eq!(harness.elapsed(), Duration::ZERO, "no delay");
    harness.assert_dead_lettered("fatal.each", 0);
}

#[tokio::test]
async fn one_fatal_event_of_a_batch_outcome_gives_back_the_whole_batch() {
    let calls = Arc::new(Calls::default());
    let mut harness = harness("fatal.batch", &calls).await;
    for n in 0..4 {
        harness.publish(&Job { n });
    }
    let attempts = harness.step("fatal.batch").await;
    assert_eq!(attempts.len(), 4);
    assert!(
        attempts.iter().all(|attempt| attempt.is_fatal()),
        "none completed, none failed: {attempts:#?}"
    );
    assert!(
        attempts[0]
            .error()
            .unwrap()
            .contains("corrupt index segment"),
        "{attempts:#?}"
    );
    let left = harness.deliveries("fatal.batch");
    assert_eq!(left.len(), 4);
    assert!(
        left.iter()
            .all(|d| d.status == DeliveryStatus::Pending && d.attempts == 0),
        "{left:#?}"
    );
}

#[tokio::test]
async fn drain_stops_at_a_fatal_error_naming_it() {
    let calls = Arc::new(Calls::default());
    let mut harness = harness("fatal.each", &calls).await;
    harness.publish(&Job { n: 2 });
    let panic = AssertUnwindSafe(harness.drain())
        .catch_unwind()
        .await
        .expect_err("drain does not go on past a fatal error");
    let message = panic
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(
        message.starts_with("Harness::drain stopped: handler `fatal.each` stopped the runtime")
            && message.contains("a runtime would stop here"),
        "{message}"
    );
    assert_eq!(calls.seen(), [2], "called once, not in a loop");
}

#[tokio::test]
async fn a_panic_is_still_a_failed_attempt_not_a_fatal_error() {
    let calls = Arc::new(Calls::default());
    let mut harness = harness("fatal.each", &calls).await;
    harness.publish(&Job { n: 7 });
    let attempts = harness.step("fatal.each").await;
    assert!(attempts[0].is_retried(), "{attempts:#?}");
    assert!(
        attempts[0]
            .error()
            .unwrap()
            .contains("the handler panicked: job 7 hit a bug")
    );
    assert_eq!(harness.deliveries("fatal.each")[0].attempts, 1, "counted");
}

/// A slow handler: its call has begun when `started` is notified, and ends when `release` is.
#[derive(Default)]
struct Slow {
    started: Notify,
    release: Notify,
    finished: AtomicU32,
}

#[event_handler(name = "fatal.slow", poll = "20ms")]
async fn slow(_job: Job, slow: State<Slow>) -> Result<(), HandlerError> {
    slow.started.notify_one();
    slow.release.notified().await;
    slow.finished.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// Polls `condition` every 10 ms, for at most 10 s.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_fatal_error_stops_the_runtime_which_returns_it_after_a_graceful_stop() {
    let store = InMemoryStore::new();
    let calls = Arc::new(Calls::default());
    let slow = Arc::new(Slow::default());
    let runtime = Runtime::builder(store.clone())
        .resources(
            Resources::new()
                .with_arc(Arc::clone(&calls))
                .with_arc(Arc::clone(&slow)),
        )
        .only(["fatal.each", "fatal.slow"])
        .handle_signals(false)
        .build()
        .unwrap();
    runtime.register().await.unwrap();
    let each = store.subscription_id("fatal.each").unwrap();
    let slow_id = store.subscription_id("fatal.slow").unwrap();
    let shutdown = runtime.shutdown_token();
    let running = tokio::spawn(runtime.run());

    // A panic fails its attempt and stops nothing.
    store.publish(&Job { n: 7 }).unwrap();
    until("job 7's panic to be a failed attempt", || {
        store.deliveries(each).iter().any(|d| {
            d.status == DeliveryStatus::Pending
                && d.attempts == 1
                && d.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("the handler panicked"))
        })
    })
    .await;
    slow.started.notified().await; // `fatal.slow` is mid-call with job 7
    assert!(!running.is_finished(), "a panic does not stop the runtime");

    store.publish(&Job { n: 2 }).unwrap();
    until("job 2 to be given back", || {
        store.deliveries(each).iter().any(|d| {
            d.status == DeliveryStatus::Pending
                && d.attempts == 0
                && d.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("fatal error"))
        })
    })
    .await;
    // Stopping: no new claims, and the running call of the other handler may finish.
    store.publish(&Job { n: 3 }).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !running.is_finished(),
        "the other handler's call is waited for"
    );
    slow.release.notify_one();

    let error = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the runtime stops by itself")
        .expect("no panic")
        .expect_err("run returns the fatal error");
    let Error::Fatal {
        handler,
        event_type,
        source,
        ..
    } = &error
    else {
        panic!("not a fatal error: {error}");
    };
    assert_eq!(
        (handler.as_str(), event_type.as_str()),
        ("fatal.each", "fatal.test.job")
    );
    let cause = source
        .downcast_ref::<SchemaMismatch>()
        .expect("the handler's own error");
    assert_eq!(cause.0, "title");
    assert!(
        !shutdown.is_cancelled(),
        "the application's token is its own"
    );
    assert_eq!(
        slow.finished.load(Ordering::SeqCst),
        1,
        "finished, not aborted"
    );
    assert!(
        !calls.seen().contains(&3),
        "nothing was claimed after the fatal error: {:?}",
        calls.seen()
    );
    let waiting = |id| {
        store
            .deliveries(id)
            .into_iter()
            .filter(|d| d.status == DeliveryStatus::Pending && d.attempts == 0)
            .count()
    };
    assert_eq!(
        waiting(slow_id),
        2,
        "jobs 2 and 3 wait for `fatal.slow`, never claimed"
    );
    assert_eq!(
        waiting(each),
        2,
        "jobs 2 (given back) and 3 (never claimed) wait for `fatal.each`"
    );
}

/// Fails every batch fatally: a projection has no delivery to give back, so it is a failed batch.
#[projection(name = "fatal.projection", batch = 10)]
async fn project(jobs: Batch<Job>, calls: State<Calls>) -> Result<(), HandlerError> {
    calls.record(jobs.len() as u32);
    Err(HandlerError::fatal("the read model's schema is wrong"))
}

#[tokio::test]
async fn a_projection_treats_a_fatal_error_as_a_failed_batch() {
    let calls = Arc::new(Calls::default());
    let mut harness = harness("fatal.projection", &calls).await;
    harness.publish(&Job { n: 1 });
    for round in 0..2 {
        let failed = harness
            .project("fatal.projection")
            .await
            .expect_err("the batch fails");
        assert_eq!(failed.applied, 0, "round {round}");
        assert!(
            failed.error.contains("the read model's schema is wrong"),
            "{}",
            failed.error
        );
    }
    assert_eq!(
        calls.seen(),
        [1, 1],
        "the same batch again: its checkpoint did not move"
    );
}
