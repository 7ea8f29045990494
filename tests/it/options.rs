//! Each `#[event_handler]` option changes behaviour: routing_key, batch, poll, backoff and
//! max_backoff here, and start_from reaches the stored subscription; retries, timeout,
//! claim_timeout and concurrency are covered in `failures` and `runtime`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osa_events::Outgoing;
use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

use crate::support::{Db, eventually};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.options.item")]
struct Item {
    n: u32,
}

const WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Seen(Mutex<Vec<u32>>);

#[event_handler(name = "options.routed", routing_key = "vector", poll = "20ms")]
async fn routed(item: Item, seen: State<Seen>) -> Result<(), HandlerError> {
    (*seen).0.lock().unwrap().push(item.n);
    Ok(())
}

#[tokio::test]
async fn routing_key_limits_a_handler_to_its_key() {
    let db = Db::new().await;
    let seen = Arc::new(Seen::default());
    let running = db
        .start(&["options.routed"], Resources::new().with_arc(seen.clone()))
        .await;
    osa_events::publish_routed(db.pool(), "keyword", &Item { n: 1 })
        .await
        .unwrap();
    osa_events::publish(db.pool(), &Item { n: 2 })
        .await
        .unwrap();
    osa_events::publish_routed(db.pool(), "vector", &Item { n: 3 })
        .await
        .unwrap();
    eventually(WAIT, "the vector item handled", || async {
        seen.0.lock().unwrap().len() == 1
    })
    .await;
    running.stop().await;
    assert_eq!(*seen.0.lock().unwrap(), vec![3]);
    assert_eq!(
        db.deliveries(None).await,
        0,
        "no delivery was even created for other keys"
    );
}

#[derive(Default)]
struct Sizes(Mutex<Vec<usize>>);

#[event_handler(name = "options.batch", batch = 7, poll = "20ms")]
async fn sized(items: Batch<Item>, sizes: State<Sizes>) -> Result<(), HandlerError> {
    (*sizes).0.lock().unwrap().push(items.len());
    Ok(())
}

#[tokio::test]
async fn batch_caps_how_many_events_one_call_gets() {
    let db = Db::new().await;
    let sizes = Arc::new(Sizes::default());
    let running = db
        .start(&["options.batch"], Resources::new().with_arc(sizes.clone()))
        .await;
    let batch: Vec<Outgoing> = (0..30)
        .map(|n| Outgoing::new(&Item { n }).unwrap())
        .collect();
    osa_events::publish_batch(db.pool(), &batch).await.unwrap();
    eventually(WAIT, "all handled", || async {
        db.deliveries(None).await == 0
    })
    .await;
    running.stop().await;
    let sizes = sizes.0.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 30);
    assert!(sizes.iter().all(|size| *size <= 7), "{sizes:?}");
    assert_eq!(sizes[0], 7, "a full backlog fills the batch: {sizes:?}");
}

#[derive(Default)]
struct Arrivals(Mutex<Vec<Instant>>);

#[event_handler(name = "options.poll", poll = "300ms")]
async fn polled(_item: Item, arrivals: State<Arrivals>) -> Result<(), HandlerError> {
    (*arrivals).0.lock().unwrap().push(Instant::now());
    Ok(())
}

