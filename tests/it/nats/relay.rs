//! The relay: the log reaches the stream whole, in commit order, once, with its envelope; it
//! refuses to start without a stream, stops on a message the stream refuses, survives a NATS
//! restart, and runs under one leader.

use std::time::Duration;

use async_nats::jetstream::stream;
use osa_events::nats::headers;
use osa_events::nats::{Relay, RelayError};
use osa_events::prelude::*;
use osa_events::{Metadata, Outgoing};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Nats, header};
use crate::support::{Db, eventually};

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[event(name = "test.relay.order", version = 2)]
struct Order {
    n: i64,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.relay.other")]
struct Other {
    n: i64,
}

const WAIT: Duration = Duration::from_secs(30);

/// Publishes orders `range` in one transaction, each with routing key `key`.
async fn publish(db: &Db, range: std::ops::Range<i64>, key: Option<&str>) {
    let events: Vec<Outgoing> = range
        .map(|n| {
            let outgoing = Outgoing::new(&Order { n }).unwrap();
            match key {
                Some(key) => outgoing.with_routing_key(key),
                None => outgoing,
            }
        })
        .collect();
    let mut tx = db.pool().begin().await.unwrap();
    osa_events::publish_batch(&mut *tx, &events).await.unwrap();
    tx.commit().await.unwrap();
}

fn spawn_relay(
    db: &Db,
    nats: &Nats,
    relay: Relay,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), RelayError>>,
) {
    let shutdown = CancellationToken::new();
    let store = db.store.clone();
    let connect = nats.connect();
    let token = shutdown.clone();
    let running = tokio::spawn(async move { relay.run(&store, connect, token).await });
    (shutdown, running)
}

fn orders_relay() -> Relay {
    Relay::builder("orders")
        .events::<Order>()
        .batch(50)
        .window(16)
        .build()
        .unwrap()
}

