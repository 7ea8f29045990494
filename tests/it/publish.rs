//! Transactional publish: commit and rollback, batches, wake-ups on commit, what a publish reports,
//! and the schema's guards. The contract's publish rules (idempotent ids, fan-out, routing keys,
//! other event types) run on `PgStore` in `contract.rs`.

use std::time::Duration;

use osa_events::{Event, Outgoing};

use osa_events::store::{Store, Subscription, SubscriptionId};
use serde::{Deserialize, Serialize};

use crate::support::Db;

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[event(name = "test.publish.record")]
struct Record {
    n: u32,
}

fn subscription(name: &str, routing_key: Option<&str>) -> Subscription {
    Subscription {
        name: name.to_owned(),
        event_type: Record::NAME.to_owned(),
        routing_key: routing_key.map(str::to_owned),
        config: serde_json::json!({}),
        revision: 1,
        start_from: Default::default(),
        ordered: None,
    }
}

/// Registers `subscriptions`, returning their ids in the same order.
async fn subscribe(db: &Db, subscriptions: &[Subscription]) -> Vec<SubscriptionId> {
    db.store.register(subscriptions).await.unwrap()
}

async fn events(db: &Db) -> i64 {
    sqlx::query_scalar("select count(*) from osa_events.events")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// Deliveries per subscription id.
async fn deliveries_of(db: &Db, id: SubscriptionId) -> i64 {
    sqlx::query_scalar("select count(*) from osa_events.deliveries where subscription_id = $1")
        .bind(id.0)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn rollback_publishes_nothing() {
    let db = Db::new().await;
    let ids = subscribe(&db, &[subscription("all", None)]).await;
    let mut tx = db.pool().begin().await.unwrap();
    osa_events::publish(&mut *tx, &Record { n: 1 })
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(events(&db).await, 0);
    assert_eq!(deliveries_of(&db, ids[0]).await, 0);
}

#[tokio::test]
async fn commit_publishes_once_with_its_payload() {
    let db = Db::new().await;
    let ids = subscribe(&db, &[subscription("all", None)]).await;
    let mut tx = db.pool().begin().await.unwrap();
    let published = osa_events::publish(&mut *tx, &Record { n: 7 })
        .await
        .unwrap();
    assert!(published.is_new);
    assert_eq!(published.deliveries, 1, "one subscription, one delivery");
    let id = published.id;
    tx.commit().await.unwrap();
    let (event_type, version, payload): (String, i32, serde_json::Value) = sqlx::query_as(
        "select event_type, event_version, payload from osa_events.events where id = $1",
    )
    .bind(id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!((event_type.as_str(), version), ("test.publish.record", 1));
    assert_eq!(payload, serde_json::json!({ "n": 7 }));
    assert_eq!(deliveries_of(&db, ids[0]).await, 1);
}

#[tokio::test]
async fn batch_publish_writes_every_event_in_one_call() {
    let db = Db::new().await;
    subscribe(&db, &[subscription("all", None)]).await;
    let batch: Vec<Outgoing> = (0..500)
        .map(|n| Outgoing::new(&Record { n }).unwrap())
        .collect();
    let mut tx = db.pool().begin().await.unwrap();
    assert_eq!(
        osa_events::publish_batch(&mut *tx, &batch)
            .await
            .unwrap()
            .events,
        500
    );
    tx.commit().await.unwrap();
    let in_order: Vec<i64> =
        sqlx::query_scalar("select (payload->>'n')::int8 from osa_events.events order by position")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(
        in_order,
        (0..500).collect::<Vec<i64>>(),
        "positions follow the batch order"
    );
    assert_eq!(db.deliveries(Some("pending")).await, 500);
}

#[tokio::test]
async fn publish_wakes_listeners_only_on_commit() {
    let db = Db::new().await;
    let ids = subscribe(&db, &[subscription("woken", None)]).await;
    let mut wake_ups = db.store.wake_ups().expect("PgStore listens").await.unwrap();

    let mut tx = db.pool().begin().await.unwrap();
    osa_events::publish(&mut *tx, &Record { n: 1 })
        .await
        .unwrap();
    let before_commit = tokio::time::timeout(Duration::from_millis(200), wake_ups.next()).await;
    assert!(before_commit.is_err(), "no wake-up before commit");
    tx.commit().await.unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(5), wake_ups.next())
        .await
        .expect("a wake-up after commit")
        .unwrap();
    assert_eq!(woken, Some(ids[0]));
}

#[tokio::test]
async fn publishing_before_migrations_is_a_clear_error() {
    let database = osa_events_fixtures::pg::TestDatabase::create()
        .await
        .unwrap();
    let error = osa_events::publish(database.pool(), &Record { n: 1 })
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("osa_events"), "{message}");
}

#[tokio::test]
async fn an_oversized_payload_is_rejected_before_anything_is_written() {
    #[derive(Event, Serialize, Deserialize)]
    #[event(name = "test.publish.blob")]
    struct Blob {
        bytes: String,
    }

    let db = Db::new().await;
    let big = Blob {
        bytes: "x".repeat(osa_events::DEFAULT_MAX_PAYLOAD_BYTES),
    };
    let error = osa_events::publish(db.pool(), &big).await.unwrap_err();
    assert!(
        matches!(error, osa_events::Error::PayloadTooLarge { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("cannot publish `test.publish.blob`: its payload is 1048588 bytes"),
        "{error}"
    );
    assert_eq!(events(&db).await, 0);

    let small_limit = Outgoing::with_max_payload_bytes(&Record { n: 1 }, 4).unwrap_err();
    assert!(matches!(
        small_limit,
        osa_events::Error::PayloadTooLarge {
            size: 7,
            limit: 4,
            ..
        }
    ));
    assert!(
        Outgoing::with_max_payload_bytes(&big, 2 * osa_events::DEFAULT_MAX_PAYLOAD_BYTES).is_ok()
    );
}

/// Issue #12 item 17: a publish says what it created, so "no handler subscribed yet" is visible
/// to the caller instead of a silent `Ok`.
#[tokio::test]
async fn a_publish_reports_the_deliveries_it_created() {
    let db = Db::new().await;
    let before_any_handler = osa_events::publish(db.pool(), &Record { n: 1 })
        .await
        .unwrap();
    assert!(before_any_handler.is_new);
    assert_eq!(before_any_handler.deliveries, 0);
    assert!(before_any_handler.reached_no_handler());

    subscribe(
        &db,
        &[
            subscription("all", None),
            subscription("vector", Some("vector")),
        ],
    )
    .await;
    let plain = osa_events::publish(db.pool(), &Record { n: 2 })
        .await
        .unwrap();
    assert_eq!(
        plain.deliveries, 1,
        "only the subscription with no routing key"
    );
    let routed = osa_events::publish_routed(db.pool(), "vector", &Record { n: 3 })
        .await
        .unwrap();
    assert_eq!(routed.deliveries, 2, "both subscriptions");
    assert!(!routed.reached_no_handler());

    let batch: Vec<Outgoing> = (0..3)
        .map(|n| {
            Outgoing::new(&Record { n })
                .unwrap()
                .with_routing_key("vector")
        })
        .collect();
    let published = osa_events::publish_batch(db.pool(), &batch).await.unwrap();
    assert_eq!((published.events, published.deliveries), (3, 6));
    let again = osa_events::publish_batch(db.pool(), &batch).await.unwrap();
    assert_eq!(
        (again.events, again.deliveries),
        (0, 0),
        "repeated ids create nothing"
    );
    assert!(!again.reached_no_handler(), "nothing new was written");
}

/// Issue #12 item 15: deleting events or subscriptions never deletes their open work or dead
/// letters (the foreign keys used to cascade); it is refused, naming what is in the way.
#[tokio::test]
async fn deleting_events_or_subscriptions_with_deliveries_is_refused() {
    let db = Db::new().await;
    let ids = subscribe(&db, &[subscription("all", None)]).await;
    osa_events::publish(db.pool(), &Record { n: 1 })
        .await
        .unwrap();
    sqlx::query("update osa_events.deliveries set status = 'dead'")
        .execute(db.pool())
        .await
        .unwrap();
    for statement in [
        "delete from osa_events.events",
        "delete from osa_events.subscriptions",
        "truncate osa_events.events",
        "truncate osa_events.subscriptions",
    ] {
        let refused = sqlx::query(statement)
            .execute(db.pool())
            .await
            .expect_err(statement)
            .to_string();
        assert!(
            refused.contains("cannot") && refused.contains("deliveries"),
            "{statement}: {refused}"
        );
    }
    assert_eq!(
        deliveries_of(&db, ids[0]).await,
        1,
        "the dead letter is kept"
    );
    assert_eq!(events(&db).await, 1);

    // Once its work is gone (completed, or deleted on purpose), an event can be deleted.
    sqlx::query("delete from osa_events.deliveries")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("delete from osa_events.events")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(events(&db).await, 0);
}

/// What the delayed handler saw: when each event was handled, by the test's clock.
#[derive(Default)]
struct Handled(std::sync::Mutex<Vec<(u32, std::time::Instant)>>);

#[osa_events::event_handler(name = "publish.delayed", poll = "50ms")]
async fn delayed(
    record: Record,
    handled: osa_events::State<Handled>,
) -> Result<(), osa_events::HandlerError> {
    handled
        .0
        .lock()
        .unwrap()
        .push((record.n, std::time::Instant::now()));
    Ok(())
}

/// A real runtime on PostgreSQL: an event published with a 1.5 s delay is handled no earlier
/// than that, and soon after (within its handler's poll, plus slack for a loaded machine), while
/// an event published beside it without a delay is handled at once.
#[tokio::test]
async fn a_delayed_event_is_handled_after_its_delay_by_the_database_clock() {
    const DELAY: Duration = Duration::from_millis(1500);
    let db = Db::new().await;
    let handled = std::sync::Arc::new(Handled::default());
    let running = db
        .start(
            &["publish.delayed"],
            osa_events::Resources::new().with_arc(handled.clone()),
        )
        .await;
    let batch = [
        Outgoing::new(&Record { n: 1 })
            .unwrap()
            .deliver_after(DELAY)
            .unwrap(),
        Outgoing::new(&Record { n: 2 }).unwrap(),
    ];
    let mut tx = db.pool().begin().await.unwrap();
    let published_at = std::time::Instant::now();
    osa_events::publish_batch(&mut *tx, &batch).await.unwrap();
    tx.commit().await.unwrap();

    crate::support::eventually(Duration::from_secs(10), "both events handled", || async {
        handled.0.lock().unwrap().len() == 2
    })
    .await;
    running.stop().await;
    let handled = handled.0.lock().unwrap().clone();
    assert_eq!(
        handled.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [2, 1],
        "the undelayed one first"
    );
    let waited = handled[1].1 - published_at;
    assert!(
        waited >= DELAY - Duration::from_millis(50),
        "handled after {waited:?}, before its delay of {DELAY:?}"
    );
    assert!(
        waited < DELAY + Duration::from_secs(5),
        "handled {waited:?} after it was published: long after its delay"
    );
}

/// The due time is the database's: `deliver_at` on the event is its `created_at` plus the delay
/// (the same `now()`), every delivery's `run_at` is that time, and a time asked for is kept as
/// asked, to the microsecond PostgreSQL keeps.
#[tokio::test]
async fn a_delayed_publish_stores_its_due_time_by_the_database_clock() {
    let db = Db::new().await;
    subscribe(&db, &[subscription("a", None), subscription("b", None)]).await;
    // About a year ahead, to the microsecond.
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
        + 365 * 24 * 3_600_000_000;
    let micros = i64::try_from(micros).unwrap();
    let at = std::time::UNIX_EPOCH + Duration::from_micros(micros.unsigned_abs());
    let batch = [
        Outgoing::new(&Record { n: 1 })
            .unwrap()
            .deliver_after(Duration::from_secs(90))
            .unwrap(),
        Outgoing::new(&Record { n: 2 })
            .unwrap()
            .deliver_at(at)
            .unwrap(),
        Outgoing::new(&Record { n: 3 }).unwrap(),
    ];
    let mut tx = db.pool().begin().await.unwrap();
    let published = osa_events::publish_batch(&mut *tx, &batch).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!((published.events, published.deliveries), (3, 6));
    let rows: Vec<(i64, Option<f64>, Option<i64>, f64)> = sqlx::query_as(
        "select (e.payload->>'n')::int8,
                extract(epoch from e.deliver_at - e.created_at)::float8,
                (extract(epoch from e.deliver_at) * 1000000)::int8,
                extract(epoch from d.run_at - e.created_at)::float8
         from osa_events.events e join osa_events.deliveries d on d.event_position = e.position
         order by e.position, d.subscription_id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 6, "{rows:?}");
    for (n, delay, deliver_at, run_in) in rows {
        match n {
            1 => {
                assert_eq!(delay, Some(90.0), "now() + 90 s");
                assert_eq!(run_in, 90.0);
            }
            2 => {
                assert_eq!(deliver_at, Some(micros), "as asked");
                assert!(run_in > 364.0 * 24.0 * 3600.0, "due at that time: {run_in}");
            }
            _ => {
                assert_eq!((delay, deliver_at), (None, None), "not delayed");
                assert_eq!(run_in, 0.0, "due at once");
            }
        }
    }
}

/// A publish whose deliveries are all delayed wakes no worker (the claim would find nothing due);
/// a worker's poll finds them when they are due.
#[tokio::test]
async fn a_delayed_publish_wakes_no_listener() {
    let db = Db::new().await;
    let ids = subscribe(&db, &[subscription("later", None)]).await;
    let mut wake_ups = db.store.wake_ups().expect("PgStore listens").await.unwrap();
    let delayed = Outgoing::new(&Record { n: 1 })
        .unwrap()
        .deliver_after(Duration::from_secs(60))
        .unwrap();
    osa_events::publish_batch(db.pool(), &[delayed])
        .await
        .unwrap();
    let woken = tokio::time::timeout(Duration::from_millis(300), wake_ups.next()).await;
    assert!(woken.is_err(), "woken by a delayed publish: {woken:?}");
    osa_events::publish(db.pool(), &Record { n: 2 })
        .await
        .unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(5), wake_ups.next())
        .await
        .expect("a wake-up for the undelayed publish")
        .unwrap();
    assert_eq!(woken, Some(ids[0]));
}