/// Inserts an event and its delivery by hand, without the publisher's NOTIFY: only polling finds it.
async fn publish_silently(db: &Db, n: u32) {
    sqlx::query(
        "with e as (insert into osa_events.events (id, event_type, event_version, payload) \
                    values (gen_random_uuid(), 'test.options.item', 1, jsonb_build_object('n', $1::int)) \
                    returning position) \
         insert into osa_events.deliveries (subscription_id, event_position) \
         select s.id, e.position from e, osa_events.subscriptions s where s.name = 'options.poll'",
    )
    .bind(i32::try_from(n).unwrap())
    .execute(db.pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn poll_finds_work_that_no_notification_announced() {
    let db = Db::new().await;
    let arrivals = Arc::new(Arrivals::default());
    let running = db
        .start(
            &["options.poll"],
            Resources::new().with_arc(arrivals.clone()),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await; // the loop is idle now
    let published = Instant::now();
    publish_silently(&db, 1).await;
    eventually(WAIT, "the silent event handled", || async {
        arrivals.0.lock().unwrap().len() == 1
    })
    .await;
    let waited = arrivals.0.lock().unwrap()[0] - published;
    // Notified publishes are handled in milliseconds; this one waits for the next poll.
    assert!(
        waited <= Duration::from_millis(1000),
        "picked up after {waited:?}, poll is 300ms"
    );

    let published = Instant::now();
    osa_events::publish(db.pool(), &Item { n: 2 })
        .await
        .unwrap();
    eventually(WAIT, "the notified event handled", || async {
        arrivals.0.lock().unwrap().len() == 2
    })
    .await;
    let woken = arrivals.0.lock().unwrap()[1] - published;
    running.stop().await;
    assert!(
        woken < Duration::from_millis(250),
        "a notification wakes the idle loop at once, took {woken:?}"
    );
}

#[event_handler(
    name = "options.backoff",
    retries = 3,
    backoff = "200ms",
    max_backoff = "300ms",
    poll = "10ms"
)]
async fn backing_off(_item: Item, arrivals: State<Arrivals>) -> Result<(), HandlerError> {
    (*arrivals).0.lock().unwrap().push(Instant::now());
    Err(HandlerError::retry("not yet"))
}

#[tokio::test]
async fn backoff_spaces_retries_and_max_backoff_caps_them() {
    let db = Db::new().await;
    let arrivals = Arc::new(Arrivals::default());
    let running = db
        .start(
            &["options.backoff"],
            Resources::new().with_arc(arrivals.clone()),
        )
        .await;
    osa_events::publish(db.pool(), &Item { n: 1 })
        .await
        .unwrap();
    eventually(WAIT, "the item dead", || async {
        db.deliveries(Some("dead")).await == 1
    })
    .await;
    running.stop().await;
    let arrivals = arrivals.0.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 4);
    let gaps: Vec<Duration> = arrivals.windows(2).map(|pair| pair[1] - pair[0]).collect();
    // Nominal delays 200ms, 400ms→capped 300ms, 800ms→capped 300ms; equal jitter keeps at least half.
    assert!(gaps[0] >= Duration::from_millis(100), "{gaps:?}");
    for gap in &gaps[1..] {
        assert!(*gap >= Duration::from_millis(150), "{gaps:?}");
        assert!(
            *gap < Duration::from_millis(300 + 250),
            "max_backoff caps the delay: {gaps:?}"
        );
    }
}

#[event_handler(name = "options.relisten", poll = "30s")]
async fn relisten(_item: Item, arrivals: State<Arrivals>) -> Result<(), HandlerError> {
    (*arrivals).0.lock().unwrap().push(Instant::now());
    Ok(())
}

#[tokio::test]
async fn a_dropped_listener_connection_is_re_established() {
    let db = Db::new().await;
    let arrivals = Arc::new(Arrivals::default());
    let running = db
        .start(
            &["options.relisten"],
            Resources::new().with_arc(arrivals.clone()),
        )
        .await;
    let listeners = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from pg_stat_activity where datname = current_database() and query like 'LISTEN%'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap()
    };
    eventually(WAIT, "the runtime listens", || async {
        listeners().await == 1
    })
    .await;
    // Kill the listening session; with `poll = "30s"`, only a new LISTEN can wake the loop in time.
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity \
         where datname = current_database() and query like 'LISTEN%'",
    )
    .execute(db.pool())
    .await
    .unwrap();
    eventually(WAIT, "the runtime listens again", || async {
        listeners().await == 1
    })
    .await;
    let published = Instant::now();
    osa_events::publish(db.pool(), &Item { n: 1 })
        .await
        .unwrap();
    eventually(WAIT, "the event handled", || async {
        arrivals.0.lock().unwrap().len() == 1
    })
    .await;
    let woken = arrivals.0.lock().unwrap()[0] - published;
    running.stop().await;
    assert!(
        woken < Duration::from_secs(5),
        "woken by the new listener, not the 30 s poll: {woken:?}"
    );
}

#[event_handler(name = "options.start_beginning", start_from = "beginning")]
async fn from_the_beginning(_item: Item) -> Result<(), HandlerError> {
    Ok(())
}

#[event_handler(name = "options.start_after", start_from = 1042)]
async fn after_a_position(_item: Item) -> Result<(), HandlerError> {
    Ok(())
}

#[event_handler(name = "options.start_default")]
async fn from_now(_item: Item) -> Result<(), HandlerError> {
    Ok(())
}

#[tokio::test]
async fn start_from_is_carried_by_the_spec_into_the_subscription() {
    use osa_events::__private::Handler;
    use osa_events::operations::StartFrom;

    assert_eq!(
        FromTheBeginningHandler::SPEC.start_from(),
        StartFrom::Beginning
    );
    assert_eq!(
        AfterAPositionHandler::SPEC.start_from(),
        StartFrom::AfterPosition(1042)
    );
    assert_eq!(FromNowHandler::SPEC.start_from(), StartFrom::Now);

    let db = Db::new().await;
    let running = db
        .start(
            &[
                "options.start_beginning",
                "options.start_after",
                "options.start_default",
            ],
            Resources::new(),
        )
        .await;
    running.stop().await;
    let stored: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "select name, config -> 'start_from' from osa_events.subscriptions order by name",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        stored,
        [
            ("options.start_after".to_owned(), serde_json::json!(1042)),
            (
                "options.start_beginning".to_owned(),
                serde_json::json!("beginning")
            ),
            ("options.start_default".to_owned(), serde_json::json!("now")),
        ]
    );
}
