//! The runtime's spans, captured: one per publish (`publish <event>`), per claimed batch
//! (`receive <handler>`) and per handler call (`process <handler>`), with OpenTelemetry's
//! messaging attributes and each call's outcome.

use std::time::Duration;

use osa_events::prelude::*;
use osa_events::{BatchOutcome, Outgoing};
use osa_events_fixtures::spans::{CapturedSpan, Spans};
use osa_events_testing::{FakeClock, Harness};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "spans.test.job")]
struct Job {
    n: u32,
}

/// Fails job 1 (retryable, 1 retry), refuses job 2 (permanent), panics on job 3, hangs on 4.
#[event_handler(
    name = "spans.each",
    batch = 10,
    retries = 1,
    backoff = "1s",
    timeout = "5s"
)]
async fn each(job: Job, clock: State<FakeClock>) -> Result<(), HandlerError> {
    match job.n {
        1 => Err(HandlerError::retry("backend down")),
        2 => Err(HandlerError::permanent("job 2 is refused")),
        3 => panic!("job 3 breaks the handler"),
        4 => {
            osa_events::Clock::sleep(&*clock, Duration::from_secs(60)).await;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Fails the odd jobs of its batch for good.
#[event_handler(name = "spans.batch", batch = 10)]
async fn batch(jobs: Batch<Job>) -> Result<BatchOutcome, HandlerError> {
    let mut outcome = BatchOutcome::new();
    for (index, job) in jobs.iter().enumerate() {
        if job.n % 2 == 1 {
            outcome.fail(index, HandlerError::permanent("odd"));
        }
    }
    Ok(outcome)
}

/// Completes job 1, asks to retry job 2 later, fails job 3 fatally (job 4 is never called).
#[event_handler(name = "spans.flow", batch = 10)]
async fn flow(job: Job) -> Result<(), HandlerError> {
    match job.n {
        2 => Err(HandlerError::retry_after(
            Duration::from_secs(10),
            "rate limited",
        )),
        3 => Err(HandlerError::fatal("the schema is wrong")),
        _ => Ok(()),
    }
}

async fn harness(handler: &str) -> (Harness, FakeClock) {
    let clock = FakeClock::new();
    let harness = Harness::builder()
        .clock(clock.clone())
        .resources(Resources::new().with(clock.clone()))
        .only([handler])
        .build()
        .await
        .unwrap();
    (harness, clock)
}

fn field<'a>(span: &'a CapturedSpan, name: &str) -> &'a str {
    span.field(name)
        .unwrap_or_else(|| panic!("no `{name}` on {span:#?}"))
}

#[tokio::test]
async fn a_publish_opens_a_producer_span_named_for_its_event() {
    let (harness, _clock) = harness("spans.each").await;
    let spans = Spans::capture();
    let id = harness.publish(&Job { n: 0 });
    let batch: Vec<Outgoing> = (5..8).map(|n| Outgoing::new(&Job { n }).unwrap()).collect();
    harness.publish_batch(&batch);

    let publishes = spans.named("publish");
    assert_eq!(publishes.len(), 2, "{publishes:#?}");
    let one = &publishes[0];
    assert_eq!(field(one, "otel.name"), "publish spans.test.job");
    assert_eq!(field(one, "otel.kind"), "producer");
    assert_eq!(field(one, "messaging.destination.name"), "spans.test.job");
    assert_eq!(field(one, "messaging.message.id"), id.to_string());
    assert_eq!(field(one, "messaging.batch.message_count"), "1");
    assert_eq!(field(one, "osa_events.published"), "1");
    assert_eq!(field(one, "osa_events.deliveries"), "1");
    assert!(one.closed);

    let many = &publishes[1];
    assert_eq!(
        many.field("messaging.message.id"),
        None,
        "no one id for a batch"
    );
    assert_eq!(field(many, "messaging.batch.message_count"), "3");
    assert_eq!(field(many, "osa_events.published"), "3");
}

#[tokio::test]
async fn a_claimed_batch_is_a_receive_span_with_one_process_span_per_event() {
    let (mut harness, _clock) = harness("spans.each").await;
    let ids: Vec<_> = [0, 5]
        .iter()
        .map(|&n| harness.publish(&Job { n }))
        .collect();
    let spans = Spans::capture();
    harness.step("spans.each").await;

    let receives = spans.named("receive");
    assert_eq!(receives.len(), 1, "{:#?}", spans.all());
    let receive = &receives[0];
    assert_eq!(field(receive, "otel.name"), "receive spans.each");
    assert_eq!(field(receive, "otel.kind"), "consumer");
    assert_eq!(field(receive, "messaging.destination.name"), "spans.each");
    assert_eq!(field(receive, "messaging.batch.message_count"), "2");
    assert_eq!(field(receive, "osa_events.event_type"), "spans.test.job");
    assert_eq!(field(receive, "osa_events.completed"), "2");
    assert_eq!(field(receive, "osa_events.dead_lettered"), "0");

    let processes = spans.otel_named("process spans.each");
    assert_eq!(processes.len(), 2);
    for (process, id) in processes.iter().zip(&ids) {
        assert_eq!(process.name, "process");
        assert_eq!(process.parent, Some(receive.index), "a child of its batch");
        assert_eq!(field(process, "otel.kind"), "consumer");
        assert_eq!(field(process, "messaging.message.id"), id.to_string());
        assert_eq!(field(process, "osa_events.attempt"), "1");
        assert_eq!(field(process, "osa_events.outcome"), "completed");
        assert_eq!(process.field("error.type"), None);
        assert!(process.closed);
    }
}

#[tokio::test]
async fn a_failed_call_records_its_outcome_and_error_type() {
    let (mut harness, clock) = harness("spans.each").await;
    for n in 1..=4 {
        harness.publish(&Job { n });
    }
    let spans = Spans::capture();
    let step = harness.step("spans.each");
    tokio::pin!(step);
    // Job 4 hangs until its timeout: let fake time pass while the step runs.
    loop {
        tokio::select! {
            _ = &mut step => break,
            () = tokio::task::yield_now() => clock.advance(Duration::from_secs(1)),
        }
    }

    let processes = spans.otel_named("process spans.each");
    let by_job: Vec<(&str, Option<&str>, Option<&str>)> = processes
        .iter()
        .map(|span| {
            (
                field(span, "osa_events.outcome"),
                span.field("error.type"),
                span.field("otel.status_code"),
            )
        })
        .collect();
    assert_eq!(
        by_job,
        [
            ("retried", Some("handler"), Some("ERROR")),
            ("dead_lettered", Some("handler"), Some("ERROR")),
            ("retried", Some("panic"), Some("ERROR")),
            ("retried", Some("timeout"), Some("ERROR")),
        ]
    );
    let receive = &spans.named("receive")[0];
    assert_eq!(field(receive, "osa_events.retried"), "3");
    assert_eq!(field(receive, "osa_events.dead_lettered"), "1");
}

#[tokio::test]
async fn retry_after_is_recorded_deferred_and_a_fatal_error_released_as_an_error() {
    let (mut harness, _clock) = harness("spans.flow").await;
    for n in 1..=4 {
        harness.publish(&Job { n });
    }
    let spans = Spans::capture();
    harness.step("spans.flow").await;

    let processes = spans.otel_named("process spans.flow");
    let by_job: Vec<(&str, Option<&str>, Option<&str>)> = processes
        .iter()
        .map(|span| {
            (
                field(span, "osa_events.outcome"),
                span.field("error.type"),
                span.field("otel.status_code"),
            )
        })
        .collect();
    assert_eq!(
        by_job,
        [
            ("completed", None, None),
            ("deferred", None, None),
            ("released", Some("handler"), Some("ERROR")),
        ],
        "job 4 is never called, so it has no process span"
    );
    let receive = &spans.named("receive")[0];
    assert_eq!(field(receive, "osa_events.completed"), "1");
    assert_eq!(field(receive, "osa_events.deferred"), "1");
    assert_eq!(field(receive, "osa_events.released"), "2");
}

#[tokio::test]
async fn a_batch_handler_has_one_process_span_for_its_call() {
    let (mut harness, _clock) = harness("spans.batch").await;
    for n in 0..4 {
        harness.publish(&Job { n });
    }
    let spans = Spans::capture();
    harness.step("spans.batch").await;

    let processes = spans.otel_named("process spans.batch");
    assert_eq!(processes.len(), 1, "{:#?}", spans.all());
    let process = &processes[0];
    assert_eq!(field(process, "messaging.batch.message_count"), "4");
    assert_eq!(field(process, "osa_events.outcome"), "dead_lettered");
    assert_eq!(field(process, "error.type"), "handler");
    let receive = &spans.named("receive")[0];
    assert_eq!(process.parent, Some(receive.index));
    assert_eq!(field(receive, "osa_events.completed"), "2");
    assert_eq!(field(receive, "osa_events.dead_lettered"), "2");
}

#[tokio::test]
async fn no_span_carries_a_payload_value() {
    let (mut harness, _clock) = harness("spans.each").await;
    let spans = Spans::capture();
    harness.publish(&Job { n: 424_242 });
    harness.step("spans.each").await;
    let all = spans.all();
    assert!(all.len() >= 3, "{all:#?}");
    for span in &all {
        for value in span.fields.values() {
            assert!(!value.contains("424242"), "{span:#?}");
        }
    }
}
