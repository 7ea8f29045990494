//! The model's checks on their own: each rule, broken on purpose, is reported.

use std::time::{Duration, SystemTime};

use osa_events::store::{Delivery, Failure, Fence};
use uuid::Uuid;

use super::Model;
use crate::FakeClock;
use crate::sim::Behaviour;

const TIMEOUT: Duration = Duration::from_secs(30);

fn model() -> (Model, FakeClock) {
    let clock = FakeClock::new();
    (Model::new(clock.clone(), 1, 2, Behaviour::default()), clock)
}

fn delivery(position: i64, attempt: u32) -> Delivery {
    Delivery {
        fence: Fence {
            position,
            token: Uuid::new_v4(),
        },
        attempt,
        last_error: None,
        event_id: Uuid::new_v4(),
        event_type: "job".into(),
        event_version: 1,
        routing_key: None,
        payload: "{}".into(),
        metadata: "{}".into(),
        published_at: SystemTime::UNIX_EPOCH,
    }
}

/// `worker` claims `delivery` through the model.
fn claim(model: &mut Model, worker: usize, delivery: &Delivery) {
    model.current = Some(worker);
    model.on_claim(TIMEOUT, std::slice::from_ref(delivery));
    model.current = None;
}

/// A retryable failure of `fence`, due again in 5 s.
fn retry_in_5s(fence: Fence) -> Failure {
    Failure {
        fence,
        error: "boom".into(),
        retry_in: Some(Duration::from_secs(5)),
    }
}

#[test]
fn a_claim_of_a_live_claim_is_reported_and_of_an_expired_one_counted() {
    let (mut model, _) = model();
    claim(&mut model, 0, &delivery(1, 1));
    assert!(model.violations.is_empty());
    claim(&mut model, 1, &delivery(1, 2));
    assert_eq!(model.violations.len(), 1, "{:?}", model.violations);
    assert!(model.violations[0].starts_with("position 1 was claimed while w0 held it until"));

    let (mut model, clock) = self::model();
    claim(&mut model, 0, &delivery(1, 1));
    clock.advance(TIMEOUT);
    claim(&mut model, 1, &delivery(1, 2));
    assert!(model.violations.is_empty(), "{:?}", model.violations);
    assert_eq!(model.stats.reclaims, 1);
}

#[test]
fn a_stale_completion_the_store_accepts_is_reported() {
    let (mut model, clock) = model();
    let first = delivery(1, 1);
    claim(&mut model, 0, &first);
    clock.advance(TIMEOUT);
    claim(&mut model, 1, &delivery(1, 2));
    model.on_complete(&[first.fence], 0);
    assert!(
        model.violations.is_empty(),
        "a refused stale write is right"
    );
    assert_eq!(model.stats.refused_completions, 1);
    model.on_complete(&[first.fence], 1);
    assert_eq!(model.violations.len(), 1);
    assert!(model.violations[0].starts_with("the store completed 1 of [1]"));
}

#[test]
fn a_failure_of_a_current_claim_the_store_refuses_is_reported() {
    let (mut model, _) = model();
    let claimed = delivery(1, 1);
    claim(&mut model, 0, &claimed);
    model.on_fail(&[retry_in_5s(claimed.fence)], 0);
    assert_eq!(model.violations.len(), 1, "{:?}", model.violations);
}

#[test]
fn a_claim_before_the_backoff_ends_is_reported() {
    let (mut model, clock) = model();
    let claimed = delivery(1, 1);
    claim(&mut model, 0, &claimed);
    model.on_fail(&[retry_in_5s(claimed.fence)], 1);
    clock.advance(Duration::from_secs(4));
    claim(&mut model, 1, &delivery(1, 2));
    assert_eq!(model.violations.len(), 1, "{:?}", model.violations);
    assert!(model.violations[0].contains("before its backoff ended"));
}

#[test]
fn an_extend_the_store_answers_wrongly_is_reported() {
    let (mut model, _) = model();
    let claimed = delivery(1, 1);
    claim(&mut model, 0, &claimed);
    model.current = Some(0);
    model.on_extend(&[claimed.fence], TIMEOUT, &[]);
    assert_eq!(
        model.violations,
        ["extend of [1] held []; the model expected [1]"]
    );
}

#[test]
fn a_healthy_worker_whose_claim_expired_before_its_heartbeat_is_reported() {
    let (mut model, clock) = model();
    let claimed = delivery(1, 1);
    claim(&mut model, 0, &claimed);
    clock.advance(TIMEOUT);
    claim(&mut model, 1, &delivery(1, 2));
    model.current = Some(0);
    model.on_extend(&[claimed.fence], TIMEOUT, &[]);
    assert_eq!(model.violations.len(), 1, "{:?}", model.violations);
    assert!(model.violations[0].contains("its heartbeat came too late"));
}

#[test]
fn two_healthy_workers_in_one_delivery_are_reported_a_stalled_one_is_not() {
    let (mut model, clock) = model();
    claim(&mut model, 0, &delivery(1, 1));
    model.current = Some(0);
    model.enter(1, 1);
    // The store (wrongly) let w1 claim it too, and the model said so already.
    clock.advance(TIMEOUT);
    claim(&mut model, 1, &delivery(1, 2));
    model.current = Some(1);
    model.enter(1, 2);
    assert_eq!(model.violations.len(), 1, "{:?}", model.violations);
    assert!(model.violations[0].contains("at once, and neither has stalled"));

    let (mut model, clock) = self::model();
    claim(&mut model, 0, &delivery(1, 1));
    model.current = Some(0);
    model.enter(1, 1);
    model.healthy[0] = false; // w0 stalled mid-call
    clock.advance(TIMEOUT);
    claim(&mut model, 1, &delivery(1, 2));
    model.current = Some(1);
    model.enter(1, 2);
    assert!(model.violations.is_empty(), "{:?}", model.violations);
    assert_eq!(model.stats.stale_overlaps, 1);
}
