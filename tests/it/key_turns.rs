//! PostgreSQL's key turns (migration `key_turns`): a claim that completes the heads of an ordered
//! handler's keys takes those keys' next deliveries for its own worker, in the same statement,
//! up to eight in a row per key, then lets the key wait its turn behind what is due. The rules of
//! per-key order themselves run on every store in `contract.rs`; these check what is particular
//! to PostgreSQL's claim: what is handed on, to whom, and when nothing is.

use std::time::Duration;

use osa_events::Ordered;
use osa_events::store::{ClaimRequest, Delivery, Fence, Store, Subscription, SubscriptionId};
use osa_events::{Event, Outgoing};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;

use crate::support::Db;

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.key_turns.job")]
struct Job {
    n: u32,
}

const HANDLER: &str = "key.turns";
const LONG: Duration = Duration::from_secs(60);

/// A fresh database with one `ordered = "block"` subscription to [`Job`].
async fn ordered_subscription() -> (Db, SubscriptionId) {
    let db = Db::new().await;
    let subscription = Subscription {
        name: HANDLER.into(),
        event_type: Job::NAME.into(),
        routing_key: None,
        config: serde_json::json!({}),
        revision: 1,
        start_from: Default::default(),
        ordered: Some(Ordered::Block),
    };
    let id = db.store.register(&[subscription]).await.unwrap()[0];
    (db, id)
}

fn keyed(key: &str, n: u32) -> Outgoing {
    Outgoing::new(&Job { n })
        .unwrap()
        .with_ordering_key(key)
        .unwrap()
}

/// Publishes `jobs` (key, number) in one transaction, in that order.
async fn publish(db: &Db, jobs: &[(&str, u32)]) {
    let batch: Vec<Outgoing> = jobs.iter().map(|(key, n)| keyed(key, *n)).collect();
    osa_events::publish_batch(db.pool(), &batch).await.unwrap();
}

fn request(subscription: SubscriptionId, limit: u32, worker: &str) -> ClaimRequest<'_> {
    ClaimRequest {
        subscription,
        limit,
        claim_timeout: LONG,
        worker,
    }
}

async fn claim(db: &Db, subscription: SubscriptionId, limit: u32, worker: &str) -> Vec<Delivery> {
    db.store
        .claim(request(subscription, limit, worker))
        .await
        .unwrap()
}

/// Completes `done` and claims up to `limit` in one statement; asserts every completion landed.
async fn complete_and_claim(
    db: &Db,
    subscription: SubscriptionId,
    done: &[Delivery],
    limit: u32,
    worker: &str,
) -> Vec<Delivery> {
    let fences: Vec<Fence> = done.iter().map(|delivery| delivery.fence).collect();
    let (completed, claimed) = db
        .store
        .complete_and_claim(&fences, request(subscription, limit, worker))
        .await
        .unwrap();
    assert_eq!(
        completed,
        fences.len() as u64,
        "every completion is written"
    );
    claimed
}

