//! The claim protocol at the store level: SKIP LOCKED batches, attempts at claim, expiry and
//! reclaim, fencing by token, ordering, release and dead rows.

use std::collections::HashSet;
use std::time::Duration;

use osa_events::{Event, Outgoing};

use osa_events::store::{
    ClaimRequest, Delivery, Failure, Fence, Store, Subscription, SubscriptionId,
};
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
async fn concurrent_claims_never_overlap() {
    let db = Db::new().await;
    let subscription = with_subscription(&db).await;
    publish(&db, 300).await;
    let claimers = (0..8).map(|_| {
        let store = db.store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let request = ClaimRequest {
                    subscription,
                    limit: 7,
                    claim_timeout: LONG,
                    worker: "racer",
                };
                let batch = store.claim(request).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.iter().map(|delivery| delivery.fence.position));
            }
        })
    });
    let mut seen = HashSet::new();
    let mut total = 0;
    for claimer in claimers {
        for position in claimer.await.unwrap() {
            total += 1;
            assert!(
                seen.insert(position),
                "position {position} was claimed twice"
            );
        }
    }
    assert_eq!(total, 300);
}

#[tokio::test]
async fn a_claim_carries_the_event_and_counts_the_attempt() {
    let db = Db::new().await;
    let subscription = with_subscription(&db).await;
    let event = Outgoing::new(&Job { n: 42 })
        .unwrap()
        .with_routing_key("k")
        .with_metadata(serde_json::json!({ "correlation_id": "c-1" }))
        .unwrap();
    osa_events::publish_batch(db.pool(), std::slice::from_ref(&event))
        .await
        .unwrap();

    let claimed = claim(&db, subscription, 10, LONG).await;
    assert_eq!(claimed.len(), 1);
    let delivery = &claimed[0];
    assert_eq!(delivery.attempt, 1, "attempts are counted when claimed");
    assert_eq!(delivery.event_id, event.id());
    assert_eq!(delivery.event_type, "test.claim.job");
    assert_eq!(delivery.routing_key.as_deref(), Some("k"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&delivery.payload).unwrap(),
        serde_json::json!({ "n": 42 })
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&delivery.metadata).unwrap()["correlation_id"],
        "c-1"
    );
    assert!(
        claim(&db, subscription, 10, LONG).await.is_empty(),
        "a held claim is not claimed again"
    );

    let retry = Failure {
        fence: delivery.fence,
        error: "try again".into(),
        retry_in: Some(Duration::ZERO),
    };
    assert_eq!(db.store.fail(subscription, &[retry]).await.unwrap(), 1);
    let again = claim(&db, subscription, 10, LONG).await;
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].last_error.as_deref(), Some("try again"));
    assert_ne!(
        again[0].fence.token, delivery.fence.token,
        "every claim gets a fresh token"
    );
}

#[tokio::test]
async fn an_expired_claim_is_reclaimed_and_its_old_holder_is_fenced_off() {
    let db = Db::new().await;
    let subscription = with_subscription(&db).await;
    publish(&db, 1).await;
    let stale = claim(&db, subscription, 1, Duration::from_millis(100))
        .await
        .remove(0);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let fresh = claim(&db, subscription, 1, LONG).await.remove(0);
    assert_eq!(fresh.fence.position, stale.fence.position);
    assert_eq!(fresh.attempt, 2);

    let stale_fence = [stale.fence];
    assert_eq!(
        db.store.complete(subscription, &stale_fence).await.unwrap(),
        0,
        "stale completion refused"
    );
    assert!(
        db.store
            .extend(subscription, &stale_fence, LONG)
            .await
            .unwrap()
            .is_empty(),
        "stale heartbeat refused"
    );
    assert_eq!(
        db.store.release(subscription, &stale_fence).await.unwrap(),
        0,
        "stale release refused"
    );
    let stale_failure = Failure {
        fence: stale.fence,
        error: "late".into(),
        retry_in: None,
    };
    assert_eq!(
        db.store.fail(subscription, &[stale_failure]).await.unwrap(),
        0,
        "stale failure refused"
    );
    assert_eq!(
        db.deliveries(Some("claimed")).await,
        1,
        "the fresh claim is untouched"
    );

    assert_eq!(
        db.store
            .complete(subscription, &[fresh.fence])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        db.deliveries(None).await,
        0,
        "completed deliveries are deleted"
    );
}

