//! `HandlerError::retry_after` on the in-memory store and a fake clock: the delivery comes back
//! after the delay the handler chose, the attempt is not counted (so `retries = 0` never
//! dead-letters it), the error is kept as its last error, and a delay over a day is cut to a day.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::prelude::*;
use osa_events::{BatchOutcome, Ctx};
use osa_events_fixtures::logs::Logs;
use osa_events_testing::{AttemptOutcome, DeliveryStatus, Harness};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "retry_after.test.job")]
struct Job {
    n: u32,
}

/// A downstream that rate-limits the first `limited` calls, answering with `Retry-After`.
struct Downstream {
    limited: u32,
    retry_after: Duration,
    calls: AtomicU32,
    /// The attempt number of each call.
    attempts: Mutex<Vec<u32>>,
}

impl Downstream {
    fn new(limited: u32, retry_after: Duration) -> Self {
        Self {
            limited,
            retry_after,
            calls: AtomicU32::new(0),
            attempts: Mutex::new(Vec::new()),
        }
    }

    fn call(&self, ctx: Option<&Ctx>) -> Result<(), HandlerError> {
        if let Some(ctx) = ctx {
            self.attempts.lock().unwrap().push(ctx.attempt());
        }
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.limited {
            return Err(HandlerError::retry_after(
                self.retry_after,
                "rate limited (HTTP 429)",
            ));
        }
        Ok(())
    }
}

/// `retries = 0`: one counted failure would dead-letter the delivery.
#[event_handler(name = "retry_after.each", retries = 0, backoff = "1s")]
async fn each(_job: Job, downstream: State<Downstream>, ctx: Ctx) -> Result<(), HandlerError> {
    downstream.call(Some(&ctx))
}

#[event_handler(name = "retry_after.batch", batch = 10, retries = 0)]
async fn batch(jobs: Batch<Job>, downstream: State<Downstream>) -> Result<(), HandlerError> {
    let _ = jobs;
    downstream.call(None)
}

/// Snoozes job 1 only, in its `BatchOutcome`.
#[event_handler(name = "retry_after.outcome", batch = 10, retries = 0)]
async fn outcome(jobs: Batch<Job>) -> Result<BatchOutcome, HandlerError> {
    let mut outcome = BatchOutcome::new();
    for (index, job) in jobs.iter().enumerate() {
        if job.n == 1 {
            outcome.fail(
                index,
                HandlerError::retry_after(Duration::from_secs(5), "job 1 is throttled"),
            );
        }
    }
    Ok(outcome)
}

async fn harness(only: &str, downstream: &Arc<Downstream>) -> Harness {
    Harness::builder()
        .resources(Resources::new().with_arc(Arc::clone(downstream)))
        .only([only])
        .build()
        .await
        .expect("the harness builds")
}

#[tokio::test]
async fn retry_after_brings_the_delivery_back_after_the_chosen_delay_without_counting_the_attempt()
{
    let delay = Duration::from_secs(90);
    let downstream = Arc::new(Downstream::new(2, delay));
    let mut harness = harness("retry_after.each", &downstream).await;
    harness.publish(&Job { n: 1 });
    for round in 0..2 {
        let attempts = harness.step("retry_after.each").await;
        assert_eq!(attempts.len(), 1, "round {round}");
        let AttemptOutcome::Retried { error, retry_in } = &attempts[0].outcome else {
            panic!("round {round}: not snoozed: {:?}", attempts[0].outcome);
        };
        assert_eq!(
            *retry_in, delay,
            "round {round}: the handler's delay, no jitter"
        );
        assert!(
            error.contains("attempt 1 not counted: retry after 90s: rate limited (HTTP 429)"),
            "{error}"
        );
        let delivery = &harness.deliveries("retry_after.each")[0];
        assert_eq!(
            (delivery.status, delivery.attempts),
            (DeliveryStatus::Pending, 0),
            "round {round}: pending, the attempt given back"
        );
        assert_eq!(delivery.last_error.as_deref(), Some(error.as_str()));
        harness.advance(delay - Duration::from_millis(1));
        assert!(
            harness.step("retry_after.each").await.is_empty(),
            "round {round}: not due before its delay"
        );
        harness.advance(Duration::from_millis(1));
    }
    let attempts = harness.step("retry_after.each").await;
    assert!(attempts[0].is_handled(), "{attempts:#?}");
    assert_eq!(harness.elapsed(), delay * 2, "exactly the chosen delays");
    assert_eq!(
        *downstream.attempts.lock().unwrap(),
        [1, 1, 1],
        "every call was attempt 1"
    );
    harness.assert_dead_lettered("retry_after.each", 0);
}

