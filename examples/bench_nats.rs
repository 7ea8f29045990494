//! JetStream figures (issue #18): the relay (PostgreSQL → JetStream, acknowledged) against a raw
//! `async-nats` loop publishing the same messages with the same window, and the JetStream store's
//! drain (the runtime, a handler doing nothing) against a raw pull-and-ack loop with the same
//! fetch size.
//!
//! ```text
//! cargo run --release --example bench_nats               # 100,000 events, 3 alternating runs each
//! cargo run --release --example bench_nats -- --quick    # a smoke run: 10,000 events, one run
//! ```
//!
//! Each run gets a fresh stream on a throwaway `nats-server -js` of its own (never a shared one),
//! and the relay a fresh database on the server in `DATABASE_URL` (run it under
//! `cargo run -q -p osa-events-fixtures --bin with-postgres --` when there is none). Prints each
//! run, then the medians and osa-events' ratio to the raw loop. `BENCHMARKS.md`
//! ("JetStream (issue #18)") holds the figures of the last run.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use osa_events::nats::{Connect, JetStreamStore, Relay, headers};
use osa_events::prelude::*;
use osa_events::{Outgoing, PgStore, Runtime};
use osa_events_fixtures::nats::NatsServer;
use osa_events_fixtures::pg::TestDatabase;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The event of every scenario: about 100 bytes of JSON.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "bench.js.record")]
struct Record {
    seq: u64,
    srn: String,
    title: String,
}

/// Handled events, for the drain's finish line.
#[derive(Debug, Default)]
struct Handled(AtomicU64);

/// The drain's handler: counts, does nothing else.
#[event_handler(
    name = "bench.js.drain",
    batch = 100,
    start_from = "beginning",
    poll = "10ms"
)]
async fn drain(records: Batch<Record>, handled: State<Handled>) -> Result<(), HandlerError> {
    handled.0.fetch_add(records.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// The relay's batch and window, and the raw loop's window.
const BATCH: u32 = Relay::DEFAULT_BATCH;
const WINDOW: usize = 256;
/// The drain's fetch size: the handler's `batch`.
const FETCH: usize = 100;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let (events, runs) = if quick { (10_000, 1) } else { (100_000, 3) };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{events} events, {runs} alternating runs; {cores} cores; load average {}",
        load.trim()
    );
    let server = NatsServer::start().await?;
    let client = async_nats::connect(server.url()).await?;
    let context = jetstream::new(client);

    let database = TestDatabase::create().await?;
    let store = PgStore::from_pool(database.pool().clone());
    store.migrate().await?;
    publish_to_log(&store, events).await?;
    println!("relay: {events} events in the log, batch {BATCH}, window {WINDOW}");
    let (mut relayed, mut raw_published) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let osa = relay_run(&store, &server, &context, events, run).await?;
        let raw = raw_publish_run(&store, &context, events, run).await?;
        println!(
            "  run {}: relay {osa:.0} ev/s, raw publish loop {raw:.0} ev/s",
            run + 1
        );
        relayed.push(osa);
        raw_published.push(raw);
    }

    println!("drain: {events} messages in the stream, fetch {FETCH}");
    let (mut drained, mut raw_drained) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let osa = drain_run(&server, &context, events, run).await?;
        let raw = raw_drain_run(&context, events, run).await?;
        println!(
            "  run {}: JetStream store {osa:.0} ev/s, raw pull-and-ack loop {raw:.0} ev/s",
            run + 1
        );
        drained.push(osa);
        raw_drained.push(raw);
    }
    let (relay, raw) = (median(&mut relayed), median(&mut raw_published));
    println!(
        "relay (medians): osa-events {relay:.0} ev/s, raw loop {raw:.0} ev/s: {:.2}× (target ≥ 0.8)",
        relay / raw
    );
    let (drain, raw) = (median(&mut drained), median(&mut raw_drained));
    println!(
        "drain (medians): osa-events {drain:.0} ev/s, raw loop {raw:.0} ev/s: {:.2}× (target ≥ 0.9)",
        drain / raw
    );
    Ok(())
}

