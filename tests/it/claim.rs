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
        start_from: Default::default(),
        ordered: None,
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

/// Issue #14: the claim walks `deliveries_claimable` in order and stops after its limit, on a table
/// that was never analyzed (a fresh database, autovacuum off or not yet run). Planned from missing
/// statistics, the plain statement read and sorted the whole backlog instead.
///
/// The evidence is the transaction's own index statistics (`pg_stat_get_xact_*`, not yet
/// flushed, so no other session's work is in them): an ordered walk reads about `limit` index
/// entries, a bitmap scan reads all of them.
#[tokio::test]
async fn the_claim_walks_its_index_in_order_on_a_never_analyzed_table() {
    const BACKLOG: i64 = 50_000;
    const LIMIT: u32 = 100;
    let db = Db::new().await;
    let subscription = with_subscription(&db).await;
    sqlx::query("alter table osa_events.deliveries set (autovacuum_enabled = false)")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query(
        "with logged as (
             insert into osa_events.events (id, event_type, event_version, payload)
             select gen_random_uuid(), $2, 1, jsonb_build_object('n', n)
             from generate_series(1, $3) as n
             returning position)
         insert into osa_events.deliveries (subscription_id, event_position)
         select $1, position from logged",
    )
    .bind(subscription.0)
    .bind(Job::NAME)
    .bind(BACKLOG)
    .execute(db.pool())
    .await
    .unwrap();
    let analyzed: Option<String> = sqlx::query_scalar(
        "select coalesce(last_analyze, last_autoanalyze)::text from pg_stat_user_tables \
         where schemaname = 'osa_events' and relname = 'deliveries'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(analyzed, None, "the table must never have been analyzed");

    let mut conn = db.pool().acquire().await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    let claimed = sqlx::query(osa_events::__private::sql::CLAIM_SQL)
        .bind(subscription.0)
        .bind(LIMIT as i32)
        .bind("plan")
        .bind(60.0_f64)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(claimed.len(), LIMIT as usize);
    let (scans, read): (i64, i64) = sqlx::query_as(
        "select pg_stat_get_xact_numscans(i), pg_stat_get_xact_tuples_returned(i) \
         from (select 'osa_events.deliveries_claimable'::regclass::oid as i) as claimable",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let sequential: i64 = sqlx::query_scalar(
        "select seq_scan from pg_stat_xact_user_tables \
         where schemaname = 'osa_events' and relname = 'deliveries'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(sequential, 0, "the claim scanned the table");
    assert!(scans >= 1, "the claim did not use deliveries_claimable");
    assert!(
        read <= i64::from(LIMIT) * 2,
        "the claim read {read} index entries of deliveries_claimable for {LIMIT} rows out of \
         {BACKLOG}: it did not walk the index in order"
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

/// Issue #14: relaxed bookkeeping commits the store's claims and completions with
/// `synchronous_commit = off`, on a pool of its own, and leaves the application's pool (publishing,
/// `Tx` handlers) synchronous.
#[tokio::test]
async fn relaxed_bookkeeping_runs_on_asynchronously_committing_sessions_only() {
    let db = Db::new().await;
    let subscription = with_subscription(&db).await;
    publish(&db, 3).await;
    let relaxed = db.store.clone().relaxed_bookkeeping();
    let setting = |pool: &sqlx::PgPool| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("show synchronous_commit")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(setting(relaxed.bookkeeping_pool()).await, "off");
    assert_eq!(setting(relaxed.pool()).await, "on");
    assert_eq!(setting(db.store.bookkeeping_pool()).await, "on");

    let claimed = relaxed
        .claim(ClaimRequest {
            subscription,
            limit: 3,
            claim_timeout: LONG,
            worker: "relaxed",
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let done: Vec<Fence> = claimed.iter().map(|d| d.fence).collect();
    assert_eq!(relaxed.complete(subscription, &done).await.unwrap(), 3);
    assert_eq!(
        db.deliveries(None).await,
        0,
        "completed on the relaxed pool"
    );
}

/// Issue #14: a fenced write finds each claimed row by primary key even when the statistics were
/// taken while no row was claimed. Planned from such statistics (one claimed row expected), the
/// plain completion joined its 1,000 fences to a sequential scan of the table: seconds per batch.
#[tokio::test]
async fn fenced_writes_find_rows_by_key_whatever_the_statistics() {
    let db = Db::new().await;
    let subscription = with_subscription(&db).await;
    publish(&db, 20_000).await;
    sqlx::query("analyze osa_events.deliveries")
        .execute(db.pool())
        .await
        .unwrap();
    let mut batches = Vec::new();
    for _ in 0..4 {
        batches.push(claim(&db, subscription, 1000, LONG).await);
    }
    let done: Vec<Fence> = batches[0].iter().map(|d| d.fence).collect();

    let mut conn = db.pool().acquire().await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    let (positions, tokens): (Vec<i64>, Vec<uuid::Uuid>) = done
        .iter()
        .map(|fence| (fence.position, fence.token))
        .unzip();
    let completed: i64 = sqlx::query_scalar(osa_events::__private::sql::COMPLETE_SQL)
        .bind(subscription.0)
        .bind(&positions)
        .bind(&tokens)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let sequential: i64 =
        sqlx::query_scalar("select pg_stat_get_xact_numscans('osa_events.deliveries'::regclass)")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(completed, 1000);
    assert_eq!(sequential, 0, "the completion scanned the table");
    assert_eq!(db.deliveries(None).await, 19_000);
}