#[tokio::test]
async fn a_handler_that_always_asks_to_retry_later_never_dead_letters_its_delivery() {
    let delay = Duration::from_secs(60);
    let mut harness = harness(
        "retry_after.each",
        &Arc::new(Downstream::new(u32::MAX, delay)),
    )
    .await;
    harness.publish(&Job { n: 1 });
    for round in 0..50 {
        let attempts = harness.step("retry_after.each").await;
        assert_eq!(
            attempts.len(),
            1,
            "round {round}: due again after its delay"
        );
        assert_eq!(attempts[0].attempt, 1, "round {round}: never counted");
        harness.advance(delay);
    }
    let delivery = &harness.deliveries("retry_after.each")[0];
    assert_eq!(
        (delivery.status, delivery.attempts),
        (DeliveryStatus::Pending, 0)
    );
    harness.assert_dead_lettered("retry_after.each", 0);
}

#[tokio::test]
async fn a_delay_over_a_day_waits_a_day_with_a_warning() {
    let logs = Logs::capture();
    let year = Duration::from_secs(365 * 24 * 3600);
    let mut harness = harness("retry_after.each", &Arc::new(Downstream::new(1, year))).await;
    harness.publish(&Job { n: 1 });
    let attempts = harness.step("retry_after.each").await;
    let AttemptOutcome::Retried { retry_in, .. } = &attempts[0].outcome else {
        panic!("not snoozed: {:?}", attempts[0].outcome);
    };
    assert_eq!(*retry_in, HandlerError::MAX_RETRY_AFTER);
    assert_eq!(
        HandlerError::MAX_RETRY_AFTER,
        Duration::from_secs(24 * 3600)
    );
    let warnings = logs.lines_with("asked to retry after more than the longest delay");
    assert_eq!(warnings.len(), 1, "{:#?}", logs.lines());
    assert!(
        warnings[0].starts_with("WARN") && warnings[0].contains("retry_after.each"),
        "{}",
        warnings[0]
    );
    harness.advance(HandlerError::MAX_RETRY_AFTER);
    assert!(harness.step("retry_after.each").await[0].is_handled());
}

#[tokio::test]
async fn a_batch_that_asks_to_retry_later_brings_every_event_back_after_the_delay() {
    let delay = Duration::from_secs(30);
    let mut harness = harness("retry_after.batch", &Arc::new(Downstream::new(1, delay))).await;
    for n in 0..3 {
        harness.publish(&Job { n });
    }
    let attempts = harness.step("retry_after.batch").await;
    assert_eq!(attempts.len(), 3);
    for attempt in &attempts {
        assert!(
            matches!(attempt.outcome, AttemptOutcome::Retried { retry_in, .. } if retry_in == delay),
            "{attempt}"
        );
    }
    harness.advance(delay);
    let attempts = harness.step("retry_after.batch").await;
    assert_eq!(attempts.len(), 3, "all due again, together");
    assert!(
        attempts
            .iter()
            .all(|attempt| attempt.is_handled() && attempt.attempt == 1)
    );
}

#[tokio::test]
async fn a_batch_outcome_asks_to_retry_only_the_events_it_names_later() {
    let mut harness = harness(
        "retry_after.outcome",
        &Arc::new(Downstream::new(0, Duration::ZERO)),
    )
    .await;
    for n in 0..3 {
        harness.publish(&Job { n });
    }
    let attempts = harness.step("retry_after.outcome").await;
    let outcomes: Vec<bool> = attempts
        .iter()
        .map(|attempt| attempt.is_handled())
        .collect();
    assert_eq!(outcomes, [true, false, true], "{attempts:#?}");
    assert!(
        matches!(&attempts[1].outcome, AttemptOutcome::Retried { retry_in, error }
            if *retry_in == Duration::from_secs(5) && error.contains("job 1 is throttled")),
        "{attempts:#?}"
    );
    let left = harness.deliveries("retry_after.outcome");
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].status, left[0].attempts),
        (DeliveryStatus::Pending, 0)
    );
}