fn record(seq: u64) -> Record {
    Record {
        seq,
        srn: format!("srn:bench:{seq:012}"),
        title: "a record of about a hundred bytes of JSON, for the benchmark".to_owned(),
    }
}

/// Publishes `events` records into the log, 1,000 per transaction.
async fn publish_to_log(store: &PgStore, events: u64) -> Result<(), BoxError> {
    for start in (0..events).step_by(1_000) {
        let batch: Vec<Outgoing> = (start..(start + 1_000).min(events))
            .map(|seq| Outgoing::new(&record(seq)))
            .collect::<Result<_, _>>()?;
        let mut tx = store.pool().begin().await?;
        osa_events::publish_batch(&mut *tx, &batch).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// A fresh stream `name` taking `subjects`.
async fn fresh_stream(
    context: &jetstream::Context,
    name: &str,
    subjects: &str,
) -> Result<(), BoxError> {
    let _ = context.delete_stream(name).await;
    // One stream per run, and none left over from the last one to share its subjects.
    for old in [
        "RELAY_0", "RELAY_1", "RELAY_2", "RAW_0", "RAW_1", "RAW_2", "DRAIN_0", "DRAIN_1", "DRAIN_2",
    ] {
        let _ = context.delete_stream(old).await;
    }
    context
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subjects.to_owned(), "osa-dead.>".to_owned()],
            ..Default::default()
        })
        .await?;
    Ok(())
}

