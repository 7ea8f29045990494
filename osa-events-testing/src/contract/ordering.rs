//! Rules of per-key order ([`Store::orders_by_key`]): an ordered subscription's deliveries of one
//! ordering key are due one at a time, in publish order; the keys, and the deliveries without a
//! key, go on in parallel; what a dead head does is the subscription's [`Ordered`] policy.
//!
//! A store that does not order by key skips these rules, saying so; the runtime refuses ordered
//! handlers on it.

use std::time::Duration;

use osa_events::Ordered;
use osa_events::operations::{DeliveryQuery, DeliveryState, Operations, Replay, Selector};
use osa_events::store::{Delivery, Failure, Store, Subscription, SubscriptionId};
use osa_events::{Event, Outgoing};

use super::{
    DeliveryStatus, EXPIRED, Job, LONG, SHORT, StoreUnderTest, claim, outgoing, subscribe,
};

/// Whether the store orders by key; when it does not, says that the rule is skipped.
fn orders<S: StoreUnderTest>(subject: &S, rule: &str) -> bool {
    let orders = subject.store().orders_by_key();
    if !orders {
        eprintln!("{rule}: skipped, the store does not order deliveries by key");
    }
    orders
}

fn ops<S: StoreUnderTest>(subject: &S) -> &dyn Operations {
    subject
        .store()
        .operations()
        .expect("a store that orders by key offers the operations API")
}

/// Registers an ordered subscription to [`Job`] named `name`.
async fn subscribe_ordered<S: StoreUnderTest>(
    subject: &S,
    name: &str,
    ordered: Ordered,
) -> SubscriptionId {
    let subscription = Subscription {
        name: name.to_owned(),
        event_type: Job::NAME.to_owned(),
        routing_key: None,
        config: serde_json::json!({ "rule": name }),
        revision: 1,
        start_from: Default::default(),
        ordered: Some(ordered),
    };
    subject
        .store()
        .register(std::slice::from_ref(&subscription))
        .await
        .expect("register an ordered subscription")[0]
}

/// Publishes one job per `(key, n)` in one batch, each with its ordering key (`None`: none).
async fn publish_keyed<S: StoreUnderTest>(subject: &S, jobs: &[(Option<&str>, u32)]) {
    let batch: Vec<Outgoing> = jobs
        .iter()
        .map(|(key, n)| {
            let job = outgoing(&Job { n: *n });
            match key {
                Some(key) => job.with_ordering_key(*key).expect("a valid ordering key"),
                None => job,
            }
        })
        .collect();
    assert_eq!(subject.publish(&batch).await, jobs.len() as u64);
}

/// The jobs' numbers, in the order claimed.
fn numbers(deliveries: &[Delivery]) -> Vec<u32> {
    deliveries
        .iter()
        .map(|delivery| {
            let job: serde_json::Value =
                serde_json::from_str(&delivery.payload).expect("a job's payload is JSON");
            u32::try_from(job["n"].as_u64().expect("a job has a number")).expect("small numbers")
        })
        .collect()
}

/// The claimed delivery of job `n`.
fn job(deliveries: &[Delivery], n: u32) -> &Delivery {
    let index = numbers(deliveries)
        .iter()
        .position(|&claimed| claimed == n)
        .unwrap_or_else(|| panic!("job {n} is not among the claimed"));
    &deliveries[index]
}

async fn complete<S: StoreUnderTest>(
    subject: &S,
    subscription: SubscriptionId,
    done: &[&Delivery],
) {
    let fences: Vec<_> = done.iter().map(|delivery| delivery.fence).collect();
    let written = subject
        .store()
        .complete(subscription, &fences)
        .await
        .expect("complete");
    assert_eq!(written, fences.len() as u64, "every completion is written");
}

