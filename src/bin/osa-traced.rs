//! `osa-traced`: one side of the trace-propagation test (`tests/it/observability.rs`), as its own
//! process, exporting its OpenTelemetry spans to the SDK's in-memory exporter and printing them
//! as JSON lines when done.
//!
//! ```text
//! osa-traced consume <database-url> <events>   runs the handlers until each handled <events>
//! osa-traced publish <database-url> <events>   publishes <events> under an HTTP-like server span
//! ```
//!
//! `consume` prints `ready` once its subscriptions are registered, then, when done, one line per
//! finished span: `{"name", "trace_id", "span_id", "parent_span_id", "kind", "attributes",
//! "links"}`. `publish` prints its spans the same way. The test runs both and checks that the
//! handler's spans continue the publisher's trace.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use osa_events::prelude::*;
use osa_events::{Outgoing, PgStore, Runtime};
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use tracing_subscriber::prelude::*;

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "traced.order")]
struct OrderPlaced {
    order: u64,
}

/// How many events each handler has handled.
#[derive(Default)]
struct Handled {
    each: AtomicU64,
    batch: AtomicU64,
}

#[event_handler(name = "traced.each", poll = "100ms")]
async fn each(_order: OrderPlaced, handled: State<Handled>) -> Result<(), HandlerError> {
    handled.each.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[event_handler(name = "traced.batch", batch = 100, poll = "100ms")]
async fn batch(orders: Batch<OrderPlaced>, handled: State<Handled>) -> Result<(), HandlerError> {
    handled
        .batch
        .fetch_add(orders.len() as u64, Ordering::SeqCst);
    Ok(())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("osa-traced: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, url, events] = args.as_slice() else {
        return Err("usage: osa-traced consume|publish <database-url> <events>".into());
    };
    let events: u64 = events.parse()?;
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("osa-traced")))
        .try_init()?;
    let store = PgStore::connect(url).await?;
    match mode.as_str() {
        "consume" => consume(store, events).await?,
        "publish" => publish(&store, events).await?,
        other => return Err(format!("unknown mode `{other}`").into()),
    }
    provider.force_flush()?;
    for span in exporter.get_finished_spans()? {
        println!("{}", serde_json::to_string(&describe(&span))?);
    }
    provider.shutdown()?;
    Ok(())
}

async fn consume(store: PgStore, events: u64) -> Result<(), BoxError> {
    let handled = Arc::new(Handled::default());
    let runtime = Runtime::builder(store)
        .only(["traced.each", "traced.batch"])
        .resources(Resources::new().with_arc(Arc::clone(&handled)))
        .handle_signals(false)
        .build()?;
    runtime.register().await?;
    println!("ready");
    let shutdown = runtime.shutdown_token();
    let running = tokio::spawn(runtime.run());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while handled.each.load(Ordering::SeqCst) < events
        || handled.batch.load(Ordering::SeqCst) < events
    {
        if tokio::time::Instant::now() > deadline {
            return Err("the handlers did not handle every event within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    running.await??;
    Ok(())
}

async fn publish(store: &PgStore, events: u64) -> Result<(), BoxError> {
    // What a web framework's tracing middleware opens for a request.
    let request = tracing::info_span!(
        "POST /orders",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/orders",
    );
    let orders: Vec<Outgoing> = (0..events)
        .map(|order| Outgoing::new(&OrderPlaced { order }))
        .collect::<Result<_, _>>()?;
    async {
        let mut tx = store.pool().begin().await?;
        osa_events::publish_batch(&mut *tx, &orders[..1]).await?;
        osa_events::publish_batch(&mut *tx, &orders[1..]).await?;
        tx.commit().await?;
        Ok::<(), BoxError>(())
    }
    .instrument(request)
    .await
}

/// A finished span as the test reads it.
fn describe(span: &SpanData) -> serde_json::Value {
    let attributes: BTreeMap<String, String> = span
        .attributes
        .iter()
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect();
    let links: Vec<serde_json::Value> = span
        .links
        .iter()
        .map(|link| {
            serde_json::json!({
                "trace_id": link.span_context.trace_id().to_string(),
                "span_id": link.span_context.span_id().to_string(),
            })
        })
        .collect();
    serde_json::json!({
        "name": span.name,
        "trace_id": span.span_context.trace_id().to_string(),
        "span_id": span.span_context.span_id().to_string(),
        "parent_span_id": span.parent_span_id.to_string(),
        "kind": format!("{:?}", span.span_kind),
        "attributes": attributes,
        "links": links,
    })
}
