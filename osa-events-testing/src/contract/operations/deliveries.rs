//! Rules of listing deliveries and of the dead-letter commands.

use std::time::Duration;

use osa_events::Event;
use osa_events::operations::{DeliveryKey, DeliveryPage, DeliveryQuery, DeliveryState, Selector};
use osa_events::store::{Store, Subscription, SubscriptionId};

use super::super::{
    DeliveryStatus, EXPIRED, Job, LONG, Other, SHORT, StoreUnderTest, claim_one, outgoing,
    publish_jobs, subscribe,
};
use super::{expect_config, fail, kill, ops, store_now};

/// Registers a subscription to [`Other`] named `name`.
async fn subscribe_other<S: StoreUnderTest>(subject: &S, name: &str) -> SubscriptionId {
    let subscription = Subscription {
        name: name.to_owned(),
        event_type: Other::NAME.to_owned(),
        routing_key: None,
        config: serde_json::json!({}),
        revision: 1,
        start_from: Default::default(),
        ordered: None,
    };
    subject
        .store()
        .register(&[subscription])
        .await
        .expect("register")[0]
}

/// The page `query` lists.
async fn page<S: StoreUnderTest>(subject: &S, query: &DeliveryQuery) -> DeliveryPage {
    ops(subject)
        .deliveries(query)
        .await
        .expect("list deliveries")
}

/// The keys `selector` lists in `state`, in one page.
async fn listed<S: StoreUnderTest>(
    subject: &S,
    selector: Selector,
    state: Option<DeliveryState>,
) -> Vec<(SubscriptionId, i64)> {
    let query = DeliveryQuery {
        selector,
        state,
        page_size: 1000,
        ..DeliveryQuery::default()
    };
    page(subject, &query)
        .await
        .deliveries
        .iter()
        .map(|summary| (summary.key.subscription, summary.key.position))
        .collect()
}

/// Deliveries are listed in key order (subscription, position), in pages that end with the key
/// the next page starts after, and narrowed by handler, position, event type, state, error and
/// the time they last changed.
pub async fn deliveries_are_listed_by_each_filter_in_keyset_pages<S: StoreUnderTest>(subject: &S) {
    let a = subscribe(subject, "list.a", None).await;
    let b = subscribe(subject, "list.b", None).await;
    let other = subscribe_other(subject, "list.other").await;
    let jobs: Vec<_> = (0..3).map(|n| outgoing(&Job { n })).collect();
    let first_id = jobs[0].id();
    assert_eq!(subject.publish(&jobs).await, 3);
    assert_eq!(subject.publish(&[outgoing(&Other { n: 9 })]).await, 1);
    subject.pass(Duration::from_millis(200)).await;
    let mid = store_now(subject).await;
    subject.pass(Duration::from_millis(200)).await;
    let held = claim_one(subject, a, LONG).await;
    kill(subject, b, "kaput: no route").await;

    let mut query = DeliveryQuery {
        page_size: 3,
        ..DeliveryQuery::default()
    };
    let mut pages = Vec::new();
    loop {
        let listed = page(subject, &query).await;
        let keys: Vec<_> = listed
            .deliveries
            .iter()
            .map(|summary| (summary.key.subscription, summary.key.position))
            .collect();
        pages.push(keys);
        match listed.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
        assert!(pages.len() < 10, "pages end");
    }
    assert_eq!(
        pages,
        [
            vec![(a, 1), (a, 2), (a, 3)],
            vec![(b, 1), (b, 2), (b, 3)],
            vec![(other, 4)],
        ],
        "key order, three to a page, the last page short"
    );

    assert_eq!(
        listed(subject, Selector::handler("list.b"), None).await,
        [(b, 1), (b, 2), (b, 3)]
    );
    let second = Selector {
        position: Some(2),
        ..Selector::default()
    };
    assert_eq!(listed(subject, second, None).await, [(a, 2), (b, 2)]);
    let others = Selector {
        event_type: Some(Other::NAME.to_owned()),
        ..Selector::default()
    };
    assert_eq!(listed(subject, others, None).await, [(other, 4)]);
    let dead = listed(subject, Selector::default(), Some(DeliveryState::Dead)).await;
    assert_eq!(dead, [(b, 1)]);
    let claimed = listed(subject, Selector::default(), Some(DeliveryState::Claimed)).await;
    assert_eq!(claimed, [(a, 1)]);
    let kaput = Selector {
        error_contains: Some("no route".to_owned()),
        ..Selector::default()
    };
    assert_eq!(listed(subject, kaput, None).await, [(b, 1)]);
    let changed = Selector {
        changed_after: Some(mid),
        ..Selector::default()
    };
    assert_eq!(
        listed(subject, changed, None).await,
        [(a, 1), (b, 1)],
        "claimed and failed after `mid`"
    );
    let unchanged = Selector {
        changed_before: Some(mid),
        ..Selector::default()
    };
    assert_eq!(
        listed(subject, unchanged, None).await,
        [(a, 2), (a, 3), (b, 2), (b, 3), (other, 4)]
    );

    let summary = &page(subject, &DeliveryQuery::default()).await.deliveries[0];
    assert_eq!(
        summary.key,
        DeliveryKey {
            subscription: a,
            position: 1
        }
    );
    assert_eq!(summary.handler, "list.a");
    assert_eq!(summary.state, DeliveryState::Claimed);
    assert_eq!(summary.attempts, held.attempt);
    assert_eq!(summary.claimed_by.as_deref(), Some("contract"));
    assert_eq!(summary.event_id, first_id);
    assert_eq!(summary.event_type, Job::NAME);

    for page_size in [0, 1001] {
        let query = DeliveryQuery {
            page_size,
            ..DeliveryQuery::default()
        };
        expect_config(
            ops(subject).deliveries(&query).await,
            &format!("page_size {page_size}"),
        );
    }
}

