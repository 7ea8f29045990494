//! Rules of publishing: the log, idempotency, fan-out and routing keys, and wake-ups.

use std::time::Duration;

use osa_events::Event;

use osa_events::store::{Store, Subscription};

use super::{
    Job, LONG, Other, StoreUnderTest, claim, outgoing, positions, publish_jobs, subscribe,
};

/// Registration upserts by name: a known name keeps its id, and takes a new filter when
/// re-pointed at a higher revision (see the registration rules).
pub async fn subscriptions_are_upserted_by_name_with_stable_ids<S: StoreUnderTest>(subject: &S) {
    let named = |name: &str, routing_key: Option<&str>| Subscription {
        name: name.to_owned(),
        event_type: Job::NAME.to_owned(),
        routing_key: routing_key.map(str::to_owned),
        config: serde_json::json!({}),
        revision: if routing_key.is_some() { 2 } else { 1 },
        start_from: Default::default(),
        ordered: None,
    };
    let store = subject.store();
    let ids = store
        .register(&[named("a", None), named("b", None)])
        .await
        .unwrap();
    assert_ne!(ids[0], ids[1]);
    let again = store
        .register(&[named("b", None), named("a", Some("only-this"))])
        .await
        .unwrap();
    assert_eq!(again, [ids[1], ids[0]], "same ids, in the order asked");

    publish_jobs(subject, 1).await;
    assert_eq!(
        subject.rows(ids[0]).await.len(),
        0,
        "`a` now filters on a key"
    );
    assert_eq!(subject.rows(ids[1]).await.len(), 1);
}

/// Publishing an id that is already logged, in an earlier batch or the same one, is a no-op.
pub async fn publishing_an_existing_id_is_a_noop<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "idempotent", None).await;
    let once = outgoing(&Job { n: 1 });
    assert_eq!(subject.publish(std::slice::from_ref(&once)).await, 1);
    let replay = outgoing(&Job { n: 99 }).with_id(once.id());
    assert_eq!(subject.publish(&[replay]).await, 0, "same id: skipped");
    let twin = outgoing(&Job { n: 2 });
    assert_eq!(subject.publish(&[twin.clone(), twin]).await, 1);
    assert_eq!(subject.event_count().await, 2);

    let claimed = claim(subject, subscription, 10, LONG).await;
    let payloads: Vec<Job> = claimed
        .iter()
        .map(|delivery| serde_json::from_str(&delivery.payload).unwrap())
        .collect();
    assert_eq!(
        payloads,
        [Job { n: 1 }, Job { n: 2 }],
        "the first publish wins"
    );
}

/// Positions follow publish order, within a batch and across batches.
pub async fn positions_follow_publish_order<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "in-order", None).await;
    publish_jobs(subject, 50).await;
    publish_jobs(subject, 50).await;
    let claimed = claim(subject, subscription, 200, LONG).await;
    let order: Vec<u32> = claimed
        .iter()
        .map(|delivery| serde_json::from_str::<Job>(&delivery.payload).unwrap().n)
        .collect();
    let expected: Vec<u32> = (0..50).chain(0..50).collect();
    assert_eq!(order, expected);
    let positions = positions(&claimed);
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "positions strictly increase: {positions:?}"
    );
}

/// Each subscription of an event gets its own delivery, with its own claims, retries and dead
/// letters: what happens to one never touches the other.
pub async fn each_subscription_gets_its_own_delivery<S: StoreUnderTest>(subject: &S) {
    let vector = subscribe(subject, "vector", None).await;
    let keyword = subscribe(subject, "keyword", None).await;
    publish_jobs(subject, 1).await;
    let failing = claim(subject, vector, 10, LONG).await;
    let working = claim(subject, keyword, 10, LONG).await;
    assert_eq!((failing.len(), working.len()), (1, 1));
    assert_eq!(failing[0].fence.position, working[0].fence.position);
    assert_eq!((failing[0].attempt, working[0].attempt), (1, 1));

    let dead = osa_events::store::Failure {
        fence: failing[0].fence,
        error: "vector index down".into(),
        retry_in: None,
    };
    let store = subject.store();
    assert_eq!(store.fail(vector, &[dead]).await.unwrap(), 1);
    assert_eq!(
        store.complete(keyword, &[working[0].fence]).await.unwrap(),
        1
    );
    assert_eq!(subject.rows(vector).await.len(), 1, "the dead letter stays");
    assert_eq!(
        subject.rows(keyword).await.len(),
        0,
        "the completed one is gone"
    );
}

/// A subscription with a routing-key filter receives only events published with that key; one
/// without a filter receives every key and none.
pub async fn routing_keys_select_subscriptions<S: StoreUnderTest>(subject: &S) {
    let every_key = subscribe(subject, "every-key", None).await;
    let vector_only = subscribe(subject, "vector-only", Some("vector")).await;
    let keyword_only = subscribe(subject, "keyword-only", Some("keyword")).await;
    let routed = outgoing(&Job { n: 1 }).with_routing_key("vector");
    assert_eq!(subject.publish(&[routed, outgoing(&Job { n: 2 })]).await, 2);
    assert_eq!(subject.rows(every_key).await.len(), 2, "no filter: both");
    let vector = claim(subject, vector_only, 10, LONG).await;
    assert_eq!(vector.len(), 1, "vector filter: the vector event");
    assert_eq!(vector[0].routing_key.as_deref(), Some("vector"));
    assert_eq!(
        subject.rows(keyword_only).await.len(),
        0,
        "keyword filter: nothing"
    );
}

