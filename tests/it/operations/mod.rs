//! The operations API on `PgStore`, beyond the contract rules (`contract.rs` runs those on every
//! store): one pass through every operation on a real database, checking what the rows say
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
        ordered: None,
    }
}

/// Publishes `make(n)` for each `n` of `range`, in one transaction (each test module has its own
/// event type, so no module's handlers see another's events).
async fn publish_each<E: Event>(db: &Db, range: std::ops::Range<u32>, make: impl Fn(u32) -> E) {
    let batch: Vec<Outgoing> = range.map(|n| Outgoing::new(&make(n)).unwrap()).collect();
    osa_events::publish_batch(db.pool(), &batch).await.unwrap();
}

async fn publish(db: &Db, range: std::ops::Range<u32>) {
    publish_each(db, range, |n| Job { n }).await;
}

fn ops(db: &Db) -> &dyn Operations {
    db.store.operations().expect("PgStore offers operations")
}

/// Claims `limit` deliveries and dead-letters them.
pub(crate) async fn kill(db: &Db, subscription: SubscriptionId, limit: u32, error: &str) -> u64 {
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

mod activity;
mod drills;
mod runtime;

/// Status reads indexes, never the open work: at 80,000 open deliveries over four subscriptions
/// its statement scans no table and reads at most its caps of index entries (1,000 per count),
/// analyzed or not.
#[tokio::test]
async fn status_reads_capped_index_ranges_not_the_open_work() {
    const PER_SUBSCRIPTION: i64 = 20_000;
    let db = Db::new().await;
    let names = ["ops.cost.a", "ops.cost.b", "ops.cost.c", "ops.cost.d"];
    let subscriptions: Vec<Subscription> = names
        .iter()
        .map(|name| subscription(name, StartFrom::Now))
        .collect();
    db.store.register(&subscriptions).await.unwrap();
    sqlx::query(
        "with logged as (
             insert into osa_events.events (id, event_type, event_version, payload)
             select gen_random_uuid(), $1, 1, jsonb_build_object('n', n)
             from generate_series(1, $2) as n
             returning position)
         insert into osa_events.deliveries (subscription_id, event_position, status, run_at)
         select s.id, l.position,
                case when l.position % 100 = 0 then 'dead' else 'pending' end,
                now() - interval '1 minute'
         from logged l cross join osa_events.subscriptions s",
    )
    .bind(Job::NAME)
    .bind(PER_SUBSCRIPTION)
    .execute(db.pool())
    .await
    .unwrap();
    for analyze in [false, true] {
        if analyze {
            sqlx::query("vacuum analyze osa_events.deliveries")
                .execute(db.pool())
                .await
                .unwrap();
        }
        let mut conn = db.pool().acquire().await.unwrap();
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        sqlx::query(osa_events::__private::sql::STATUS_PLAN_SQL)
            .execute(&mut *tx)
            .await
            .unwrap();
        // The transaction's counters, before and after (a connection's counters include what its
        // earlier transactions did until they are flushed).
        const COUNTERS: &str = "select coalesce((select seq_scan from pg_stat_xact_user_tables
                      where schemaname = 'osa_events' and relname = 'deliveries'), 0),
                    (select coalesce(sum(pg_stat_get_xact_tuples_returned(c.oid)), 0)::int8
                      from pg_class c
                      where c.relnamespace = 'osa_events'::regnamespace
                        and c.relname in ('deliveries_claimable', 'deliveries_dead', 'deliveries_pkey'))";
        let (sequential_before, read_before): (i64, i64) =
            sqlx::query_as(COUNTERS).fetch_one(&mut *tx).await.unwrap();
        let rows = sqlx::query(osa_events::__private::sql::STATUS_SQL)
            .bind(i64::try_from(osa_events::operations::HandlerStatus::EXACT_UP_TO).unwrap())
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(rows.len(), names.len());
        let (sequential_after, read_after): (i64, i64) =
            sqlx::query_as(COUNTERS).fetch_one(&mut *tx).await.unwrap();
        let (sequential, read) = (
            sequential_after - sequential_before,
            read_after - read_before,
        );
        tx.rollback().await.unwrap();
        assert_eq!(
            sequential, 0,
            "status scanned the deliveries (analyzed: {analyze})"
        );
        // Per subscription: due up to the cap, the (empty) scheduled and claimed ranges, dead
        // (200, under the cap), the oldest due and the next delivery: one entry each.
        let bound = names.len() as i64 * (1_001 + 200 + 10);
        assert!(
            read <= bound,
            "status read {read} index entries for {} open deliveries (bound {bound}, analyzed: {analyze})",
            PER_SUBSCRIPTION * names.len() as i64
        );
    }
    let status = ops(&db).status().await.unwrap();
    let a = status.handler("ops.cost.a").unwrap();
    assert_eq!(a.due, osa_events::operations::Count::AtLeast(1_000));
    assert_eq!(a.dead, osa_events::operations::Count::Exact(200));
}

