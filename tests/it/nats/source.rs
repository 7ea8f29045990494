//! The JetStream store: the same handlers on a durable pull consumer. Success acks, a retryable
//! error comes back after its backoff with the delivery count as its attempt, a permanent error
//! ends on the dead-letter subject with its error, the heartbeat's in-progress acks keep a long
//! call's message from being delivered again, a routing key filters the subjects (a key with a
//! `.` included), a `BatchOutcome`'s failures are dead-lettered one by one, a `Tx` handler is
//! refused at start-up, and one process runs handlers on PostgreSQL and on JetStream side by side.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::nats::source::{consumer_name, dead};
use osa_events::nats::{JetStreamStore, Relay, headers};
use osa_events::prelude::*;
use osa_events::{Error, Runtime};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Nats, header};
use crate::support::{Db, eventually};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.js.order")]
struct JsOrder {
    n: i64,
}

const WAIT: Duration = Duration::from_secs(30);

/// Attempts seen per order, and the correlation ids.
#[derive(Debug, Default)]
struct Seen {
    attempts: Mutex<BTreeMap<i64, Vec<u32>>>,
    correlation: Mutex<Vec<Option<String>>>,
}

impl Seen {
    fn attempts(&self) -> BTreeMap<i64, Vec<u32>> {
        self.attempts.lock().unwrap().clone()
    }
}

/// Multiples of 3 fail their first attempt; 7 fails for good.
#[event_handler(
    name = "test.js.flaky",
    batch = 8,
    retries = 2,
    backoff = "20ms",
    poll = "50ms"
)]
async fn flaky(order: JsOrder, ctx: Ctx, seen: State<Seen>) -> Result<(), HandlerError> {
    seen.attempts
        .lock()
        .unwrap()
        .entry(order.n)
        .or_default()
        .push(ctx.attempt());
    seen.correlation
        .lock()
        .unwrap()
        .push(ctx.metadata().correlation_id().map(str::to_owned));
    if order.n == 7 {
        return Err(HandlerError::permanent("order 7 is malformed"));
    }
    if order.n % 3 == 0 && ctx.attempt() == 1 {
        return Err(HandlerError::retry(
            "the first try of a multiple of 3 fails",
        ));
    }
    Ok(())
}

/// Takes a `Tx`, which JetStream cannot give.
#[event_handler(name = "test.js.tx")]
async fn with_tx(_order: JsOrder, _tx: Tx) -> Result<(), HandlerError> {
    Ok(())
}

/// The PostgreSQL side of the side-by-side test.
/// Ordered: JetStream has no per-key claims, so the runtime refuses it there.
#[event_handler(name = "test.js.ordered", ordered = "skip")]
async fn js_ordered(_order: JsOrder) -> Result<(), HandlerError> {
    Ok(())
}

#[event_handler(name = "test.js.on_postgres", poll = "50ms")]
async fn on_postgres(order: JsOrder, seen: State<Seen>) -> Result<(), HandlerError> {
    seen.attempts
        .lock()
        .unwrap()
        .entry(1_000 + order.n)
        .or_default()
        .push(0);
    Ok(())
}

async fn store(nats: &Nats) -> JetStreamStore {
    JetStreamStore::builder(nats.connect(), "EVENTS")
        .connect()
        .await
        .expect("the JetStream store connects")
}

fn runtime(
    store: impl osa_events::store::Store,
    handler: &'static str,
    seen: Arc<Seen>,
    shutdown: &CancellationToken,
) -> Runtime {
    Runtime::builder(store)
        .only([handler])
        .resources(Resources::new().with_arc(seen))
        .handle_signals(false)
        .shutdown_token(shutdown.clone())
        .build()
        .expect("the runtime builds")
}

/// Publishes orders `range` straight to the stream, as the relay would, without routing keys.
async fn publish_to_stream(nats: &Nats, range: std::ops::Range<i64>) {
    for n in range {
        publish_order(nats, n, None).await;
    }
}

