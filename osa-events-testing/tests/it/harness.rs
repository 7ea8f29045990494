//! `Harness`: stepping, draining, time, inspection and the assertion messages.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use osa_events::prelude::*;
use osa_events::{BatchOutcome, Clock, Error};
use osa_events_testing::{AttemptOutcome, FakeClock, Harness, InMemoryStore, RawEvent};
use serde::{Deserialize, Serialize};

use osa_events_fixtures::logs::Logs;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "harness.test.job")]
struct Job {
    n: u32,
}

/// Fails the events whose `n` it is told to, counting calls.
#[derive(Default)]
struct Backend {
    failing: Mutex<Vec<u32>>,
    calls: AtomicU32,
}

impl Backend {
    fn failing(numbers: &[u32]) -> Self {
        Self {
            failing: Mutex::new(numbers.to_vec()),
            calls: AtomicU32::new(0),
        }
    }

    fn handle(&self, job: &Job) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.lock().unwrap().contains(&job.n) {
            return Err(HandlerError::retry(format!(
                "backend rejects job {}",
                job.n
            )));
        }
        Ok(())
    }
}

#[event_handler(name = "harness.flaky", batch = 2, retries = 2, backoff = "1s")]
async fn flaky(job: Job, backend: State<Backend>) -> Result<(), HandlerError> {
    backend.handle(&job)
}

#[event_handler(name = "harness.picky")]
async fn picky(job: Job) -> Result<(), HandlerError> {
    if job.n == 0 {
        return Err(HandlerError::permanent("job 0 is never valid"));
    }
    Ok(())
}

#[event_handler(name = "harness.bulk", batch = 10)]
async fn bulk(jobs: Batch<Job>) -> Result<BatchOutcome, HandlerError> {
    let mut outcome = BatchOutcome::new();
    for (index, job) in jobs.iter().enumerate() {
        if job.n % 2 == 1 {
            outcome.fail(index, HandlerError::permanent(format!("odd job {}", job.n)));
        }
    }
    Ok(outcome)
}

#[event_handler(name = "harness.down", batch = 10, retries = 1, backoff = "1s")]
async fn down(job: Job) -> Result<(), HandlerError> {
    Err(HandlerError::retry(format!(
        "backend down for job {}",
        job.n
    )))
}

#[event_handler(name = "harness.refuse", batch = 10)]
async fn refuse(job: Job) -> Result<(), HandlerError> {
    Err(HandlerError::permanent(format!("job {} is refused", job.n)))
}

/// Miscounts on its first attempt: marks an index one past the end of its batch.
#[event_handler(name = "harness.miscounting", batch = 10, retries = 2)]
async fn miscounting(jobs: Batch<Job>) -> Result<BatchOutcome, HandlerError> {
    let mut outcome = BatchOutcome::new();
    let (ctx, _) = jobs.iter_with_ctx().next().expect("a batch is never empty");
    if ctx.attempt() == 1 {
        outcome.fail(jobs.len(), HandlerError::permanent("off by one"));
    }
    Ok(outcome)
}

#[event_handler(name = "harness.slow", timeout = "5s", retries = 0)]
async fn slow(_job: Job, clock: State<FakeClock>) -> Result<(), HandlerError> {
    clock.sleep(Duration::from_secs(3600)).await;
    Ok(())
}

#[event_handler(name = "harness.long", claim_timeout = "60s")]
async fn long(_job: Job, clock: State<FakeClock>) -> Result<(), HandlerError> {
    clock.sleep(Duration::from_secs(600)).await;
    Ok(())
}

/// The store, known only once the harness is built.
#[derive(Default)]
struct Echo(OnceLock<InMemoryStore>);

#[event_handler(name = "harness.echo")]
async fn echo(job: Job, echo: State<Echo>) -> Result<(), HandlerError> {
    let Echo(store) = &*echo;
    let store = store.get().expect("set after build");
    store.publish(&Job { n: job.n + 1 }).permanent()?;
    Ok(())
}

async fn harness(only: &str, resources: Resources) -> Harness {
    Harness::builder()
        .resources(resources)
        .only([only])
        .build()
        .await
        .expect("the harness builds")
}