async fn wait_for_count(
    context: &jetstream::Context,
    name: &str,
    events: u64,
) -> Result<(), BoxError> {
    let mut stream = context.get_stream(name).await?;
    while stream.info().await?.state.messages < events {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The relay from the log's start until JetStream has acknowledged every event; events/s.
async fn relay_run(
    store: &PgStore,
    server: &NatsServer,
    context: &jetstream::Context,
    events: u64,
    run: usize,
) -> Result<f64, BoxError> {
    let stream = format!("RELAY_{run}");
    fresh_stream(context, &stream, "osa.>").await?;
    let relay = Relay::builder(format!("bench-{run}"))
        .events::<Record>()
        .batch(BATCH)
        .window(WINDOW)
        .build()?;
    let shutdown = CancellationToken::new();
    let running = {
        let (store, connect, shutdown) =
            (store.clone(), Connect::url(server.url()), shutdown.clone());
        tokio::spawn(async move { relay.run(&store, connect, shutdown).await })
    };
    let started = Instant::now();
    wait_for_count(context, &stream, events).await?;
    let elapsed = started.elapsed();
    shutdown.cancel();
    running.await??;
    Ok(events as f64 / elapsed.as_secs_f64())
}

/// The same messages (the relay's subjects, headers and bodies), read from the log and built
/// beforehand, published by a plain loop with the relay's window; events/s.
async fn raw_publish_run(
    store: &PgStore,
    context: &jetstream::Context,
    events: u64,
    run: usize,
) -> Result<f64, BoxError> {
    let stream = format!("RAW_{run}");
    fresh_stream(context, &stream, "osa.>").await?;
    // The relay's own messages: its subjects, its headers, the payloads as stored.
    let rows: Vec<(i64, uuid::Uuid, String, String, f64)> = sqlx::query_as(
        "select position, id, payload::text, metadata::text, extract(epoch from created_at)::float8
         from osa_events.events order by position",
    )
    .fetch_all(store.pool())
    .await?;
    let subjects = osa_events::nats::Subjects::default();
    let messages: Vec<(String, async_nats::HeaderMap, String)> = rows
        .into_iter()
        .map(|(position, id, payload, metadata, published_at)| {
            let event = osa_events::store::Delivery {
                fence: osa_events::store::Fence {
                    position,
                    token: uuid::Uuid::nil(),
                },
                attempt: 1,
                last_error: None,
                event_id: id,
                event_type: "bench.js.record".to_owned(),
                event_version: 1,
                routing_key: None,
                payload: String::new(),
                metadata,
                published_at: std::time::UNIX_EPOCH + Duration::from_secs_f64(published_at),
            };
            (
                subjects.subject(&event.event_type, None),
                headers::for_event(&event),
                payload,
            )
        })
        .collect();
    let publisher = jetstream::ContextBuilder::new()
        .max_ack_inflight(WINDOW)
        .backpressure_on_inflight(true)
        .build(context.client());
    let started = Instant::now();
    let mut in_flight = VecDeque::with_capacity(WINDOW);
    for (subject, message_headers, payload) in messages {
        if in_flight.len() >= WINDOW {
            let ack: jetstream::context::PublishAckFuture =
                in_flight.pop_front().expect("not empty");
            ack.await?;
        }
        in_flight.push_back(
            publisher
                .publish_with_headers(subject, message_headers, payload.into())
                .await?,
        );
    }
    while let Some(ack) = in_flight.pop_front() {
        ack.await?;
    }
    let elapsed = started.elapsed();
    Ok(events as f64 / elapsed.as_secs_f64())
}

/// Fills stream `name` with `events` records as the relay would.
async fn fill(context: &jetstream::Context, name: &str, events: u64) -> Result<(), BoxError> {
    fresh_stream(context, name, "osa.>").await?;
    let mut in_flight = VecDeque::with_capacity(WINDOW);
    for seq in 0..events {
        let mut message_headers = async_nats::HeaderMap::new();
        let id = uuid::Uuid::new_v4().to_string();
        message_headers.insert(headers::MSG_ID, id.as_str());
        message_headers.insert(headers::EVENT_ID, id.as_str());
        message_headers.insert(headers::EVENT_TYPE, "bench.js.record");
        let body = serde_json::to_vec(&record(seq))?;
        if in_flight.len() >= WINDOW {
            let ack: jetstream::context::PublishAckFuture =
                in_flight.pop_front().expect("not empty");
            ack.await?;
        }
        in_flight.push_back(
            context
                .publish_with_headers("osa.bench.js.record._", message_headers, body.into())
                .await?,
        );
    }
    while let Some(ack) = in_flight.pop_front() {
        ack.await?;
    }
    Ok(())
}

/// The runtime on the JetStream store, draining a full stream; events/s.
async fn drain_run(
    server: &NatsServer,
    context: &jetstream::Context,
    events: u64,
    run: usize,
) -> Result<f64, BoxError> {
    let stream = format!("DRAIN_{run}");
    fill(context, &stream, events).await?;
    let store = JetStreamStore::builder(Connect::url(server.url()), stream)
        .connect()
        .await?;
    let handled = Arc::new(Handled::default());
    let runtime = Runtime::builder(store)
        .only(["bench.js.drain"])
        .resources(Resources::new().with_arc(handled.clone()))
        .handle_signals(false)
        .build()?;
    runtime.register().await?;
    let shutdown = runtime.shutdown_token();
    let started = Instant::now();
    let running = tokio::spawn(runtime.run());
    while handled.0.load(Ordering::Relaxed) < events {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    running.await??;
    // The next run's consumer is made afresh.
    let _ = context
        .delete_consumer_from_stream(
            osa_events::nats::source::consumer_name("bench.js.drain"),
            format!("DRAIN_{run}"),
        )
        .await;
    Ok(events as f64 / elapsed.as_secs_f64())
}

/// A plain loop on a durable pull consumer: fetch up to `FETCH`, decode, ack each; events/s.
async fn raw_drain_run(
    context: &jetstream::Context,
    events: u64,
    run: usize,
) -> Result<f64, BoxError> {
    let name = format!("DRAIN_RAW_{run}");
    let _ = context.delete_stream(&name).await;
    fill(context, &name, events).await?;
    let stream = context.get_stream(&name).await?;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            filter_subject: "osa.bench.js.record.*".to_owned(),
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut acked = 0;
    while acked < events {
        let mut batch = consumer.fetch().max_messages(FETCH).messages().await?;
        while let Some(message) = batch.next().await {
            let message = message?;
            let _: Record = serde_json::from_slice(&message.payload)?;
            message.ack().await?;
            acked += 1;
        }
    }
    context.client().flush().await?;
    let elapsed = started.elapsed();
    let _ = context.delete_stream(&name).await;
    Ok(events as f64 / elapsed.as_secs_f64())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
