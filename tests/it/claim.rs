//! `PgStore`'s claim statements beyond the store contract: the claim query's plan, and completing
//! one batch and claiming the next in one round trip. The contract's claim and fencing rules
//! (overlap, attempts, expiry, fencing, order, backoff, dead letters, batch writes) run on
//! `PgStore` in `contract.rs`.

use std::time::Duration;

use osa_events::store::{ClaimRequest, Delivery, Fence, Store, Subscription, SubscriptionId};
use osa_events::{Event, Outgoing};
use serde::{Deserialize, Serialize};

use crate::support::Db;

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.claim.job")]
struct Job {
    n: u32,
}

async fn with_subscription(db: &Db) -> SubscriptionId {
    let subscription = Subscription {
        name: "claims".into(),
        event_type: Job::NAME.into(),
        routing_key: None,
        config: serde_json::json!({}),
        revision: 1,
    };
    db.store.register(&[subscription]).await.unwrap()[0]
}

async fn publish(db: &Db, count: u32) {
    let batch: Vec<Outgoing> = (0..count)
        .map(|n| Outgoing::new(&Job { n }).unwrap())
        .collect();
    osa_events::publish_batch(db.pool(), &batch).await.unwrap();
}

async fn claim(
    db: &Db,
    subscription: SubscriptionId,
    limit: u32,
    timeout: Duration,
) -> Vec<Delivery> {
    db.store
        .claim(ClaimRequest {
            subscription,
            limit,
            claim_timeout: timeout,
            worker: "test",
        })
        .await
        .unwrap()
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_claim_query_uses_the_partial_index() {
    let db = Db::new().await;
    let subscription = with_subscription(&db).await;
    publish(&db, 2000).await;
    sqlx::query("analyze osa_events.deliveries")
        .execute(db.pool())
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "explain select subscription_id, event_position from osa_events.deliveries \
         where subscription_id = $1 and status <> 'dead' and run_at <= now() \
         order by run_at, event_position limit 64 for no key update skip locked",
    )
    .bind(subscription.0)
    .fetch_all(db.pool())
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("deliveries_claimable"),
        "claim plan does not use the partial index:\n{plan}"
    );
}

#[tokio::test]
async fn complete_and_claim_is_one_fenced_round_trip() {
    let db = Db::new().await;
    let subscription = with_subscription(&db).await;
    publish(&db, 5).await;
    let first = claim(&db, subscription, 2, LONG).await;
    let done: Vec<Fence> = first.iter().map(|d| d.fence).collect();
    let request = ClaimRequest {
        subscription,
        limit: 2,
        claim_timeout: LONG,
        worker: "fused",
    };
    let (completed, next) = db.store.complete_and_claim(&done, request).await.unwrap();
    assert_eq!(completed, 2);
    let next_positions: Vec<i64> = next.iter().map(|d| d.fence.position).collect();
    assert_eq!(
        next_positions,
        vec![first[1].fence.position + 1, first[1].fence.position + 2]
    );
    assert_eq!(db.deliveries(None).await, 3);

    // A stale fence is refused; the claim still happens.
    let stale = [Fence {
        position: next[0].fence.position,
        token: uuid::Uuid::new_v4(),
    }];
    let (completed, last) = db.store.complete_and_claim(&stale, request).await.unwrap();
    assert_eq!((completed, last.len()), (0, 1));

    // Nothing left to claim: the completion count still comes back.
    let done: Vec<Fence> = next.iter().chain(&last).map(|d| d.fence).collect();
    let (completed, none) = db.store.complete_and_claim(&done, request).await.unwrap();
    assert_eq!((completed, none.len()), (3, 0));
    assert_eq!(db.deliveries(None).await, 0);
}
