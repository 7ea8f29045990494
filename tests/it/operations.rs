//! The operations API on `PgStore`, beyond the contract rules (`contract.rs` runs those on both
//! stores): one pass through every operation on a real database, checking what the rows say
//! afterwards, and the statements' plans.

use std::time::Duration;

use osa_events::operations::{
    BackfillStep, DeliveryQuery, DeliveryState, Operations, Prune, Replay, RetireMode, Selector,
    StartFrom,
};
use osa_events::store::{ClaimRequest, Failure, Store, Subscription, SubscriptionId};
use osa_events::{Event, Outgoing};
use serde::{Deserialize, Serialize};

use crate::support::Db;

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.ops.job")]
struct Job {
    n: u32,
}

fn subscription(name: &str, start_from: StartFrom) -> Subscription {
    Subscription {
        name: name.into(),
        event_type: Job::NAME.into(),
        routing_key: None,
        config: serde_json::json!({}),
        revision: 1,
        start_from,
    }
}

async fn publish(db: &Db, range: std::ops::Range<u32>) {
    let batch: Vec<Outgoing> = range.map(|n| Outgoing::new(&Job { n }).unwrap()).collect();
    osa_events::publish_batch(db.pool(), &batch).await.unwrap();
}

fn ops(db: &Db) -> &dyn Operations {
    db.store.operations().expect("PgStore offers operations")
}

/// Claims `limit` deliveries and dead-letters them.
async fn kill(db: &Db, subscription: SubscriptionId, limit: u32, error: &str) -> u64 {
    let claimed = db
        .store
        .claim(ClaimRequest {
            subscription,
            limit,
            claim_timeout: Duration::from_secs(60),
            worker: "ops-test",
        })
        .await
        .unwrap();
    let failures: Vec<Failure> = claimed
        .iter()
        .map(|delivery| Failure {
            fence: delivery.fence,
            error: error.to_owned(),
            retry_in: None,
        })
        .collect();
    db.store.fail(subscription, &failures).await.unwrap()
}

#[tokio::test]
async fn every_operation_runs_against_postgres() {
    let db = Db::new().await;
    let ids = db
        .store
        .register(&[subscription("ops.a", StartFrom::Now)])
        .await
        .unwrap();
    let a = ids[0];
    publish(&db, 0..10).await;
    assert_eq!(kill(&db, a, 4, "backend down").await, 4);

    let status = ops(&db).status().await.unwrap();
    let handler = status.handler("ops.a").expect("ops.a in status");
    assert_eq!(handler.due.value(), 6);
    assert_eq!(handler.dead.value(), 4);
    assert_eq!(
        handler.last_error.as_ref().map(|(e, _)| e.as_str()),
        Some("backend down")
    );
    assert_eq!(status.head, 10);

    let dead = ops(&db)
        .deliveries(&DeliveryQuery {
            state: Some(DeliveryState::Dead),
            page_size: 3,
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.deliveries.len(), 3);
    let rest = ops(&db)
        .deliveries(&DeliveryQuery {
            state: Some(DeliveryState::Dead),
            page_size: 3,
            after: dead.next,
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.deliveries.len(), 1);
    assert_eq!(rest.next, None);

    let first = &dead.deliveries[0];
    let shown = ops(&db)
        .delivery("ops.a", first.key.position)
        .await
        .unwrap()
        .expect("a dead letter is shown");
    assert!(shown.payload.contains("\"n\""), "{}", shown.payload);

    let one = Selector::one("ops.a", first.key.position);
    assert_eq!(ops(&db).retry_dead(&one).await.unwrap(), 1);
    assert_eq!(
        ops(&db)
            .purge_dead(&Selector {
                limit: Some(1),
                ..Selector::handler("ops.a")
            })
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        ops(&db)
            .cancel_pending(&Selector {
                limit: Some(2),
                ..Selector::handler("ops.a")
            })
            .await
            .unwrap(),
        2
    );
    let error = ops(&db)
        .retry_dead(&Selector::handler("ops.nope"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("ops.a"), "{error}");

    assert!(ops(&db).pause("ops.a").await.unwrap());
    assert!(!ops(&db).pause("ops.a").await.unwrap());
    let claimed = db
        .store
        .claim(ClaimRequest {
            subscription: a,
            limit: 10,
            claim_timeout: Duration::from_secs(60),
            worker: "w",
        })
        .await
        .unwrap();
    assert!(claimed.is_empty(), "a paused subscription claims nothing");
    assert!(ops(&db).resume("ops.a").await.unwrap());

    // Replay everything: events with a row are skipped.
    let replay = Replay {
        chunk: 4,
        ..Replay::everything("ops.a")
    };
    let (mut after, mut end, mut delivered, mut skipped) = (0, None, 0, 0);
    loop {
        let step = ops(&db).replay(&replay, after, end).await.unwrap();
        delivered += step.delivered;
        skipped += step.skipped;
        after = step.through;
        end = Some(step.end);
        if step.done {
            break;
        }
    }
    let open_before: i64 = 10 - 2 - 1; // ten, two cancelled, one purged
    assert_eq!(delivered + skipped, 10);
    assert_eq!(skipped as i64, open_before);

    // A new subscription from the beginning gets the history.
    let b = db
        .store
        .register(&[subscription("ops.b", StartFrom::Beginning)])
        .await
        .unwrap()[0];
    let mut copied = 0;
    for _ in 0..200 {
        match ops(&db).backfill("ops.b", 3).await.unwrap() {
            BackfillStep::Done => break,
            BackfillStep::Waiting => tokio::time::sleep(Duration::from_millis(20)).await,
            BackfillStep::Copied { delivered, .. } => copied += delivered,
        }
    }
    // Waits while two chunks are open: drain as we go is not needed for 10 <= 2 * 3 + ...
    let rows: i64 =
        sqlx::query_scalar("select count(*) from osa_events.deliveries where subscription_id = $1")
            .bind(b.0)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(rows as u64, copied);
    assert!(copied >= 6, "copied {copied}");

    let subscriptions = ops(&db).subscriptions().await.unwrap();
    assert_eq!(subscriptions.len(), 2);
    let retired = ops(&db)
        .retire("ops.b", RetireMode::IfNotRunning)
        .await
        .unwrap();
    assert_eq!(retired.open, copied);
    publish(&db, 10..11).await;
    let rows: i64 =
        sqlx::query_scalar("select count(*) from osa_events.deliveries where subscription_id = $1")
            .bind(b.0)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(rows, 0, "a retired subscription receives nothing");

    // Prune: nothing is old enough.
    let step = ops(&db)
        .prune(&Prune::older_than(Duration::from_secs(3600)), 0)
        .await
        .unwrap();
    assert_eq!(step.events, 0);
    assert!(step.done);
    // Everything is old enough, but a's deliveries hold their events.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let step = ops(&db)
        .prune(&Prune::older_than(Duration::from_millis(10)), 0)
        .await
        .unwrap();
    assert!(step.done);
    let open: i64 =
        sqlx::query_scalar("select count(distinct event_position) from osa_events.deliveries")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(step.events + step.kept, 11);
    assert_eq!(step.kept as i64, open);

    let nodes = ops(&db).nodes().await.unwrap();
    assert!(nodes.is_empty());
    let projections = ops(&db).projections().await.unwrap();
    assert!(
        projections
            .iter()
            .all(|projection| projection.position == 0),
        "no projection ran here"
    );
}
