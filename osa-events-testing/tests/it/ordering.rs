//! Ordered handlers on the in-memory store: the harness steps them on fake time, and a runtime
//! with eight claim loops keeps each key in order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::operations::StartFrom;
use osa_events::prelude::*;
use osa_events::{Error, Outgoing, Runtime};
use osa_events_testing::{Harness, InMemoryStore};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "ordering.test.step", ordering_key = "key")]
struct Step {
    key: String,
    n: u32,
}

fn step(key: &str, n: u32) -> Step {
    Step {
        key: key.to_owned(),
        n,
    }
}

/// Fails the first attempt of `a`'s first step.
#[event_handler(
    name = "ordering.harness",
    ordered = "block",
    batch = 8,
    backoff = "1s"
)]
async fn stepped(step: Step, ctx: Ctx) -> Result<(), HandlerError> {
    if step.key == "a" && step.n == 0 && ctx.attempt() == 1 {
        return Err(HandlerError::retry("a's first step fails once"));
    }
    Ok(())
}

/// The calls, in the order they began.
#[derive(Default)]
struct Calls(Mutex<Vec<(String, u32)>>);

#[event_handler(
    name = "ordering.runtime",
    ordered = "skip",
    batch = 4,
    concurrency = 8,
    poll = "20ms"
)]
async fn recorded(step: Step, calls: State<Calls>) -> Result<(), HandlerError> {
    calls.0.lock().unwrap().push((step.key.clone(), step.n));
    // Long enough for other loops to claim meanwhile, were the key not held back.
    tokio::time::sleep(Duration::from_millis(2)).await;
    Ok(())
}

#[tokio::test]
async fn a_failed_head_holds_back_its_key_and_not_the_others() {
    let mut harness = Harness::builder()
        .only(["ordering.harness"])
        .build()
        .await
        .unwrap();
    for (key, n) in [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)] {
        harness.publish(&step(key, n));
    }
    let handled = |attempts: &[osa_events_testing::Attempt]| -> Vec<(String, u32, bool)> {
        attempts
            .iter()
            .map(|attempt| {
                let step: Step = attempt.event();
                (step.key, step.n, attempt.is_handled())
            })
            .collect()
    };
    let first = harness.step("ordering.harness").await;
    assert_eq!(
        handled(&first),
        [("a".into(), 0, false), ("b".into(), 0, true)],
        "the heads of a and b; a's fails"
    );
    let second = harness.step("ordering.harness").await;
    assert_eq!(
        handled(&second),
        [("b".into(), 1, true)],
        "b goes on, a waits for its head's retry"
    );
    assert!(harness.step("ordering.harness").await.is_empty());
    harness.advance(Duration::from_secs(1));
    let retried = harness.step("ordering.harness").await;
    assert_eq!(handled(&retried), [("a".into(), 0, true)]);
    harness.drain().await;
    let a: Vec<u32> = harness
        .handled_events::<Step>("ordering.harness")
        .into_iter()
        .filter(|step| step.key == "a")
        .map(|step| step.n)
        .collect();
    assert_eq!(a, [0, 1, 2], "a's steps in order");
    harness.assert_idle();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_claim_loops_keep_every_key_in_publish_order() {
    const KEYS: u32 = 12;
    const STEPS: u32 = 15;
    let store = InMemoryStore::new();
    let calls = Arc::new(Calls::default());
    let runtime = Runtime::builder(store.clone())
        .only(["ordering.runtime"])
        .resources(Resources::new().with_arc(calls.clone()))
        .handle_signals(false)
        .build()
        .unwrap();
    runtime.register().await.unwrap();
    let shutdown = runtime.shutdown_token();
    let running = tokio::spawn(runtime.run());
    // Keys interleaved: each batch of the stream touches every key.
    for n in 0..STEPS {
        let batch: Vec<Outgoing> = (0..KEYS)
            .map(|key| Outgoing::new(&step(&format!("k{key}"), n)).unwrap())
            .collect();
        store.publish_batch(&batch);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while calls.0.lock().unwrap().len() < (KEYS * STEPS) as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all handled in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let calls = calls.0.lock().unwrap();
    for key in 0..KEYS {
        let key = format!("k{key}");
        let order: Vec<u32> = calls
            .iter()
            .filter(|(called, _)| *called == key)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(order, (0..STEPS).collect::<Vec<_>>(), "key {key}");
    }
}

#[tokio::test]
async fn an_ordered_handler_cannot_start_from_its_history() {
    let error = Runtime::builder(InMemoryStore::new())
        .only(["ordering.runtime"])
        .start_from("ordering.runtime", StartFrom::Beginning)
        .resources(Resources::new().with(Calls::default()))
        .handle_signals(false)
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "invalid configuration: handler `ordering.runtime` is ordered and starts from Beginning: \
         a history copied while new events are handled would join each key after them, out of \
         order; start it from now (a replay into it joins each key at its end)"
    );
}