/// Deleting events checks each deleted event's deliveries by primary key, whatever the
/// statistics and whatever plan the session cached: the trigger's statement is planned once per
/// session (plpgsql caches it), here while `deliveries` is nearly empty, and must still look each
/// deleted event up by key once 80,000 deliveries are open. (The first version of the check, a
/// join, was seen comparing every deleted event with every open delivery in the benchmark's prune
/// beside a growing backlog, BENCHMARKS.md; this test did not reproduce that plan, so it guards
/// the plan of the lateral form, not that regression.)
#[tokio::test]
async fn the_delete_check_looks_deliveries_up_by_key_whatever_the_plan_cache_holds() {
    let db = Db::new().await;
    let names = [
        "ops.delete.a",
        "ops.delete.b",
        "ops.delete.c",
        "ops.delete.d",
    ];
    let subscriptions: Vec<Subscription> = names
        .iter()
        .map(|name| subscription(name, StartFrom::Now))
        .collect();
    let ids = db.store.register(&subscriptions).await.unwrap();
    sqlx::query("alter table osa_events.deliveries set (autovacuum_enabled = false)")
        .execute(db.pool())
        .await
        .unwrap();
    // 1,010 events nothing refers to, a few deliveries, statistics of the small table.
    sqlx::query(
        "insert into osa_events.events (id, event_type, event_version, payload)
         select gen_random_uuid(), $1, 1, '{}' from generate_series(1, 1010)",
    )
    .bind(Job::NAME)
    .execute(db.pool())
    .await
    .unwrap();
    publish(&db, 0..10).await;
    sqlx::query("analyze osa_events.deliveries")
        .execute(db.pool())
        .await
        .unwrap();
    // One session deletes a few events now, so its trigger plans on the small table...
    let mut session = db.pool().acquire().await.unwrap();
    sqlx::query("delete from osa_events.events where position <= 10")
        .execute(&mut *session)
        .await
        .unwrap();
    // ...and the open work grows to 80,000 deliveries.
    for start in (10..20_010).step_by(5_000) {
        publish(&db, start..start + 5_000).await;
    }
    assert_eq!(db.deliveries(None).await, 80_040);
    let mut tx = sqlx::Connection::begin(&mut *session).await.unwrap();
    const READ: &str = "select coalesce(sum(pg_stat_get_xact_tuples_returned(c.oid)), 0)::int8
        from pg_class c where c.relnamespace = 'osa_events'::regnamespace
          and c.relname in ('deliveries', 'deliveries_pkey', 'deliveries_claimable')";
    let before: i64 = sqlx::query_scalar(READ).fetch_one(&mut *tx).await.unwrap();
    let deleted =
        sqlx::query("delete from osa_events.events where position > 10 and position <= 1010")
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
    let after: i64 = sqlx::query_scalar(READ).fetch_one(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(deleted, 1000);
    assert!(
        after - before <= 1000 * ids.len() as i64 * 2,
        "the delete check read {} rows and index entries of deliveries for 1,000 events",
        after - before
    );
}