#[tokio::test]
async fn drain_retries_with_backoff_then_dead_letters() {
    let backend = Arc::new(Backend::failing(&[2]));
    let mut harness = harness("harness.flaky", Resources::new().with_arc(backend.clone())).await;
    for n in 1..=3 {
        harness.publish(&Job { n });
    }
    harness.drain().await;

    harness.assert_handled("harness.flaky", 2);
    harness.assert_retried("harness.flaky", 2);
    harness.assert_dead_lettered("harness.flaky", 1);
    harness.assert_idle();
    let attempts: Vec<(u32, u32)> = harness
        .attempts("harness.flaky")
        .iter()
        .map(|a| (a.event::<Job>().n, a.attempt))
        .collect();
    assert_eq!(attempts, [(1, 1), (2, 1), (3, 1), (2, 2), (2, 3)]);
    let dead = harness.dead_letters("harness.flaky");
    assert!(
        dead[0]
            .error()
            .unwrap()
            .contains("attempt 3 of 3: backend rejects job 2")
    );
    // Backoff 1 s then 2 s, each drawn from its upper half.
    let retries = harness.retries("harness.flaky");
    let delays: Vec<Duration> = retries
        .iter()
        .map(|a| match a.outcome {
            AttemptOutcome::Retried { retry_in, .. } => retry_in,
            _ => unreachable!(),
        })
        .collect();
    assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= Duration::from_secs(1));
    assert!(delays[1] >= Duration::from_secs(1) && delays[1] <= Duration::from_secs(2));
    assert_eq!(
        harness.elapsed(),
        delays[0] + delays[1],
        "time moved only to each retry"
    );
    assert_eq!(backend.calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn step_claims_one_batch_and_a_retry_waits_for_its_backoff() {
    let backend = Arc::new(Backend::failing(&[1]));
    let mut harness = harness("harness.flaky", Resources::new().with_arc(backend)).await;
    for n in 1..=3 {
        harness.publish(&Job { n });
    }
    let first = harness.step("harness.flaky").await;
    assert_eq!(first.len(), 2, "batch = 2");
    assert!(first[0].is_retried() && first[1].is_handled());
    assert_eq!(harness.step("harness.flaky").await.len(), 1);
    assert!(
        harness.step("harness.flaky").await.is_empty(),
        "retry not due"
    );

    let retry_in = match &harness.retries("harness.flaky")[0].outcome {
        AttemptOutcome::Retried { retry_in, .. } => *retry_in,
        other => panic!("{other:?}"),
    };
    harness.advance(retry_in - Duration::from_millis(1));
    assert!(harness.step("harness.flaky").await.is_empty(), "1 ms early");
    harness.advance(Duration::from_millis(1));
    let retry = harness.step("harness.flaky").await;
    assert_eq!((retry.len(), retry[0].attempt), (1, 2));
}

#[tokio::test]
async fn a_permanent_error_and_an_undecodable_payload_are_dead_at_once() {
    let mut harness = harness("harness.picky", Resources::new()).await;
    harness.publish(&Job { n: 0 });
    harness.publish(&Job { n: 1 });
    let garbage = RawEvent::from_json("harness.test.job", 1, r#"{"n":"seven"}"#);
    harness.store().publish_raw(&[garbage]);
    harness.drain().await;

    harness.assert_handled("harness.picky", 1);
    harness.assert_retried("harness.picky", 0);
    harness.assert_dead_lettered("harness.picky", 2);
    let errors: Vec<&str> = harness
        .dead_letters("harness.picky")
        .iter()
        .map(|a| a.error().unwrap())
        .collect();
    assert!(errors[0].contains("job 0 is never valid"), "{errors:?}");
    assert!(
        errors[1].contains("invalid type"),
        "serde's error: {errors:?}"
    );
    assert_eq!(harness.elapsed(), Duration::ZERO, "nothing to wait for");
}

#[tokio::test]
async fn batch_handlers_fail_single_events() {
    let mut harness = harness("harness.bulk", Resources::new()).await;
    for n in 0..5 {
        harness.publish(&Job { n });
    }
    let attempts = harness.step("harness.bulk").await;
    assert_eq!(attempts.len(), 5, "one batch");
    let handled: Vec<u32> = harness
        .handled_events::<Job>("harness.bulk")
        .iter()
        .map(|job| job.n)
        .collect();
    assert_eq!(handled, [0, 2, 4]);
    harness.assert_dead_lettered("harness.bulk", 2);
}

#[tokio::test]
async fn an_out_of_range_batch_outcome_index_fails_the_whole_batch() {
    let mut harness = harness("harness.miscounting", Resources::new()).await;
    for n in 0..3 {
        harness.publish(&Job { n });
    }
    let attempts = harness.step("harness.miscounting").await;
    assert_eq!(attempts.len(), 3, "one batch");
    for attempt in &attempts {
        assert!(
            attempt.is_retried(),
            "retryable, not completed: {attempt:?}"
        );
        let error = attempt.error().unwrap();
        assert!(
            error.ends_with(
                "`BatchOutcome::fail` named index 3, but the batch has 3 event(s) (indexes 0..3); \
                 the whole batch failed"
            ),
            "{error}"
        );
    }
    harness.drain().await;
    harness.assert_handled("harness.miscounting", 3);
    harness.assert_dead_lettered("harness.miscounting", 0);
}

#[tokio::test]
async fn a_failed_batch_logs_one_info_summary_with_the_counts_and_the_first_error() {
    let logs = Logs::capture();
    let mut harness = harness("harness.down", Resources::new()).await;
    for n in 0..10 {
        harness.publish(&Job { n });
    }
    assert_eq!(harness.step("harness.down").await.len(), 10, "one batch");
    let summaries = logs.lines_with("batch handled");
    assert_eq!(summaries.len(), 1, "one line per batch: {summaries:#?}");
    assert!(summaries[0].starts_with("INFO"), "{}", summaries[0]);
    for field in [
        "claimed=10",
        "completed=0",
        "retried=10",
        "dead_lettered=0",
        "attempt 1 of 2: backend down for job 0",
    ] {
        assert!(summaries[0].contains(field), "{field}: {}", summaries[0]);
    }
    let detail = logs.lines_with("backend down for job");
    assert_eq!(
        detail
            .iter()
            .filter(|line| line.starts_with("DEBUG"))
            .count(),
        10,
        "each event's failure at DEBUG: {detail:#?}"
    );
    assert!(logs.at("WARN").is_empty(), "nothing was dead-lettered");
    assert!(logs.at("ERROR").is_empty());
}

#[tokio::test]
async fn each_dead_letter_logs_one_warn_line_naming_the_event() {
    let logs = Logs::capture();
    let mut harness = harness("harness.refuse", Resources::new()).await;
    let ids: Vec<_> = (0..10).map(|n| harness.publish(&Job { n })).collect();
    assert_eq!(harness.step("harness.refuse").await.len(), 10, "one batch");
    harness.assert_dead_lettered("harness.refuse", 10);
    let warnings = logs.at("WARN");
    assert_eq!(
        warnings.len(),
        10,
        "one line per dead letter: {:#?}",
        logs.lines()
    );
    for (warning, id) in warnings.iter().zip(&ids) {
        for field in [
            "dead letter".to_owned(),
            "handler=\"harness.refuse\"".to_owned(),
            "event_type=harness.test.job".to_owned(),
            format!("event_id={id}"),
            "attempts=1".to_owned(),
            "is refused".to_owned(),
        ] {
            assert!(warning.contains(&field), "{field}: {warning}");
        }
    }
    let summaries = logs.lines_with("batch handled");
    assert_eq!(summaries.len(), 1, "{summaries:#?}");
    assert!(summaries[0].starts_with("INFO") && summaries[0].contains("dead_lettered=10"));
    assert!(logs.at("ERROR").is_empty());
}

#[tokio::test]
async fn a_handler_timeout_expires_on_fake_time() {
    let clock = FakeClock::new();
    let mut harness = Harness::builder()
        .clock(clock.clone())
        .resources(Resources::new().with(clock))
        .only(["harness.slow"])
        .build()
        .await
        .unwrap();
    harness.publish(&Job { n: 1 });
    let started = std::time::Instant::now();
    harness.drain().await;
    harness.assert_dead_lettered("harness.slow", 1);
    let error = harness.dead_letters("harness.slow")[0]
        .error()
        .unwrap()
        .to_owned();
    assert!(error.contains("the handler timed out after 5s"), "{error}");
    assert_eq!(harness.elapsed(), Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "fake time, not real"
    );
}

#[tokio::test]
async fn heartbeats_keep_the_claim_of_a_handler_that_outlasts_its_timeout() {
    let clock = FakeClock::new();
    let mut harness = Harness::builder()
        .clock(clock.clone())
        .resources(Resources::new().with(clock))
        .only(["harness.long"])
        .build()
        .await
        .unwrap();
    harness.publish(&Job { n: 1 });
    let attempts = harness.step("harness.long").await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0].outcome,
        AttemptOutcome::Handled,
        "ten claim timeouts, one attempt"
    );
    assert_eq!(harness.elapsed(), Duration::from_secs(600));
    harness.assert_idle();
}