/// Publishes order `n` to the stream with routing key `key` (its subject token encoded) and
/// correlation id `req-<n>`, and waits for its PubAck.
async fn publish_order(nats: &Nats, n: i64, key: Option<&str>) {
    let mut message_headers = async_nats::HeaderMap::new();
    let id = uuid::Uuid::new_v4().to_string();
    message_headers.insert(headers::MSG_ID, id.as_str());
    message_headers.insert(headers::EVENT_ID, id.as_str());
    message_headers.insert(headers::EVENT_TYPE, "test.js.order");
    message_headers.insert(headers::CORRELATION_ID, format!("req-{n}"));
    if let Some(key) = key {
        message_headers.insert(headers::ROUTING_KEY, key);
    }
    let subject = osa_events::nats::Subjects::default().subject("test.js.order", key);
    nats.context
        .publish_with_headers(subject, message_headers, format!(r#"{{"n": {n}}}"#).into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_on_jetstream_ack_retry_with_the_delivery_count_and_dead_letter() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.events_stream().await;
    let store = store(&nats).await;
    let seen = Arc::new(Seen::default());
    let shutdown = CancellationToken::new();
    let runtime = runtime(store.clone(), "test.js.flaky", seen.clone(), &shutdown);
    runtime.register().await.expect("the consumer is created");
    let running = tokio::spawn(runtime.run());
    publish_to_stream(&nats, 0..10).await;

    let dead_subject = store.dead_letter_subject("test.js.flaky");
    assert_eq!(dead_subject, "osa-dead.test_js_flaky-ddab8d6d");
    eventually(WAIT, "every order handled and 7 dead-lettered", || async {
        let attempts = seen.attempts();
        attempts.len() == 10
            && [0, 3, 6, 9].iter().all(|n| attempts[n] == vec![1, 2])
            && nats.count("EVENTS").await == 11
    })
    .await;
    let attempts = seen.attempts();
    for n in [1, 2, 4, 5, 8] {
        assert_eq!(attempts[&n], vec![1], "order {n} succeeds at once");
    }
    assert_eq!(attempts[&7], vec![1], "a permanent error is not retried");
    let dead: Vec<_> = nats
        .messages("EVENTS")
        .await
        .into_iter()
        .filter(|message| message.subject.as_str() == dead_subject)
        .collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(&dead[0].payload[..], br#"{"n": 7}"#);
    assert_eq!(header(&dead[0], dead::HANDLER), Some("test.js.flaky"));
    assert_eq!(header(&dead[0], dead::ATTEMPTS), Some("1"));
    let error = header(&dead[0], dead::ERROR).unwrap();
    assert!(error.contains("order 7 is malformed"), "{error}");
    assert!(
        seen.correlation
            .lock()
            .unwrap()
            .contains(&Some("req-4".to_owned())),
        "Ctx::metadata comes from the headers"
    );

    // Nothing is left for the consumer: every message was acked or terminated.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut consumer = nats
        .context
        .get_stream("EVENTS")
        .await
        .unwrap()
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&consumer_name(
            "test.js.flaky",
        ))
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.num_pending, 0);
    assert_eq!(info.num_ack_pending, 0, "nothing left unacknowledged");
    assert_eq!(info.config.max_deliver, 4, "retries + 2");
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tx_handler_is_refused_on_jetstream_at_start_up() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.events_stream().await;
    let error = Runtime::builder(store(&nats).await)
        .only(["test.js.tx"])
        .handle_signals(false)
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("handler `test.js.tx` takes a `Tx`")
            && message.contains("JetStream has no transaction to join"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_handler_is_refused_on_jetstream_at_start_up() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.events_stream().await;
    let error = Runtime::builder(store(&nats).await)
        .only(["test.js.ordered"])
        .handle_signals(false)
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "invalid configuration: handler `test.js.ordered` is `ordered = \"skip\"`, but this \
         store does not keep deliveries in order by key (`Store::orders_by_key` is false): run it \
         on PostgreSQL, SQLite or the in-memory store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_runs_handlers_on_postgres_and_on_jetstream_side_by_side() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.events_stream().await;
    let db = Db::new().await;
    let seen = Arc::new(Seen::default());
    let shutdown = CancellationToken::new();
    let on_jetstream = runtime(store(&nats).await, "test.js.flaky", seen.clone(), &shutdown);
    let on_postgres = runtime(
        db.store.clone(),
        "test.js.on_postgres",
        seen.clone(),
        &shutdown,
    );
    on_jetstream.register().await.unwrap();
    on_postgres.register().await.unwrap();
    let relay = Relay::builder("js-orders")
        .events::<JsOrder>()
        .build()
        .unwrap();
    let relay_store = db.store.clone();
    let relay_shutdown = shutdown.clone();
    let connect = nats.connect();
    let relaying =
        tokio::spawn(async move { relay.run(&relay_store, connect, relay_shutdown).await });
    let both = tokio::spawn(async move { tokio::try_join!(on_jetstream.run(), on_postgres.run()) });

    let mut tx = db.pool().begin().await.unwrap();
    for n in [1, 2, 4] {
        osa_events::publish(&mut *tx, &JsOrder { n }).await.unwrap();
    }
    tx.commit().await.unwrap();
    eventually(WAIT, "each order handled on both stores", || async {
        seen.attempts().keys().copied().collect::<Vec<_>>() == vec![1, 2, 4, 1_001, 1_002, 1_004]
    })
    .await;
    shutdown.cancel();
    both.await.unwrap().unwrap();
    relaying.await.unwrap().unwrap();
}

/// Runs for 2.5 s with a claim of 1 s: only the heartbeat's in-progress acks keep JetStream from
/// delivering it again meanwhile to the handler's other claim loop, which keeps fetching.
#[event_handler(
    name = "test.js.slow",
    claim_timeout = "1s",
    poll = "50ms",
    concurrency = 2
)]
async fn slow(order: JsOrder, seen: State<Seen>) -> Result<(), HandlerError> {
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    seen.attempts
        .lock()
        .unwrap()
        .entry(order.n)
        .or_default()
        .push(0);
    Ok(())
}