async fn fail<S: StoreUnderTest>(
    subject: &S,
    subscription: SubscriptionId,
    delivery: &Delivery,
    retry_in: Option<Duration>,
) {
    let failure = Failure {
        fence: delivery.fence,
        error: "ordered rule".to_owned(),
        retry_in,
    };
    let written = subject
        .store()
        .fail(subscription, &[failure])
        .await
        .expect("fail");
    assert_eq!(written, 1, "the failure is written");
}

/// The status of each row of `subscription`, by position.
async fn statuses<S: StoreUnderTest>(
    subject: &S,
    subscription: SubscriptionId,
) -> Vec<DeliveryStatus> {
    subject
        .rows(subscription)
        .await
        .into_iter()
        .map(|row| row.status)
        .collect()
}

fn handler(name: &str) -> Selector {
    Selector {
        handler: Some(name.to_owned()),
        ..Selector::default()
    }
}

/// Of an ordered subscription, one delivery per key is due at a time, the first published;
/// completing it makes the next of its key due, and releasing it keeps it the head. Deliveries
/// without a key are never held back.
pub async fn an_ordered_key_is_due_one_delivery_at_a_time_in_publish_order<S: StoreUnderTest>(
    subject: &S,
) {
    if !orders(
        subject,
        "an_ordered_key_is_due_one_delivery_at_a_time_in_publish_order",
    ) {
        return;
    }
    let subscription = subscribe_ordered(subject, "ordered.sequence", Ordered::Block).await;
    publish_keyed(
        subject,
        &[
            (Some("a"), 0),
            (Some("b"), 1),
            (Some("a"), 2),
            (None, 3),
            (Some("b"), 4),
            (Some("a"), 5),
            (None, 6),
        ],
    )
    .await;
    use DeliveryStatus::{Pending, Waiting};
    assert_eq!(
        statuses(subject, subscription).await,
        [
            Pending, Pending, Waiting, Pending, Waiting, Waiting, Pending
        ],
        "the first of each key is pending, the rest wait; no key waits for nothing"
    );
    let first = claim(subject, subscription, 10, LONG).await;
    assert_eq!(numbers(&first), [0, 1, 3, 6], "the heads and the unkeyed");
    assert!(
        claim(subject, subscription, 10, LONG).await.is_empty(),
        "nothing else is due while the heads are claimed"
    );

    complete(subject, subscription, &[job(&first, 0)]).await;
    let second = claim(subject, subscription, 10, LONG).await;
    assert_eq!(
        numbers(&second),
        [2],
        "a's next, once a's head is completed"
    );

    let released = subject
        .store()
        .release(subscription, &[job(&second, 2).fence])
        .await
        .expect("release");
    assert_eq!(released, 1);
    let again = claim(subject, subscription, 10, LONG).await;
    assert_eq!(numbers(&again), [2], "a released head is still the head");
    assert_eq!(again[0].attempt, 1, "the release gave the attempt back");

    complete(
        subject,
        subscription,
        &[job(&first, 1), job(&first, 3), job(&again, 2)],
    )
    .await;
    let third = claim(subject, subscription, 10, LONG).await;
    assert_eq!(numbers(&third), [4, 5], "b's and a's last");
    complete(
        subject,
        subscription,
        &[job(&third, 4), job(&third, 5), job(&first, 6)],
    )
    .await;
    assert!(subject.rows(subscription).await.is_empty(), "all handled");
}