/// The order numbers of the stream's messages, in stream order.
async fn stream_orders(nats: &Nats) -> Vec<i64> {
    nats.messages("EVENTS")
        .await
        .iter()
        .map(|message| serde_json::from_slice::<Order>(&message.payload).unwrap().n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_moves_the_log_in_commit_order_once_with_its_envelope() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.events_stream().await;
    let db = Db::new().await;
    // Two transactions that commit in the other order than they took positions: the stream
    // follows the commits.
    let mut first = db.pool().begin().await.unwrap();
    osa_events::publish(&mut *first, &Order { n: 100 })
        .await
        .unwrap();
    publish(&db, 0..120, Some("eu")).await;
    first.commit().await.unwrap();
    let metadata = Metadata::new()
        .with_correlation_id("req-7")
        .with_extra("tenant", "acme");
    let mut tx = db.pool().begin().await.unwrap();
    osa_events::publish_batch(
        &mut *tx,
        &[Outgoing::new(&Order { n: 200 })
            .unwrap()
            .with_metadata(metadata)
            .unwrap()],
    )
    .await
    .unwrap();
    osa_events::publish(&mut *tx, &Other { n: 0 })
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let (shutdown, running) = spawn_relay(&db, &nats, orders_relay());
    eventually(WAIT, "all 122 orders in the stream", || async {
        nats.count("EVENTS").await >= 122
    })
    .await;
    let mut expected: Vec<i64> = (0..120).collect();
    expected.push(100);
    expected.push(200);
    assert_eq!(
        stream_orders(&nats).await,
        expected,
        "commit order, each once"
    );

    let messages = nats.messages("EVENTS").await;
    let first = &messages[0];
    assert_eq!(first.subject.as_str(), "osa.test.relay.order.eu");
    assert_eq!(header(first, headers::EVENT_TYPE), Some("test.relay.order"));
    assert_eq!(header(first, headers::EVENT_VERSION), Some("2"));
    assert_eq!(header(first, headers::ROUTING_KEY), Some("eu"));
    assert_eq!(
        header(first, headers::MSG_ID),
        header(first, headers::EVENT_ID)
    );
    let last = messages.last().unwrap();
    assert_eq!(last.subject.as_str(), "osa.test.relay.order._");
    assert_eq!(header(last, headers::CORRELATION_ID), Some("req-7"));
    let stored: serde_json::Value =
        serde_json::from_str(header(last, headers::METADATA).unwrap()).unwrap();
    assert_eq!(stored["tenant"], "acme");
    assert_eq!(
        &last.payload[..],
        br#"{"n": 200}"#,
        "the payload as stored, unchanged"
    );

    // The checkpoint passed them all: the status shows no lag, and a restarted relay sends
    // nothing again.
    let relay = orders_relay();
    eventually(WAIT, "no lag", || async {
        relay.status(&db.store).await.unwrap().lag == 0
    })
    .await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let (shutdown, running) = spawn_relay(&db, &nats, orders_relay());
    publish(&db, 300..301, None).await;
    eventually(WAIT, "the new order", || async {
        nats.count("EVENTS").await == 123
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(nats.count("EVENTS").await, 123, "nothing sent twice");
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_relays_only_the_routing_keys_it_is_given() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.events_stream().await;
    let db = Db::new().await;
    publish(&db, 0..5, Some("eu")).await;
    publish(&db, 5..10, Some("us")).await;
    publish(&db, 10..15, None).await;
    let relay = Relay::builder("eu-only")
        .events::<Order>()
        .routing_keys(["eu"])
        .build()
        .unwrap();
    let (shutdown, running) = spawn_relay(&db, &nats, relay.clone());
    eventually(WAIT, "read past everything", || async {
        relay.status(&db.store).await.unwrap().lag == 0
    })
    .await;
    assert_eq!(stream_orders(&nats).await, vec![0, 1, 2, 3, 4]);
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_stream_the_relay_refuses_to_start_and_names_the_subject() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    let db = Db::new().await;
    let (_shutdown, running) = spawn_relay(&db, &nats, orders_relay());
    let error = tokio::time::timeout(WAIT, running)
        .await
        .expect("the relay stops at once")
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, RelayError::NoStream { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("`osa.test.relay.order.*`"), "{message}");
    assert!(message.contains("osa.>"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_stream_refuses_stops_the_relay_before_it_and_says_which() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.context
        .create_stream(stream::Config {
            name: "EVENTS".into(),
            subjects: vec!["osa.>".into()],
            max_message_size: 2_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let db = Db::new().await;
    publish(&db, 0..3, None).await;
    // Order 3 is made too large for the stream's 2,000 bytes.
    let mut tx = db.pool().begin().await.unwrap();
    osa_events::publish(&mut *tx, &Order { n: 3 })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("update osa_events.events set payload = jsonb_build_object('n', 3, 'pad', repeat('x', 4000)) where payload->>'n' = '3'")
        .execute(db.pool())
        .await
        .unwrap();
    publish(&db, 4..6, None).await;

    let relay = Relay::builder("orders")
        .events::<Order>()
        .batch(2)
        .build()
        .unwrap();
    let (_shutdown, running) = spawn_relay(&db, &nats, relay.clone());
    let error = tokio::time::timeout(WAIT, running)
        .await
        .expect("the relay stops")
        .unwrap()
        .unwrap_err();
    let RelayError::Rejected {
        event_type,
        position,
        ..
    } = &error
    else {
        panic!("expected a refusal, got {error:?}");
    };
    assert_eq!(event_type, "test.relay.order");
    assert_eq!(*position, 4, "the fourth event");
    assert_eq!(
        stream_orders(&nats).await,
        vec![0, 1, 2],
        "nothing after it, nothing skipped"
    );
    let status = relay.status(&db.store).await.unwrap();
    assert_eq!(
        status.lag, 4,
        "the checkpoint stays before the refused event"
    );
    let last_error = status
        .last_error
        .expect("the refusal is the relay's last error");
    assert!(last_error.contains("refused event"), "{last_error}");
}

/// JetStream cannot hold a message until it is due, so the relay refuses to relay a delayed
/// event early: it stops before it, saying why, with the events before it relayed; a delayed
/// event of a type the relay does not relay is no obstacle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_event_stops_the_relay_before_it_instead_of_relaying_it_early() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.context
        .create_stream(stream::Config {
            name: "EVENTS".into(),
            subjects: vec!["osa.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let db = Db::new().await;
    publish(&db, 0..2, None).await;
    let delayed = [
        Outgoing::new(&Other { n: 0 })
            .unwrap()
            .deliver_after(Duration::from_secs(60))
            .unwrap(),
        Outgoing::new(&Order { n: 2 })
            .unwrap()
            .deliver_after(Duration::from_secs(60))
            .unwrap(),
    ];
    osa_events::publish_batch(db.pool(), &delayed)
        .await
        .unwrap();
    publish(&db, 3..4, None).await;

    let (_shutdown, running) = spawn_relay(&db, &nats, orders_relay());
    let error = tokio::time::timeout(WAIT, running)
        .await
        .expect("the relay stops")
        .unwrap()
        .unwrap_err();
    let RelayError::Rejected {
        event_type,
        position,
        reason,
        ..
    } = &error
    else {
        panic!("expected a refusal, got {error:?}");
    };
    assert_eq!((event_type.as_str(), *position), ("test.relay.order", 4));
    assert!(
        reason
            .starts_with("it was published delayed (deliver_after 60s), and JetStream cannot hold"),
        "{reason}"
    );
    assert_eq!(stream_orders(&nats).await, vec![0, 1], "nothing early");
}

/// A reset while the relay reads ahead stands: the relay goes back to the beginning and sends
/// the log again, and JetStream, within its duplicate window, stores nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_while_relaying_stands_and_the_stream_stores_nothing_twice() {
    use osa_events::ResetTo;
    use osa_events::store::Store;

    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.events_stream().await;
    let db = Db::new().await;
    for start in (0..2_000).step_by(100) {
        publish(&db, start..start + 100, None).await;
    }
    let relay = Relay::builder("orders")
        .events::<Order>()
        .batch(100)
        .build()
        .unwrap();
    let (shutdown, running) = spawn_relay(&db, &nats, relay.clone());
    eventually(WAIT, "the relay under way", || async {
        nats.count("EVENTS").await >= 300
    })
    .await;
    let projections = db.store.projections().unwrap();
    projections
        .reset(relay.checkpoint_name(), ResetTo::Beginning)
        .await
        .unwrap();
    eventually(WAIT, "everything relayed", || async {
        relay.status(&db.store).await.unwrap().lag == 0 && nats.count("EVENTS").await >= 2_000
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stream_orders(&nats).await,
        (0..2_000).collect::<Vec<_>>(),
        "once each, in order"
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

/// The relay's counters and lag gauges, through the `metrics` facade (a current-thread runtime,
/// so the relay's tasks record into this test's local recorder).
#[tokio::test]
async fn the_relay_counts_what_it_relays_and_samples_its_lag() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.events_stream().await;
    let db = Db::new().await;
    publish(&db, 0..25, None).await;
    let relay = Relay::builder("metered")
        .events::<Order>()
        .batch(10)
        .status_every(Duration::from_millis(50))
        .build()
        .unwrap();
    let (shutdown, running) = spawn_relay(&db, &nats, relay);
    // A snapshot hands out each counter's increments since the last one: sum them.
    let mut totals = std::collections::BTreeMap::<String, f64>::new();
    let mut lag = None;
    let mut seconds = None;
    eventually(WAIT, "25 relayed and a lag of 0 sampled after", || {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let ours = key
                .labels()
                .any(|label| label.key() == "relay" && label.value() == "relay:metered");
            if !ours {
                continue;
            }
            match (key.name(), value) {
                ("osa_events_relay_lag_events", DebugValue::Gauge(value)) => {
                    lag = Some(value.into_inner());
                }
                ("osa_events_relay_lag_seconds", DebugValue::Gauge(value)) => {
                    seconds = Some(value.into_inner());
                }
                (name, DebugValue::Counter(count)) => {
                    *totals.entry(name.to_owned()).or_default() += count as f64;
                }
                _ => {}
            }
        }
        let done = totals.get("osa_events_relay_events_total") == Some(&25.0)
            && lag == Some(0.0)
            && seconds == Some(0.0);
        async move { done }
    })
    .await;
    assert_eq!(totals.get("osa_events_relay_duplicates_total"), Some(&0.0));
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

/// The relay is a projection of any store that has them: on SQLite (which does not read ahead)
/// the log reaches the stream the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_runs_on_sqlite_too() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.events_stream().await;
    let store = osa_events::SqliteStore::temporary().await.unwrap();
    store.migrate().await.unwrap();
    for start in [0, 40, 80] {
        let events: Vec<Outgoing> = (start..start + 40)
            .map(|n| Outgoing::new(&Order { n }).unwrap())
            .collect();
        let mut tx = store.begin().await.unwrap();
        osa_events::sqlite::publish_batch(&mut tx, &events)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let relay = Relay::builder("orders")
        .events::<Order>()
        .batch(50)
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let running = {
        let (store, connect, shutdown) = (store.clone(), nats.connect(), shutdown.clone());
        let relay = relay.clone();
        tokio::spawn(async move { relay.run(&store, connect, shutdown).await })
    };
    eventually(WAIT, "all 120 in the stream", || async {
        nats.count("EVENTS").await >= 120
    })
    .await;
    assert_eq!(stream_orders(&nats).await, (0..120).collect::<Vec<_>>());
    eventually(WAIT, "no lag", || async {
        relay.status(&store).await.unwrap().lag == 0
    })
    .await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
}