#[tokio::test]
async fn the_same_seed_gives_the_same_retry_delays() {
    async fn delays(seed: u64) -> Vec<Duration> {
        let backend = Arc::new(Backend::failing(&[1, 2, 3]));
        let mut harness = Harness::builder()
            .resources(Resources::new().with_arc(backend))
            .only(["harness.flaky"])
            .seed(seed)
            .build()
            .await
            .unwrap();
        for n in 1..=3 {
            harness.publish(&Job { n });
        }
        harness.drain().await;
        harness
            .retries("harness.flaky")
            .iter()
            .map(|a| match a.outcome {
                AttemptOutcome::Retried { retry_in, .. } => retry_in,
                _ => unreachable!(),
            })
            .collect()
    }
    assert_eq!(delays(7).await, delays(7).await);
    assert_ne!(delays(7).await, delays(8).await);
}

#[tokio::test]
async fn unknown_names_fail_the_build_and_the_inspection() {
    let error = Harness::builder()
        .only(["harness.typo"])
        .build()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::UnknownHandler { .. }), "{error}");
    let error = Harness::builder()
        .only(["harness.flaky"])
        .build()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::MissingResource { .. }), "{error}");

    let harness = harness("harness.picky", Resources::new()).await;
    let panic = std::panic::catch_unwind(AssertUnwindSafe(|| harness.handled("harness.pciky")))
        .unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert_eq!(
        message,
        "this harness runs no handler `harness.pciky`; it runs `harness.picky`"
    );
}