/// Events of another type are logged but delivered to no subscription of this one.
pub async fn other_event_types_are_not_delivered<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "jobs-only", None).await;
    assert_eq!(subject.publish(&[outgoing(&Other { n: 1 })]).await, 1);
    assert_eq!(subject.rows(subscription).await.len(), 0);
    assert!(claim(subject, subscription, 10, LONG).await.is_empty());
    assert_eq!(
        subject.event_count().await,
        1,
        "logged even with no subscriber"
    );
}

/// Deliveries are created when an event is published: a subscription registered afterwards does
/// not receive earlier events.
pub async fn deliveries_are_created_at_publish_time<S: StoreUnderTest>(subject: &S) {
    let early = subscribe(subject, "early", None).await;
    publish_jobs(subject, 1).await;
    let late = subscribe(subject, "late", None).await;
    publish_jobs(subject, 1).await;
    assert_eq!(subject.rows(early).await.len(), 2);
    assert_eq!(
        subject.rows(late).await.len(),
        1,
        "only what was published after"
    );
}

/// A store that offers wake-ups sends one, promptly, for a subscription that got work.
pub async fn publish_wakes_listening_workers<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "woken", None).await;
    let Some(listening) = subject.store().wake_ups() else {
        return; // polling alone is allowed
    };
    let mut wake_ups = listening.await.expect("start listening");
    publish_jobs(subject, 1).await;
    let woken = tokio::time::timeout(Duration::from_secs(5), wake_ups.next())
        .await
        .expect("a wake-up within 5 s of the publish")
        .expect("the wake-up source works");
    assert_eq!(woken, Some(subscription));
}

/// An event whose payload is whatever JSON text it holds, written out as is.
#[derive(osa_events::Event, serde::Serialize, serde::Deserialize, Debug)]
#[event(name = "contract.raw_json")]
#[serde(transparent)]
struct RawJson {
    json: Box<serde_json::value::RawValue>,
}

/// Payloads and metadata come back as PostgreSQL's `jsonb` returns them, whatever text was
/// published: object keys ordered by length then bytes, only the last of duplicate keys, numbers
/// as `numeric` prints them (`1e2` as `100`, `0.10e1` as `1.0`), one space after `:` and `,`,
/// strings re-escaped. A payload that decoded on one store and failed on another (a duplicate
/// field, `1e2` for a `u64`) would make unit tests on the in-memory store lie.
pub async fn payloads_come_back_as_jsonb_returns_them<S: StoreUnderTest>(subject: &S) {
    let subscription = subject
        .store()
        .register(&[Subscription {
            name: "jsonb".to_owned(),
            event_type: RawJson::NAME.to_owned(),
            routing_key: None,
            config: serde_json::json!({}),
            revision: 1,
            start_from: Default::default(),
            ordered: None,
        }])
        .await
        .expect("register")[0];
    let written = r#"{"zz": 1e2, "a": {"b": 1.50, "b": -0},
        "a": {"y": [1E+2, 0.10e1, -1.5e-3], "xx": "\u00e9\/\t"}, "big": 12345678901234567890123}"#;
    let event = RawJson {
        json: serde_json::value::RawValue::from_string(written.to_owned()).expect("JSON"),
    };
    let draft = outgoing(&event)
        .with_metadata(
            osa_events::Metadata::new()
                .with_extra("aa", 2)
                .with_extra("b", 1),
        )
        .expect("metadata without NUL");
    assert_eq!(subject.publish(&[draft]).await, 1);

    let claimed = claim(subject, subscription, 1, LONG).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed[0].payload,
        r#"{"a": {"y": [100, 1.0, -0.0015], "xx": "é/\t"}, "zz": 100, "big": 12345678901234567890123}"#
    );
    assert_eq!(claimed[0].metadata, r#"{"b": 1, "aa": 2}"#);
}

/// How far a delayed rule's deliveries are delayed: long enough that a store on real time cannot
/// reach it by the time the rule looks the first time.
const DELAY: Duration = Duration::from_millis(800);

/// A delayed event (`Outgoing::deliver_after`, `deliver_at`) is logged at once, and its
/// deliveries are claimable only once due by the store's clock; a time already past is due at
/// once, and the claim order is due time, then position.
pub async fn a_delayed_delivery_is_claimable_only_once_due<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "delayed", None).await;
    let batch = [
        outgoing(&Job { n: 0 }).deliver_after(DELAY).unwrap(),
        outgoing(&Job { n: 1 })
            .deliver_at(std::time::SystemTime::now() + DELAY)
            .unwrap(),
        outgoing(&Job { n: 2 })
            .deliver_at(std::time::SystemTime::now() - Duration::from_secs(3600))
            .unwrap(),
        outgoing(&Job { n: 3 }),
        outgoing(&Job { n: 4 })
            .deliver_after(Duration::ZERO)
            .unwrap(),
    ];
    assert_eq!(subject.publish(&batch).await, 5);
    assert_eq!(subject.event_count().await, 5, "logged at once");
    assert_eq!(
        subject.rows(subscription).await.len(),
        5,
        "delivered at once"
    );
    let due: Vec<u32> = claim(subject, subscription, 10, LONG)
        .await
        .iter()
        .map(|delivery| serde_json::from_str::<Job>(&delivery.payload).unwrap().n)
        .collect();
    assert_eq!(due, [2, 3, 4], "a past time and a zero delay are due now");
    assert!(
        claim(subject, subscription, 10, LONG).await.is_empty(),
        "not due before its time"
    );
    subject.pass(DELAY + Duration::from_millis(200)).await;
    let later: Vec<u32> = claim(subject, subscription, 10, LONG)
        .await
        .iter()
        .map(|delivery| serde_json::from_str::<Job>(&delivery.payload).unwrap().n)
        .collect();
    assert_eq!(later.len(), 2, "both due once their time has come");
    assert!(later.contains(&0) && later.contains(&1), "{later:?}");
}