/// A head that fails with a retry holds back its own key, and no other, until it is due again.
pub async fn a_retrying_head_holds_back_only_its_key<S: StoreUnderTest>(subject: &S) {
    if !orders(subject, "a_retrying_head_holds_back_only_its_key") {
        return;
    }
    let subscription = subscribe_ordered(subject, "ordered.retry", Ordered::Block).await;
    publish_keyed(
        subject,
        &[
            (Some("a"), 0),
            (Some("b"), 1),
            (Some("a"), 2),
            (Some("b"), 3),
        ],
    )
    .await;
    let heads = claim(subject, subscription, 10, LONG).await;
    assert_eq!(numbers(&heads), [0, 1]);
    fail(subject, subscription, job(&heads, 0), Some(SHORT)).await;
    complete(subject, subscription, &[job(&heads, 1)]).await;
    let next = claim(subject, subscription, 10, LONG).await;
    assert_eq!(
        numbers(&next),
        [3],
        "b goes on while a's head waits for its retry"
    );
    subject.pass(EXPIRED).await;
    let retried = claim(subject, subscription, 10, LONG).await;
    assert_eq!(numbers(&retried), [0], "a's head again, not a's next");
    assert_eq!(retried[0].attempt, 2);
}

/// Under [`Ordered::Block`] a dead head keeps its key: nothing of the key is due until the head
/// is retried (it is the head again) or purged (the next becomes due).
pub async fn a_dead_head_blocks_its_key_until_retried_or_purged<S: StoreUnderTest>(subject: &S) {
    if !orders(
        subject,
        "a_dead_head_blocks_its_key_until_retried_or_purged",
    ) {
        return;
    }
    let name = "ordered.block";
    let subscription = subscribe_ordered(subject, name, Ordered::Block).await;
    publish_keyed(subject, &[(Some("a"), 0), (Some("a"), 1), (Some("a"), 2)]).await;
    let head = claim(subject, subscription, 10, LONG).await;
    fail(subject, subscription, &head[0], None).await;
    assert!(
        claim(subject, subscription, 10, LONG).await.is_empty(),
        "a dead head blocks its key"
    );
    use DeliveryStatus::{Dead, Pending, Waiting};
    assert_eq!(
        statuses(subject, subscription).await,
        [Dead, Waiting, Waiting]
    );

    assert_eq!(
        ops(subject)
            .retry_dead(&handler(name))
            .await
            .expect("retry"),
        1
    );
    let retried = claim(subject, subscription, 10, LONG).await;
    assert_eq!(numbers(&retried), [0], "the retried head is the head again");
    fail(subject, subscription, &retried[0], None).await;

    assert_eq!(
        ops(subject)
            .purge_dead(&handler(name))
            .await
            .expect("purge"),
        1
    );
    assert_eq!(statuses(subject, subscription).await, [Pending, Waiting]);
    let next = claim(subject, subscription, 10, LONG).await;
    assert_eq!(numbers(&next), [1], "purging the head lets the next go");
}

/// Under [`Ordered::Skip`] a dead head leaves its key, and the next becomes due at once; retried,
/// the dead letter joins its key again at the end.
pub async fn a_dead_head_under_skip_lets_its_key_go_on_and_rejoins_at_the_end<S: StoreUnderTest>(
    subject: &S,
) {
    if !orders(
        subject,
        "a_dead_head_under_skip_lets_its_key_go_on_and_rejoins_at_the_end",
    ) {
        return;
    }
    let name = "ordered.skip";
    let subscription = subscribe_ordered(subject, name, Ordered::Skip).await;
    publish_keyed(subject, &[(Some("a"), 0), (Some("a"), 1), (Some("a"), 2)]).await;
    let head = claim(subject, subscription, 10, LONG).await;
    fail(subject, subscription, &head[0], None).await;
    let next = claim(subject, subscription, 10, LONG).await;
    assert_eq!(numbers(&next), [1], "the key goes on without its dead head");

    assert_eq!(
        ops(subject)
            .retry_dead(&handler(name))
            .await
            .expect("retry"),
        1
    );
    use DeliveryStatus::{Claimed, Waiting};
    assert_eq!(
        statuses(subject, subscription).await,
        [Waiting, Claimed, Waiting],
        "the retried dead letter waits behind the key's head"
    );
    complete(subject, subscription, &[&next[0]]).await;
    let last = claim(subject, subscription, 10, LONG).await;
    assert_eq!(numbers(&last), [2]);
    complete(subject, subscription, &[&last[0]]).await;
    let rejoined = claim(subject, subscription, 10, LONG).await;
    assert_eq!(
        numbers(&rejoined),
        [0],
        "the retried dead letter comes last"
    );
}

