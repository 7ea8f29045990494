//! Delayed publish (`Outgoing::deliver_after`, `deliver_at`) on the in-memory store and a fake
//! clock: a delayed delivery waits for its time on the store's clock, and only that long; a delay
//! the `Outgoing` refuses publishes nothing.

use std::time::{Duration, SystemTime};

use osa_events::prelude::*;
use osa_events::{Due, Error, MAX_DELIVERY_DELAY, Metadata, Outgoing, Tx};
use osa_events_testing::{DeliveryStatus, Harness};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "delay.test.order_placed")]
struct OrderPlaced {
    order: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "delay.test.payment_timeout")]
struct PaymentTimeout {
    order: u32,
}

/// How long an order waits for its payment.
const PAYMENT_WINDOW: Duration = Duration::from_secs(15 * 60);

#[event_handler(name = "delay.reminder")]
async fn reminder(_timeout: PaymentTimeout) -> Result<(), HandlerError> {
    Ok(())
}

/// A saga step: schedules the order's payment timeout in the same transaction as its completion.
#[event_handler(name = "delay.schedule_timeout")]
async fn schedule_timeout(placed: OrderPlaced, mut tx: Tx) -> Result<(), HandlerError> {
    let timeout = Outgoing::new(&PaymentTimeout {
        order: placed.order,
    })?
    .deliver_after(PAYMENT_WINDOW)?;
    tx.publish_batch(std::slice::from_ref(&timeout)).await?;
    Ok(())
}

async fn harness(only: &[&str]) -> Harness {
    Harness::builder()
        .only(only.iter().copied())
        .build()
        .await
        .expect("the harness builds")
}

fn timeout_after(delay: Duration) -> Outgoing {
    Outgoing::new(&PaymentTimeout { order: 1 })
        .unwrap()
        .deliver_after(delay)
        .unwrap()
}

#[tokio::test]
async fn a_delayed_delivery_is_handled_once_the_fake_clock_reaches_its_time() {
    let mut harness = harness(&["delay.reminder"]).await;
    assert_eq!(harness.publish_batch(&[timeout_after(PAYMENT_WINDOW)]), 1);
    let metadata = harness.store().events()[0].metadata.clone().unwrap();
    assert_eq!(
        serde_json::from_str::<Metadata>(&metadata).unwrap().due(),
        Some(Due::After(PAYMENT_WINDOW)),
        "the metadata records the delay: {metadata}"
    );
    assert_eq!(
        harness.deliveries("delay.reminder")[0].status,
        DeliveryStatus::Pending
    );
    assert!(harness.step("delay.reminder").await.is_empty(), "not due");

    harness.advance(PAYMENT_WINDOW - Duration::from_millis(1));
    assert!(
        harness.step("delay.reminder").await.is_empty(),
        "1 ms early"
    );
    harness.advance(Duration::from_millis(1));
    let attempts = harness.step("delay.reminder").await;
    assert_eq!(attempts.len(), 1);
    assert!(attempts[0].is_handled());
}

#[tokio::test]
async fn a_delivery_due_at_a_time_waits_for_that_time_on_the_store_clock() {
    let mut harness = harness(&["delay.reminder"]).await;
    // The store reads wall-clock times through its clock: a fake one stands still until advanced.
    let at = SystemTime::now() + Duration::from_secs(3600);
    let outgoing = Outgoing::new(&PaymentTimeout { order: 7 })
        .unwrap()
        .deliver_at(at)
        .unwrap();
    assert_eq!(outgoing.due(), Due::At(at));
    harness.publish_batch(&[outgoing]);
    harness.advance(Duration::from_secs(3500));
    assert!(harness.step("delay.reminder").await.is_empty(), "not yet");
    harness.advance(Duration::from_secs(101));
    assert_eq!(harness.step("delay.reminder").await.len(), 1);
}

#[tokio::test]
async fn drain_advances_the_clock_to_a_delayed_delivery() {
    let mut harness = harness(&["delay.reminder"]).await;
    harness.publish(&PaymentTimeout { order: 0 });
    harness.publish_batch(&[timeout_after(Duration::from_secs(90))]);
    harness.drain().await;
    harness.assert_handled("delay.reminder", 2);
    assert!(
        harness.elapsed() >= Duration::from_secs(90),
        "drained at its time, after {:?}",
        harness.elapsed()
    );
}

#[tokio::test]
async fn a_handler_schedules_a_timeout_that_comes_due_after_its_delay() {
    let mut harness = harness(&["delay.schedule_timeout", "delay.reminder"]).await;
    harness.publish(&OrderPlaced { order: 42 });
    assert_eq!(harness.step("delay.schedule_timeout").await.len(), 1);
    assert_eq!(harness.deliveries("delay.reminder").len(), 1, "published");
    assert!(
        harness.step("delay.reminder").await.is_empty(),
        "the timeout waits for the payment window"
    );
    harness.advance(PAYMENT_WINDOW);
    let fired = harness.step("delay.reminder").await;
    assert_eq!(fired.len(), 1);
    assert!(fired[0].is_handled());
}

#[test]
fn a_delay_past_the_limit_is_refused_when_the_outgoing_is_built() {
    let event = PaymentTimeout { order: 1 };
    for delay in [MAX_DELIVERY_DELAY + Duration::from_secs(1), Duration::MAX] {
        let error = Outgoing::new(&event)
            .unwrap()
            .deliver_after(delay)
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::DeliveryDelayTooLong { event_type: "delay.test.payment_timeout", delay: d, limit }
                    if d == delay && limit == MAX_DELIVERY_DELAY
            ),
            "{error:?}"
        );
    }
    let message = Outgoing::new(&event)
        .unwrap()
        .deliver_after(MAX_DELIVERY_DELAY * 2)
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with(
            "cannot publish `delay.test.payment_timeout`: its delivery delay of 7300 days is over the limit of 3650 days"
        ),
        "{message}"
    );

    let too_far = SystemTime::now() + MAX_DELIVERY_DELAY + Duration::from_secs(86_400);
    assert!(matches!(
        Outgoing::new(&event).unwrap().deliver_at(too_far),
        Err(Error::DeliveryDelayTooLong { .. })
    ));
    let at_the_limit = Outgoing::new(&event)
        .unwrap()
        .deliver_after(MAX_DELIVERY_DELAY)
        .unwrap();
    assert_eq!(at_the_limit.due(), Due::After(MAX_DELIVERY_DELAY));
    let long_past = Outgoing::new(&event)
        .unwrap()
        .deliver_at(SystemTime::UNIX_EPOCH - Duration::from_secs(1))
        .unwrap();
    assert_eq!(long_past.due().at_epoch_seconds(), Some(0.0), "due at once");
    assert_eq!(Outgoing::new(&event).unwrap().due(), Due::Now);
}
