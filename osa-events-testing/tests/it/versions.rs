//! Event versions on the in-memory store: a handler and a projection of version 2 receive version-1
//! events upcast through `#[event(previous = ...)]`; a handler of version 1 defers a version-2
//! event (a rolling deploy) instead of dead-lettering it, and the attempt is not counted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::prelude::*;
use osa_events_testing::{AttemptOutcome, DeliveryStatus, Harness, RawEvent};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "versions.order.placed")]
struct OrderPlacedV1 {
    id: u64,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "versions.order.placed", version = 2, previous = OrderPlacedV1)]
struct OrderPlacedV2 {
    id: u64,
    cents: u64,
}

impl From<OrderPlacedV1> for OrderPlacedV2 {
    fn from(v1: OrderPlacedV1) -> Self {
        Self {
            id: v1.id,
            cents: 0,
        }
    }
}

/// The current version: three versions in one chain.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "versions.order.placed", version = 3, previous = OrderPlacedV2)]
struct OrderPlaced {
    id: u64,
    cents: u64,
    currency: String,
}

impl From<OrderPlacedV2> for OrderPlaced {
    fn from(v2: OrderPlacedV2) -> Self {
        Self {
            id: v2.id,
            cents: v2.cents,
            currency: "EUR".into(),
        }
    }
}

/// What the old code of a rolling deploy knows: version 1 only.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "versions.order.shipped")]
struct ShippedV1 {
    id: u64,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "versions.order.shipped", version = 2)]
struct ShippedV2 {
    id: u64,
    carrier: String,
}

#[derive(Default)]
struct Seen(Mutex<Vec<OrderPlaced>>);

#[event_handler(name = "versions.each")]
async fn each(order: OrderPlaced, seen: State<Seen>) -> Result<(), HandlerError> {
    let Seen(seen) = &*seen;
    seen.lock().unwrap().push(order);
    Ok(())
}

#[projection(name = "versions.projection", batch = 10)]
async fn project(orders: Batch<OrderPlaced>, seen: State<Seen>) -> Result<(), HandlerError> {
    let Seen(seen) = &*seen;
    seen.lock().unwrap().extend(orders.iter().cloned());
    Ok(())
}

#[event_handler(name = "versions.old", retries = 0, backoff = "1s")]
async fn old(_shipped: ShippedV1) -> Result<(), HandlerError> {
    Ok(())
}

async fn harness(only: &str, seen: &Arc<Seen>) -> Harness {
    Harness::builder()
        .resources(Resources::new().with_arc(Arc::clone(seen)))
        .only([only])
        .build()
        .await
        .expect("the harness builds")
}

/// One event of every version of `versions.order.placed`, oldest first.
fn publish_every_version(harness: &Harness) {
    harness.publish(&OrderPlacedV1 { id: 1 });
    harness.publish(&OrderPlacedV2 { id: 2, cents: 200 });
    harness.publish(&OrderPlaced {
        id: 3,
        cents: 300,
        currency: "USD".into(),
    });
}

fn expected() -> Vec<OrderPlaced> {
    let order = |id, cents, currency: &str| OrderPlaced {
        id,
        cents,
        currency: currency.into(),
    };
    vec![
        order(1, 0, "EUR"),
        order(2, 200, "EUR"),
        order(3, 300, "USD"),
    ]
}

#[tokio::test]
async fn a_handler_receives_older_versions_upcast() {
    let seen = Arc::new(Seen::default());
    let mut harness = harness("versions.each", &seen).await;
    publish_every_version(&harness);
    harness.drain().await;
    harness.assert_handled("versions.each", 3);
    harness.assert_dead_lettered("versions.each", 0);
    assert_eq!(*seen.0.lock().unwrap(), expected());
}

#[tokio::test]
async fn a_projection_receives_older_versions_upcast() {
    let seen = Arc::new(Seen::default());
    let mut harness = harness("versions.projection", &seen).await;
    publish_every_version(&harness);
    assert_eq!(harness.project("versions.projection").await, Ok(3));
    assert_eq!(*seen.0.lock().unwrap(), expected());
}

#[tokio::test]
async fn an_older_version_not_declared_is_dead_lettered_naming_the_accepted_versions() {
    let seen = Arc::new(Seen::default());
    let mut harness = harness("versions.each", &seen).await;
    // A version 0 that no `previous` declares (the derive starts at 1; a foreign publisher may not).
    harness.store().publish_raw(&[RawEvent::from_json(
        "versions.order.placed",
        0,
        r#"{"id":0}"#,
    )]);
    harness.drain().await;
    let dead = harness.dead_letters("versions.each");
    assert_eq!(dead.len(), 1);
    let error = dead[0].error().unwrap();
    assert!(
        error.contains(
            "version 0 of `versions.order.placed` is unknown to this handler, which accepts versions 3, 2, 1"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_newer_version_is_deferred_without_counting_the_attempt() {
    let seen = Arc::new(Seen::default());
    let mut harness = harness("versions.old", &seen).await;
    harness.publish(&ShippedV2 {
        id: 1,
        carrier: "post".into(),
    });
    // `retries = 0`: a counted failure would be the last attempt, and dead.
    for round in 0..3 {
        let attempts = harness.step("versions.old").await;
        assert_eq!(attempts.len(), 1, "round {round}: claimed again");
        let AttemptOutcome::Retried { error, retry_in } = &attempts[0].outcome else {
            panic!("round {round}: not deferred: {:?}", attempts[0].outcome);
        };
        assert_eq!(
            attempts[0].attempt, 1,
            "round {round}: the attempt was counted"
        );
        assert!(
            error.contains(
                "version 2 of `versions.order.shipped` is newer than this handler's version 1"
            ) && error.contains("a deploy in progress?"),
            "{error}"
        );
        assert!(*retry_in >= Duration::from_millis(500) && *retry_in <= Duration::from_secs(1));
        let delivery = &harness.deliveries("versions.old")[0];
        assert_eq!(delivery.status, DeliveryStatus::Pending);
        assert_eq!(delivery.attempts, 0);
        assert_eq!(delivery.last_error.as_deref(), Some(error.as_str()));
        // Not due before its delay.
        assert!(harness.step("versions.old").await.is_empty());
        harness.advance(Duration::from_secs(1));
    }
    harness.assert_dead_lettered("versions.old", 0);
}

#[projection(name = "versions.old_projection", batch = 10)]
async fn old_projection(_shipped: Batch<ShippedV1>) -> Result<(), HandlerError> {
    Ok(())
}

#[tokio::test]
async fn a_projection_stops_at_a_newer_version_and_retries_its_batch() {
    let seen = Arc::new(Seen::default());
    let mut harness = harness("versions.old_projection", &seen).await;
    harness.publish(&ShippedV1 { id: 1 });
    harness.publish(&ShippedV2 {
        id: 2,
        carrier: "post".into(),
    });
    let failed = harness
        .project("versions.old_projection")
        .await
        .expect_err("the batch with the newer version fails");
    assert!(
        failed.error.contains(
            "version 2 of `versions.order.shipped` is newer than this handler's version 1"
        ),
        "{}",
        failed.error
    );
    // The checkpoint did not move: the old projection neither skips nor applies the new event.
    assert!(harness.project("versions.old_projection").await.is_err());
}