/// Cancelling waiting deliveries removes them from their key; cancelling the head lets the next
/// one go. Listings show the held-back ones as waiting, and status counts them neither due nor
/// scheduled.
pub async fn cancelled_and_listed_waiting_deliveries_keep_their_keys_order<S: StoreUnderTest>(
    subject: &S,
) {
    if !orders(
        subject,
        "cancelled_and_listed_waiting_deliveries_keep_their_keys_order",
    ) {
        return;
    }
    let name = "ordered.cancel";
    let subscription = subscribe_ordered(subject, name, Ordered::Block).await;
    publish_keyed(
        subject,
        &[
            (Some("a"), 0),
            (Some("a"), 1),
            (Some("a"), 2),
            (Some("a"), 3),
        ],
    )
    .await;
    let waiting = ops(subject)
        .deliveries(&DeliveryQuery {
            selector: handler(name),
            state: Some(DeliveryState::Waiting),
            page_size: 100,
            ..DeliveryQuery::default()
        })
        .await
        .expect("list");
    let positions: Vec<i64> = waiting
        .deliveries
        .iter()
        .map(|summary| summary.key.position)
        .collect();
    assert_eq!(positions.len(), 3, "three wait behind the head");
    let status = ops(subject).status().await.expect("status");
    let figures = status
        .handlers
        .iter()
        .find(|handler| handler.name == name)
        .expect("the handler's status");
    assert_eq!(figures.due.value(), 1, "only the head is due");
    assert_eq!(figures.scheduled.value(), 0, "waiting is not scheduled");
    assert_eq!(figures.waiting.value(), 3, "the three behind the head wait");

    let cancel = |position| Selector {
        position: Some(position),
        ..handler(name)
    };
    assert_eq!(
        ops(subject)
            .cancel_pending(&cancel(positions[0]))
            .await
            .expect("cancel a waiting delivery"),
        1
    );
    let head_position = subject.rows(subscription).await[0].position;
    assert_eq!(
        ops(subject)
            .cancel_pending(&cancel(head_position))
            .await
            .expect("cancel the head"),
        1
    );
    let next = claim(subject, subscription, 10, LONG).await;
    assert_eq!(
        numbers(&next),
        [2],
        "the head and job 1 cancelled: job 2 is next"
    );
}

/// Keys order the deliveries of ordered subscriptions only, each subscription on its own: an
/// unordered one takes a key's deliveries all at once.
pub async fn keys_order_each_ordered_subscription_on_its_own<S: StoreUnderTest>(subject: &S) {
    if !orders(subject, "keys_order_each_ordered_subscription_on_its_own") {
        return;
    }
    let first = subscribe_ordered(subject, "ordered.first", Ordered::Block).await;
    let second = subscribe_ordered(subject, "ordered.second", Ordered::Skip).await;
    let unordered = subscribe(subject, "ordered.not", None).await;
    publish_keyed(subject, &[(Some("a"), 0), (Some("a"), 1), (Some("a"), 2)]).await;
    assert_eq!(
        numbers(&claim(subject, unordered, 10, LONG).await),
        [0, 1, 2]
    );
    let of_first = claim(subject, first, 10, LONG).await;
    assert_eq!(numbers(&of_first), [0]);
    complete(subject, first, &[&of_first[0]]).await;
    assert_eq!(
        numbers(&claim(subject, second, 10, LONG).await),
        [0],
        "the other subscription's key is its own"
    );
    assert_eq!(numbers(&claim(subject, first, 10, LONG).await), [1]);
}