/// One delivery is shown with its event: payload, metadata, version, routing key, position;
/// a completed one is not there.
pub async fn a_delivery_is_shown_with_its_event<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "shown", None).await;
    let draft = outgoing(&Job { n: 7 })
        .with_routing_key("k")
        .with_metadata(osa_events::Metadata::new().with_correlation_id("c-7"))
        .expect("metadata without NUL");
    assert_eq!(subject.publish(std::slice::from_ref(&draft)).await, 1);
    let detail = ops(subject)
        .delivery("shown", 1)
        .await
        .expect("show a delivery")
        .expect("the delivery exists");
    assert_eq!(detail.position, 1);
    assert_eq!(detail.event_version, 3);
    let payload: Job = serde_json::from_str(&detail.payload).expect("the payload decodes");
    assert_eq!(payload, Job { n: 7 });
    let metadata: serde_json::Value = serde_json::from_str(&detail.metadata).unwrap();
    assert_eq!(metadata["correlation_id"], "c-7");
    assert_eq!(detail.summary.event_id, draft.id());
    assert_eq!(detail.summary.routing_key.as_deref(), Some("k"));
    assert_eq!(detail.summary.state, DeliveryState::Pending);
    assert_eq!(detail.summary.attempts, 0);
    assert_eq!(detail.summary.claimed_by, None);

    let delivery = claim_one(subject, subscription, LONG).await;
    subject
        .store()
        .complete(subscription, &[delivery.fence])
        .await
        .unwrap();
    let gone = ops(subject).delivery("shown", 1).await.expect("show");
    assert_eq!(gone, None, "a completed delivery is gone");
}

/// Retrying a dead letter makes it pending and due now with its attempts reset, keeps its last
/// error for the handler to see, and leaves pending and claimed deliveries as they are.
pub async fn retry_dead_resets_attempts_makes_due_now_and_keeps_the_last_error<
    S: StoreUnderTest,
>(
    subject: &S,
) {
    let subscription = subscribe(subject, "retried", None).await;
    publish_jobs(subject, 3).await;
    let first = claim_one(subject, subscription, LONG).await;
    fail(subject, subscription, &first, "once", Some(LONG)).await;
    let held = claim_one(subject, subscription, LONG).await;
    assert_eq!(held.fence.position, 2);
    kill(subject, subscription, "gone for good").await; // position 3
    let before = subject.rows(subscription).await;

    let retried = ops(subject)
        .retry_dead(&Selector::handler("retried"))
        .await
        .expect("retry dead letters");
    assert_eq!(retried, 1, "one dead letter");
    let rows = subject.rows(subscription).await;
    assert_eq!(rows[0], before[0], "a scheduled delivery is not touched");
    assert_eq!(rows[1], before[1], "a claimed delivery is not touched");
    assert_eq!(rows[2].status, DeliveryStatus::Pending);
    assert_eq!(rows[2].attempts, 0, "attempts start again");
    assert_eq!(rows[2].last_error.as_deref(), Some("gone for good"));

    let again = claim_one(subject, subscription, LONG).await;
    assert_eq!(again.fence.position, 3, "due now");
    assert_eq!(again.attempt, 1);
    assert_eq!(again.last_error.as_deref(), Some("gone for good"));
    let retried = ops(subject)
        .retry_dead(&Selector::default())
        .await
        .expect("retry dead letters");
    assert_eq!(retried, 0, "no dead letter left");
    assert_eq!(
        subject
            .store()
            .complete(subscription, &[held.fence])
            .await
            .unwrap(),
        1,
        "the held claim still completes"
    );
}

