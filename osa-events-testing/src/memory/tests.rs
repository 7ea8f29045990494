//! What the contract suite does not cover: wake-ups, inspection, and raw payloads.

use std::time::Duration;

use osa_events::Event;

use osa_events::store::{ClaimRequest, Failure, Store, Subscription, SubscriptionId};
use serde::{Deserialize, Serialize};

use super::{DeliveryStatus, InMemoryStore, RawEvent};
use crate::FakeClock;

#[derive(Event, Serialize, Deserialize)]
#[event(name = "memory.test.job")]
struct Job {
    n: u32,
}

async fn subscribed(store: &InMemoryStore, name: &str) -> SubscriptionId {
    let subscription = Subscription {
        name: name.to_owned(),
        event_type: Job::NAME.to_owned(),
        routing_key: None,
        config: serde_json::json!({}),
        revision: 1,
        start_from: Default::default(),
        ordered: None,
    };
    store.register(&[subscription]).await.unwrap()[0]
}

fn request(subscription: SubscriptionId) -> ClaimRequest<'static> {
    ClaimRequest {
        subscription,
        limit: 10,
        claim_timeout: Duration::from_secs(60),
        worker: "unit",
    }
}

#[tokio::test]
async fn publish_wakes_the_subscriptions_that_got_work() {
    let store = InMemoryStore::new();
    let first = subscribed(&store, "first").await;
    let second = subscribed(&store, "second").await;
    let mut wake_ups = store.wake_ups().expect("in-memory wake-ups").await.unwrap();
    store.publish(&Job { n: 1 }).unwrap();
    let mut woken = vec![
        wake_ups.next().await.unwrap(),
        wake_ups.next().await.unwrap(),
    ];
    woken.sort();
    assert_eq!(woken, [Some(first), Some(second)]);

    // A batch wakes each subscription once.
    let batch: Vec<RawEvent> = (0..3).map(|n| RawEvent::new(&Job { n }).unwrap()).collect();
    store.publish_raw(&batch);
    let mut woken = vec![
        wake_ups.next().await.unwrap(),
        wake_ups.next().await.unwrap(),
    ];
    woken.sort();
    assert_eq!(woken, [Some(first), Some(second)]);
    assert!(
        tokio::time::timeout(Duration::from_millis(20), wake_ups.next())
            .await
            .is_err(),
        "no third hint"
    );
}

#[tokio::test]
async fn a_lagging_listener_is_told_to_look_everywhere() {
    let store = InMemoryStore::new();
    subscribed(&store, "busy").await;
    let mut wake_ups = store.wake_ups().unwrap().await.unwrap();
    for n in 0..1100 {
        store.publish(&Job { n }).unwrap();
    }
    assert_eq!(wake_ups.next().await.unwrap(), None);
}

#[tokio::test]
async fn inspection_shows_status_attempts_and_errors() {
    let clock = FakeClock::new();
    let store = InMemoryStore::with_clock(clock.clone());
    let subscription = subscribed(&store, "inspected").await;
    assert_eq!(store.subscription_id("inspected"), Some(subscription));
    assert_eq!(store.subscription_id("unknown"), None);
    for n in 0..3 {
        store.publish(&Job { n }).unwrap();
    }
    let claimed = store.claim(request(subscription)).await.unwrap();
    let failures = [
        Failure {
            fence: claimed[0].fence,
            error: "poison".into(),
            retry_in: None,
        },
        Failure {
            fence: claimed[1].fence,
            error: "busy".into(),
            retry_in: Some(Duration::from_secs(5)),
        },
    ];
    assert_eq!(store.fail(subscription, &failures).await.unwrap(), 2);

    let rows = store.deliveries(subscription);
    let summary: Vec<_> = rows
        .iter()
        .map(|row| (row.status, row.attempts, row.last_error.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            (DeliveryStatus::Dead, 1, Some("poison")),
            (DeliveryStatus::Pending, 1, Some("busy")),
            (DeliveryStatus::Claimed, 1, None),
        ]
    );
    assert_eq!(rows[1].run_at, clock.now() + Duration::from_secs(5));
    assert_eq!(rows[2].claimed_by.as_deref(), Some("unit"));
    assert_eq!(store.dead_letters(subscription).len(), 1);
    assert_eq!(store.count(subscription, None), 3);
    assert_eq!(store.count(subscription, Some(DeliveryStatus::Pending)), 1);
    assert_eq!(store.events().len(), 3);
}