/// The jobs' numbers, sorted (a claim's order among keys is not what these tests check).
fn numbers(deliveries: &[Delivery]) -> Vec<u32> {
    let mut numbers: Vec<u32> = deliveries
        .iter()
        .map(|delivery| {
            let job: serde_json::Value = serde_json::from_str(&delivery.payload).unwrap();
            u32::try_from(job["n"].as_u64().unwrap()).unwrap()
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

/// The stored state of job `n`'s delivery: its status, its worker, and whether it is due now.
async fn state(db: &Db, n: u32) -> (String, Option<String>, bool) {
    sqlx::query_as(
        "select d.status, d.claimed_by, d.run_at <= now()
         from osa_events.deliveries d
         join osa_events.events e on e.position = d.event_position
         where (e.payload ->> 'n')::int = $1",
    )
    .bind(i32::try_from(n).unwrap())
    .fetch_one(db.pool())
    .await
    .unwrap()
}

fn pending_and_due() -> (String, Option<String>, bool) {
    ("pending".into(), None, true)
}

#[tokio::test]
async fn a_completed_head_hands_its_key_on_to_the_claiming_worker() {
    let (db, subscription) = ordered_subscription().await;
    // Key a's two jobs, then key b's head: b's head is due before a's second is.
    publish(&db, &[("a", 1), ("a", 2), ("b", 3)]).await;

    let first = claim(&db, subscription, 1, "w1").await;
    assert_eq!(numbers(&first), [1]);
    let second = complete_and_claim(&db, subscription, &first, 1, "w1").await;
    assert_eq!(
        numbers(&second),
        [2],
        "the worker that completed a's head takes a's next, ahead of b's older head"
    );
    assert_eq!(
        second[0].attempt, 1,
        "a handed-on delivery is a claim like any"
    );
    assert_eq!(
        state(&db, 2).await,
        ("claimed".into(), Some("w1".into()), false)
    );

    assert_eq!(
        numbers(&claim(&db, subscription, 10, "w2").await),
        [3],
        "another worker finds only b's head due"
    );
    let last = complete_and_claim(&db, subscription, &second, 1, "w1").await;
    assert!(last.is_empty(), "key a is done and b is claimed: {last:?}");
}

#[tokio::test]
async fn a_key_is_handed_on_eight_times_in_a_row_then_waits_its_turn() {
    let (db, subscription) = ordered_subscription().await;
    let mut jobs: Vec<(&str, u32)> = (0..12).map(|n| ("a", n)).collect();
    jobs.push(("b", 100));
    publish(&db, &jobs).await;

    let mut held = claim(&db, subscription, 1, "w1").await;
    assert_eq!(numbers(&held), [0]);
    for n in 1..=8 {
        held = complete_and_claim(&db, subscription, &held, 1, "w1").await;
        assert_eq!(numbers(&held), [n], "hand-on {n} of key a");
    }
    // The ninth: a's next becomes due behind b's head, which the claim takes.
    held = complete_and_claim(&db, subscription, &held, 1, "w1").await;
    assert_eq!(
        numbers(&held),
        [100],
        "after eight in a row, b's head goes first"
    );
    assert_eq!(state(&db, 9).await, pending_and_due());

    held = complete_and_claim(&db, subscription, &held, 1, "w1").await;
    assert_eq!(numbers(&held), [9], "then a's next, from the index");
    held = complete_and_claim(&db, subscription, &held, 1, "w1").await;
    assert_eq!(numbers(&held), [10], "and a is handed on again");
}

#[tokio::test]
async fn no_more_are_handed_on_than_the_claim_may_take() {
    let (db, subscription) = ordered_subscription().await;
    publish(
        &db,
        &[
            ("a", 1),
            ("b", 2),
            ("c", 3),
            ("a", 11),
            ("b", 12),
            ("c", 13),
        ],
    )
    .await;

    let heads = claim(&db, subscription, 3, "w1").await;
    assert_eq!(numbers(&heads), [1, 2, 3]);
    let next = complete_and_claim(&db, subscription, &heads, 2, "w1").await;
    assert_eq!(numbers(&next), [11, 12], "two of three, in key order");
    assert_eq!(
        state(&db, 13).await,
        pending_and_due(),
        "c's next is due for anyone"
    );
    assert_eq!(numbers(&claim(&db, subscription, 10, "w2").await), [13]);
}

#[tokio::test]
async fn a_next_delivery_that_is_not_due_yet_is_not_handed_on() {
    let (db, subscription) = ordered_subscription().await;
    publish(&db, &[("a", 1)]).await;
    let later = keyed("a", 2)
        .deliver_after(Duration::from_secs(3600))
        .unwrap();
    osa_events::publish_batch(db.pool(), &[later])
        .await
        .unwrap();

    let head = claim(&db, subscription, 1, "w1").await;
    assert_eq!(numbers(&head), [1]);
    let next = complete_and_claim(&db, subscription, &head, 1, "w1").await;
    assert!(next.is_empty(), "job 2 is due in an hour: {next:?}");
    assert_eq!(
        state(&db, 2).await,
        ("pending".into(), None, false),
        "it is the head, due at its time"
    );
}

#[tokio::test]
async fn a_completion_without_a_claim_hands_nothing_on() {
    let (db, subscription) = ordered_subscription().await;
    publish(&db, &[("a", 1), ("a", 2)]).await;

    let head = claim(&db, subscription, 1, "w1").await;
    let fences: Vec<Fence> = head.iter().map(|delivery| delivery.fence).collect();
    assert_eq!(db.store.complete(subscription, &fences).await.unwrap(), 1);
    assert_eq!(state(&db, 2).await, pending_and_due());
    assert_eq!(numbers(&claim(&db, subscription, 1, "w2").await), [2]);
}

#[tokio::test]
async fn a_paused_handler_completes_but_hands_nothing_on() {
    let (db, subscription) = ordered_subscription().await;
    publish(&db, &[("a", 1), ("a", 2)]).await;
    let operations = db.store.operations().unwrap();

    let head = claim(&db, subscription, 1, "w1").await;
    assert!(operations.pause(HANDLER).await.unwrap());
    let next = complete_and_claim(&db, subscription, &head, 1, "w1").await;
    assert!(next.is_empty(), "a paused handler claims nothing: {next:?}");
    assert_eq!(state(&db, 2).await, pending_and_due());

    assert!(operations.resume(HANDLER).await.unwrap());
    assert_eq!(numbers(&claim(&db, subscription, 1, "w2").await), [2]);
}

#[tokio::test]
async fn a_handed_on_claim_is_fenced_and_expires_like_any() {
    let (db, subscription) = ordered_subscription().await;
    publish(&db, &[("a", 1), ("a", 2)]).await;

    let head = claim(&db, subscription, 1, "w1").await;
    let fences: Vec<Fence> = head.iter().map(|delivery| delivery.fence).collect();
    let short = ClaimRequest {
        claim_timeout: Duration::from_millis(200),
        ..request(subscription, 1, "w1")
    };
    let (_, handed) = db.store.complete_and_claim(&fences, short).await.unwrap();
    assert_eq!(numbers(&handed), [2]);

    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = claim(&db, subscription, 1, "w2").await;
    assert_eq!(numbers(&again), [2], "the expired claim is due again");
    assert_eq!(again[0].attempt, 2);
    assert_eq!(
        db.store
            .complete(subscription, &[handed[0].fence])
            .await
            .unwrap(),
        0,
        "the first worker's fence no longer holds"
    );
}

/// The next notification on the store's channel within `wait`, if any.
async fn notification(listener: &mut PgListener, wait: Duration) -> Option<String> {
    tokio::time::timeout(wait, listener.recv())
        .await
        .ok()
        .map(|received| received.unwrap().payload().to_owned())
}

#[tokio::test]
async fn a_next_delivery_made_due_wakes_the_loops_and_one_handed_on_does_not() {
    let (db, subscription) = ordered_subscription().await;
    let mut listener = PgListener::connect_with(db.pool()).await.unwrap();
    listener.listen("osa_events").await.unwrap();
    publish(&db, &[("a", 1), ("a", 2), ("a", 3)]).await;
    assert_eq!(
        notification(&mut listener, Duration::from_secs(5)).await,
        Some(subscription.0.to_string()),
        "the publish wakes the handler"
    );

    let head = claim(&db, subscription, 1, "w1").await;
    let handed = complete_and_claim(&db, subscription, &head, 1, "w1").await;
    assert_eq!(numbers(&handed), [2]);
    assert_eq!(
        notification(&mut listener, Duration::from_millis(500)).await,
        None,
        "a delivery handed on is already claimed: nobody needs waking"
    );

    let fences: Vec<Fence> = handed.iter().map(|delivery| delivery.fence).collect();
    assert_eq!(db.store.complete(subscription, &fences).await.unwrap(), 1);
    assert_eq!(
        notification(&mut listener, Duration::from_secs(5)).await,
        Some(subscription.0.to_string()),
        "a next delivery made due wakes the handler's loops"
    );
}