#[tokio::test]
async fn extending_a_claim_keeps_it_from_expiring() {
    let db = Db::new().await;
    let subscription = with_subscription(&db).await;
    publish(&db, 1).await;
    let held = claim(&db, subscription, 1, Duration::from_millis(300))
        .await
        .remove(0);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let extended = db
            .store
            .extend(subscription, &[held.fence], Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(extended, vec![held.fence.position]);
        assert!(
            claim(&db, subscription, 1, LONG).await.is_empty(),
            "an extended claim is not reclaimed"
        );
    }
}

#[tokio::test]
async fn claims_come_in_run_at_then_position_order() {
    let db = Db::new().await;
    let subscription = with_subscription(&db).await;
    for n in 0..3 {
        osa_events::publish(db.pool(), &Job { n }).await.unwrap(); // separate transactions
    }
    let first = claim(&db, subscription, 1, LONG).await.remove(0);
    let retry = Failure {
        fence: first.fence,
        error: "later".into(),
        retry_in: Some(Duration::ZERO),
    };
    db.store.fail(subscription, &[retry]).await.unwrap();
    let order: Vec<i64> = claim(&db, subscription, 10, LONG)
        .await
        .iter()
        .map(|d| d.fence.position)
        .collect();
    assert_eq!(order.len(), 3);
    assert_eq!(
        order[2], first.fence.position,
        "the retried delivery's run_at is now later than the others'"
    );
    assert!(order[0] < order[1]);
}

#[tokio::test]
async fn backoff_delays_the_next_claim() {
    let db = Db::new().await;
    let subscription = with_subscription(&db).await;
    publish(&db, 1).await;
    let delivery = claim(&db, subscription, 1, LONG).await.remove(0);
    let retry = Failure {
        fence: delivery.fence,
        error: "busy".into(),
        retry_in: Some(Duration::from_millis(400)),
    };
    db.store.fail(subscription, &[retry]).await.unwrap();
    assert!(
        claim(&db, subscription, 1, LONG).await.is_empty(),
        "not due during its backoff"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        claim(&db, subscription, 1, LONG).await.len(),
        1,
        "due after its backoff"
    );
}

#[tokio::test]
async fn dead_deliveries_keep_their_error_and_are_never_claimed() {
    let db = Db::new().await;
    let subscription = with_subscription(&db).await;
    publish(&db, 2).await;
    let claimed = claim(&db, subscription, 2, LONG).await;
    let dead = Failure {
        fence: claimed[0].fence,
        error: "poison".into(),
        retry_in: None,
    };
    db.store.fail(subscription, &[dead]).await.unwrap();
    db.store
        .release(subscription, &[claimed[1].fence])
        .await
        .unwrap();
    let next = claim(&db, subscription, 10, LONG).await;
    assert_eq!(next.len(), 1, "only the released delivery is claimable");
    assert_eq!(next[0].fence.position, claimed[1].fence.position);
    assert_eq!(next[0].attempt, 1, "a release gives the attempt back");
    assert_eq!(db.dead_letters().await, vec![(1, "poison".to_owned())]);
}

#[tokio::test]
async fn batch_writes_touch_only_their_own_fences() {
    let db = Db::new().await;
    let subscription = with_subscription(&db).await;
    publish(&db, 10).await;
    let claimed = claim(&db, subscription, 10, LONG).await;
    let fences: Vec<Fence> = claimed.iter().map(|d| d.fence).collect();
    assert_eq!(
        db.store.complete(subscription, &fences[..6]).await.unwrap(),
        6
    );
    let failures: Vec<Failure> = fences[6..]
        .iter()
        .map(|fence| Failure {
            fence: *fence,
            error: "x".into(),
            retry_in: Some(LONG),
        })
        .collect();
    assert_eq!(db.store.fail(subscription, &failures).await.unwrap(), 4);
    assert_eq!(db.deliveries(Some("pending")).await, 4);
    assert_eq!(db.deliveries(None).await, 4);
}

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