#[tokio::test]
async fn a_failed_assertion_shows_what_it_found() {
    let mut harness = harness("harness.picky", Resources::new()).await;
    harness.publish(&Job { n: 0 });
    harness.publish(&Job { n: 1 });
    harness.drain().await;
    let panic = std::panic::catch_unwind(AssertUnwindSafe(|| {
        harness.assert_dead_lettered("harness.picky", 2)
    }))
    .unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(
        lines[0],
        "handler `harness.picky`: expected 2 dead letter(s), found 1:"
    );
    assert!(
        lines[1].contains("position 1  attempt 1  dead-lettered:"),
        "{message}"
    );
    assert!(lines[1].contains("job 0 is never valid"), "{message}");
    assert_eq!(lines[2], "journal of `harness.picky` (2 attempt(s)):");
    assert!(
        lines[4].ends_with("position 2  attempt 1  handled"),
        "{message}"
    );
}

#[tokio::test]
#[should_panic(expected = "Harness::drain did not settle after 50 claim-loop iterations")]
async fn drain_gives_up_on_work_that_never_ends() {
    let echo = Arc::new(Echo::default());
    let mut harness = Harness::builder()
        .resources(Resources::new().with_arc(echo.clone()))
        .only(["harness.echo"])
        .max_steps(50)
        .build()
        .await
        .unwrap();
    echo.0.set(harness.store().clone()).ok().unwrap();
    harness.publish(&Job { n: 0 });
    harness.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_time_advances_on_a_multi_thread_runtime_too() {
    let clock = FakeClock::new();
    let mut harness = Harness::builder()
        .clock(clock.clone())
        .resources(Resources::new().with(clock))
        .only(["harness.long", "harness.slow"])
        .build()
        .await
        .unwrap();
    harness.publish(&Job { n: 1 });
    harness.drain().await;
    harness.assert_handled("harness.long", 1);
    harness.assert_dead_lettered("harness.slow", 1);
    assert_eq!(
        harness.elapsed(),
        Duration::from_secs(605),
        "5 s timeout, then 10 min"
    );
}

#[tokio::test]
async fn no_payload_value_is_logged_at_info_or_above() {
    let logs = Logs::capture();
    let mut harness = harness("harness.refuse", Resources::new()).await;
    // `n` is a number: this payload does not decode, and its value must not be logged.
    harness.store().publish_raw(&[RawEvent::from_json(
        Job::NAME,
        1,
        r#"{"n": "4111-1111-1111-1111"}"#,
    )]);
    harness.drain().await;
    harness.assert_dead_lettered("harness.refuse", 1);
    let dead_letter = logs.lines_with("dead letter");
    assert_eq!(dead_letter.len(), 1, "{:#?}", logs.lines());
    assert!(
        dead_letter[0].contains("invalid type: string, expected u32"),
        "the error's shape is kept: {}",
        dead_letter[0]
    );
    for line in logs.lines() {
        if !line.starts_with("DEBUG") && !line.starts_with("TRACE") {
            assert!(!line.contains("4111"), "a payload value at INFO+: {line}");
        }
    }
}