/// Retry and purge take the dead letters a selector selects: by handler, error text, time of
/// death, event type and position, at most `limit` of them in key order.
pub async fn retry_and_purge_select_by_handler_error_time_event_type_position_and_limit<
    S: StoreUnderTest,
>(
    subject: &S,
) {
    let a = subscribe(subject, "select.a", None).await;
    let b = subscribe(subject, "select.b", None).await;
    publish_jobs(subject, 4).await;
    for error in ["timeout 1", "timeout 2", "refused 3", "refused 4"] {
        kill(subject, a, error).await;
    }
    subject.pass(Duration::from_millis(200)).await;
    let mid = store_now(subject).await;
    subject.pass(Duration::from_millis(200)).await;
    for error in ["timeout 1", "timeout 2", "refused 3", "refused 4"] {
        kill(subject, b, error).await;
    }
    let dead = |rows: Vec<super::super::Row>| -> Vec<i64> {
        rows.iter()
            .filter(|row| row.status == DeliveryStatus::Dead)
            .map(|row| row.position)
            .collect()
    };
    let ops = ops(subject);

    let refused = Selector {
        error_contains: Some("refused".to_owned()),
        ..Selector::handler("select.a")
    };
    assert_eq!(ops.retry_dead(&refused).await.unwrap(), 2);
    assert_eq!(dead(subject.rows(a).await), [1, 2]);

    let first = Selector {
        position: Some(1),
        ..Selector::default()
    };
    assert_eq!(
        ops.purge_dead(&first).await.unwrap(),
        2,
        "position 1 of both"
    );
    assert_eq!(dead(subject.rows(a).await), [2]);
    assert_eq!(dead(subject.rows(b).await), [2, 3, 4]);

    let recent_two = Selector {
        changed_after: Some(mid),
        limit: Some(2),
        ..Selector::default()
    };
    assert_eq!(ops.retry_dead(&recent_two).await.unwrap(), 2, "the limit");
    assert_eq!(
        dead(subject.rows(b).await),
        [4],
        "the first two in key order"
    );

    let older = Selector {
        changed_before: Some(mid),
        ..Selector::default()
    };
    assert_eq!(
        ops.purge_dead(&older).await.unwrap(),
        1,
        "a's position 2 died before `mid`"
    );
    assert_eq!(dead(subject.rows(a).await), Vec::<i64>::new());

    let others = Selector {
        event_type: Some(Other::NAME.to_owned()),
        ..Selector::default()
    };
    assert_eq!(
        ops.purge_dead(&others).await.unwrap(),
        0,
        "no dead letter of that type"
    );
    let jobs = Selector {
        event_type: Some(Job::NAME.to_owned()),
        ..Selector::default()
    };
    assert_eq!(ops.purge_dead(&jobs).await.unwrap(), 1);
    assert_eq!(dead(subject.rows(b).await), Vec::<i64>::new());
}

/// Purging deletes dead letters only, cancelling deletes stored-pending deliveries only: a
/// claimed one stays even once its claim expired, and its completion still lands.
pub async fn purge_dead_deletes_only_dead_letters_and_cancel_pending_only_pending_ones<
    S: StoreUnderTest,
>(
    subject: &S,
) {
    let subscription = subscribe(subject, "purged", None).await;
    publish_jobs(subject, 3).await;
    kill(subject, subscription, "dead").await; // position 1
    let held = claim_one(subject, subscription, SHORT).await; // position 2
    subject.pass(EXPIRED).await;
    assert_eq!(
        listed(subject, Selector::default(), Some(DeliveryState::Claimed)).await,
        [(subscription, 2)],
        "an expired claim is listed as claimed, as stored"
    );
    let positions = |rows: Vec<super::super::Row>| -> Vec<i64> {
        rows.iter().map(|row| row.position).collect()
    };
    let everything = Selector::default();
    assert_eq!(ops(subject).purge_dead(&everything).await.unwrap(), 1);
    assert_eq!(positions(subject.rows(subscription).await), [2, 3]);
    assert_eq!(ops(subject).cancel_pending(&everything).await.unwrap(), 1);
    assert_eq!(
        positions(subject.rows(subscription).await),
        [2],
        "an expired claim is still claimed, not pending"
    );
    assert_eq!(ops(subject).purge_dead(&everything).await.unwrap(), 0);
    assert_eq!(ops(subject).cancel_pending(&everything).await.unwrap(), 0);
    assert_eq!(
        subject
            .store()
            .complete(subscription, &[held.fence])
            .await
            .unwrap(),
        1,
        "the claim's completion lands"
    );
}