/// Receives only the orders published with routing key `eu.west` (a key with a `.`, written
/// `eu%2Ewest` in the subject), in batches; fails odd ones for good with a `BatchOutcome`.
#[event_handler(
    name = "test.js.routed",
    routing_key = "eu.west",
    batch = 10,
    poll = "50ms"
)]
async fn routed(orders: Batch<JsOrder>, seen: State<Seen>) -> Result<BatchOutcome, HandlerError> {
    let mut outcome = BatchOutcome::new();
    for (index, order) in orders.iter().enumerate() {
        seen.attempts
            .lock()
            .unwrap()
            .entry(order.n)
            .or_default()
            .push(1);
        if order.n % 2 == 1 {
            outcome.fail(
                index,
                HandlerError::permanent(format!("order {} is odd", order.n)),
            );
        }
    }
    Ok(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_keeps_a_long_handler_s_message_from_being_delivered_again() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.events_stream().await;
    let seen = Arc::new(Seen::default());
    let shutdown = CancellationToken::new();
    let runtime = runtime(store(&nats).await, "test.js.slow", seen.clone(), &shutdown);
    runtime.register().await.unwrap();
    let running = tokio::spawn(runtime.run());
    publish_to_stream(&nats, 0..1).await;
    eventually(WAIT, "handled", || async { !seen.attempts().is_empty() }).await;
    // Past another ack wait: a redelivery would have been handled by now.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        seen.attempts()[&0],
        vec![0],
        "handled once, never delivered again"
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_key_filters_the_subjects_and_a_batch_outcome_dead_letters_its_failures() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.events_stream().await;
    let store = store(&nats).await;
    let seen = Arc::new(Seen::default());
    let shutdown = CancellationToken::new();
    let runtime = runtime(store.clone(), "test.js.routed", seen.clone(), &shutdown);
    runtime.register().await.unwrap();
    let running = tokio::spawn(runtime.run());
    for n in 0..6 {
        publish_order(&nats, n, Some("eu.west")).await;
        publish_order(&nats, 100 + n, Some("eu")).await;
    }
    publish_to_stream(&nats, 200..202).await;
    let dead_subject = store.dead_letter_subject("test.js.routed");
    eventually(
        WAIT,
        "the eu.west orders handled and the odd ones dead",
        || async {
            let dead = nats
                .messages("EVENTS")
                .await
                .iter()
                .filter(|message| message.subject.as_str() == dead_subject)
                .count();
            seen.attempts().len() == 6 && dead == 3
        },
    )
    .await;
    assert_eq!(
        seen.attempts().keys().copied().collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>(),
        "only routing key eu.west"
    );
    assert!(
        seen.attempts().values().all(|calls| calls.len() == 1),
        "none retried"
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
}