/// A replay into an ordered subscription delivers each event again at the end of its key.
pub async fn a_replay_into_an_ordered_handler_joins_each_key_at_its_end<S: StoreUnderTest>(
    subject: &S,
) {
    if !orders(
        subject,
        "a_replay_into_an_ordered_handler_joins_each_key_at_its_end",
    ) {
        return;
    }
    let name = "ordered.replay";
    let subscription = subscribe_ordered(subject, name, Ordered::Block).await;
    publish_keyed(subject, &[(Some("a"), 0), (Some("a"), 1)]).await;
    let head = claim(subject, subscription, 10, LONG).await;
    complete(subject, subscription, &[&head[0]]).await;
    let mut after = 0;
    loop {
        let step = ops(subject)
            .replay(
                &Replay {
                    after_position: after,
                    ..Replay::everything(name)
                },
                after,
                None,
            )
            .await
            .expect("replay");
        after = step.through;
        if step.done {
            break;
        }
    }
    use DeliveryStatus::{Pending, Waiting};
    assert_eq!(
        statuses(subject, subscription).await,
        [Waiting, Pending],
        "job 0 again, behind job 1 (which had a delivery and was skipped)"
    );
    let next = claim(subject, subscription, 10, LONG).await;
    assert_eq!(numbers(&next), [1]);
    complete(subject, subscription, &[&next[0]]).await;
    assert_eq!(numbers(&claim(subject, subscription, 10, LONG).await), [0]);
}

/// A delayed event keeps its due time inside its key: as the head it holds its key back until
/// it is due; behind the head, it becomes due at its time, not at its turn, when that is later.
pub async fn a_delayed_delivery_keeps_its_due_time_in_its_key<S: StoreUnderTest>(subject: &S) {
    if !orders(subject, "a_delayed_delivery_keeps_its_due_time_in_its_key") {
        return;
    }
    let subscription = subscribe_ordered(subject, "ordered.delayed", Ordered::Block).await;
    let keyed = |key: &str, n: u32| {
        outgoing(&Job { n })
            .with_ordering_key(key)
            .expect("a valid ordering key")
    };
    let batch = [
        keyed("a", 0),
        keyed("a", 1).deliver_after(EXPIRED).expect("a short delay"),
        keyed("b", 2).deliver_after(EXPIRED).expect("a short delay"),
        keyed("b", 3),
    ];
    assert_eq!(subject.publish(&batch).await, 4);
    let first = claim(subject, subscription, 10, LONG).await;
    assert_eq!(
        numbers(&first),
        [0],
        "a's head; b's head is delayed and holds b back"
    );
    complete(subject, subscription, &[&first[0]]).await;
    assert!(
        claim(subject, subscription, 10, LONG).await.is_empty(),
        "a's next is its turn, but not yet its time"
    );
    subject.pass(EXPIRED + SHORT).await;
    let mut due = numbers(&claim(subject, subscription, 10, LONG).await);
    due.sort_unstable();
    assert_eq!(
        due,
        [1, 2],
        "both delayed heads once due; b's next still waits"
    );
}

/// An ordering key is checked when the event is built: empty, too long or with a NUL is refused.
pub async fn an_invalid_ordering_key_is_refused_before_publishing<S: StoreUnderTest>(_subject: &S) {
    let job = || outgoing(&Job { n: 0 });
    for (key, reason) in [
        (String::new(), "is empty"),
        (
            "k".repeat(osa_events::MAX_ORDERING_KEY_BYTES + 1),
            "bytes long",
        ),
        ("a\0b".to_owned(), "NUL"),
    ] {
        match job().with_ordering_key(key) {
            Err(osa_events::Error::InvalidOrderingKey {
                event_type,
                reason: got,
            }) => {
                assert_eq!(event_type, Job::NAME);
                assert!(got.contains(reason), "{got}");
            }
            other => panic!("expected InvalidOrderingKey, got {other:?}"),
        }
    }
    let longest = "k".repeat(osa_events::MAX_ORDERING_KEY_BYTES);
    assert!(job().with_ordering_key(longest).is_ok());
}
