//! The JetStream store: the same handlers on a durable pull consumer. Success acks, a retryable
//! error comes back after its backoff with the delivery count as its attempt, a permanent error
//! ends on the dead-letter subject with its error, a `Tx` handler is refused at start-up, and one
//! process runs handlers on PostgreSQL and on JetStream side by side.

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

/// Publishes orders `range` straight to the stream, as the relay would.
async fn publish_to_stream(nats: &Nats, range: std::ops::Range<i64>) {
    for n in range {
        let mut message_headers = async_nats::HeaderMap::new();
        let id = uuid::Uuid::new_v4().to_string();
        message_headers.insert(headers::MSG_ID, id.as_str());
        message_headers.insert(headers::EVENT_ID, id.as_str());
        message_headers.insert(headers::EVENT_TYPE, "test.js.order");
        message_headers.insert(headers::CORRELATION_ID, format!("req-{n}"));
        nats.context
            .publish_with_headers(
                "osa.test.js.order._",
                message_headers,
                format!(r#"{{"n": {n}}}"#).into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
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