#[tokio::test]
async fn raw_events_keep_payloads_no_type_would_produce() {
    let store = InMemoryStore::new();
    let subscription = subscribed(&store, "raw").await;
    let raw = RawEvent::from_json(Job::NAME, 7, r#"{"n":"not a number"}"#)
        .with_metadata(serde_json::json!({ "trace": "t-1" }));
    assert_eq!(store.publish_raw(std::slice::from_ref(&raw)), 1);
    let delivery = store.claim(request(subscription)).await.unwrap().remove(0);
    assert_eq!(delivery.event_id, raw.id);
    assert_eq!(delivery.event_version, 7);
    // As PostgreSQL's `jsonb` returns them.
    assert_eq!(delivery.payload, r#"{"n": "not a number"}"#);
    assert_eq!(delivery.metadata, r#"{"trace": "t-1"}"#);
    let stored = RawEvent {
        payload: delivery.payload,
        metadata: Some(delivery.metadata),
        ..raw
    };
    assert_eq!(store.events(), [stored]);
}

#[tokio::test]
async fn published_at_follows_the_store_clock() {
    let clock = FakeClock::new();
    let store = InMemoryStore::with_clock(clock.clone());
    let subscription = subscribed(&store, "timed").await;
    store.publish(&Job { n: 0 }).unwrap();
    clock.advance(Duration::from_secs(3600));
    store.publish(&Job { n: 1 }).unwrap();
    let claimed = store.claim(request(subscription)).await.unwrap();
    let gap = claimed[1]
        .published_at
        .duration_since(claimed[0].published_at)
        .unwrap();
    assert_eq!(gap, Duration::from_secs(3600));
}

#[tokio::test]
async fn an_oversized_payload_is_rejected_before_anything_is_written() {
    #[derive(Event, Serialize, Deserialize)]
    #[event(name = "memory.test.blob")]
    struct Blob {
        bytes: String,
    }

    let store = InMemoryStore::new();
    let big = Blob {
        bytes: "x".repeat(osa_events::DEFAULT_MAX_PAYLOAD_BYTES),
    };
    let error = store.publish(&big).unwrap_err();
    assert!(
        matches!(error, osa_events::Error::PayloadTooLarge { .. }),
        "{error:?}"
    );
    assert_eq!(store.events(), []);
}

#[tokio::test]
async fn nodes_not_seen_for_a_day_are_forgotten_at_the_next_record() {
    use osa_events::operations::{NodeRecord, Operations};

    let clock = FakeClock::new();
    let store = InMemoryStore::with_clock(clock.clone());
    let record = |name: &str| NodeRecord {
        id: uuid::Uuid::new_v4(),
        name: name.to_owned(),
        namespace: None,
        host: "host".to_owned(),
        pid: 1,
        version: "0".to_owned(),
        handlers: Vec::new(),
        projections: Vec::new(),
        started_at: std::time::SystemTime::now(),
        heartbeat: Duration::from_secs(10),
    };
    let old = record("old");
    store.record_node(&old).await.unwrap();
    clock.advance(NodeRecord::STALE_AFTER);
    assert_eq!(store.nodes().await.unwrap().len(), 1, "kept for a day");
    clock.advance(Duration::from_secs(1));
    assert!(
        store.nodes().await.unwrap().is_empty(),
        "not shown once stale"
    );
    store.record_node(&record("new")).await.unwrap();
    let names: Vec<String> = store
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|node| node.record.name)
        .collect();
    assert_eq!(names, ["new"]);
    store.record_node(&old).await.unwrap();
    assert_eq!(
        store.nodes().await.unwrap().len(),
        2,
        "the stale one was deleted, not kept"
    );
}

#[tokio::test]
async fn operations_report_times_on_the_store_clock() {
    use osa_events::operations::Operations;

    let clock = FakeClock::new();
    let store = InMemoryStore::with_clock(clock.clone());
    let subscription = subscribed(&store, "timed").await;
    let before = store.status().await.unwrap().at;
    clock.advance(Duration::from_secs(90));
    store.publish(&Job { n: 1 }).unwrap();
    let claimed = store.claim(request(subscription)).await.unwrap();
    let at = store.status().await.unwrap().at;
    assert_eq!(
        at.duration_since(before).ok(),
        Some(Duration::from_secs(90))
    );
    assert_eq!(
        claimed[0].published_at, at,
        "published_at is mapped the same way"
    );
    // The inherent `InMemoryStore::deliveries` (rows of one subscription) shadows the method.
    let query = osa_events::operations::DeliveryQuery::default();
    let listed = Operations::deliveries(&store, &query).await.unwrap();
    let summary = &listed.deliveries[0];
    assert_eq!((summary.updated_at, summary.published_at), (at, at));
    assert_eq!(
        summary.run_at.duration_since(at).ok(),
        Some(Duration::from_secs(60)),
        "a claimed delivery's run_at is its claim's expiry"
    );
}
