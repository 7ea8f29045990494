//! Observability: Prometheus metrics on `/metrics` and the runtime's health on `/health`, served by
//! a small HTTP server beside the runtime while events flow.
//!
//! ```text
//! cargo run --example observability
//! curl -s http://127.0.0.1:9464/health
//! curl -s http://127.0.0.1:9464/metrics | grep '^osa_events'
//! ```
//!
//! Uses the PostgreSQL server in `DATABASE_URL` (give it a database of its own: the example
//! publishes into it), or a throwaway cluster when it is unset. It publishes an `image.uploaded`
//! event every 100 ms for 60 s (`OBSERVABILITY_SECONDS`; 0 runs until Ctrl-C), serves on
//! `127.0.0.1:9464` (`OBSERVABILITY_ADDR`), then stops gracefully and exits 0.
//!
//! Two handlers and a projection receive the events. `observe.thumbnail` fails twice for each
//! image whose id ends in 7 (retried with backoff, then it succeeds) and for good on every 25th
//! (a dead letter at once); `observe.search` indexes batches on two claim loops; the projection
//! `observe.bytes` sums the bytes uploaded, led by one process. The endpoints:
//!
//! | path | answers |
//! | --- | --- |
//! | `GET /metrics` | the Prometheus text format, rendered by `metrics-exporter-prometheus` |
//! | `GET /health` | the [`HealthReport`] as JSON: 200 when ready, 503 otherwise |
//! | `GET /health/ready` | the same, for a readiness probe |
//! | `GET /health/live` | the same report, 200 when live, 503 otherwise, for a liveness probe |
//!
//! Expected output (ids and times vary; a WARN line per dead letter, every 25th image):
//!
//! ```text
//! serving http://127.0.0.1:9464/metrics and /health (/health/live, /health/ready) for 60 s
//! publishing an `image.uploaded` event every 100 ms
//! GET /health -> 200: {"state":"running","live":true,"ready":true,"reasons":[],"handlers":[{"name":"observe.search",...
//! 2026-12-01T22:41:22.650166Z  WARN osa_events_core::worker::batch: dead letter handler="observe.thumbnail" event_type=image.uploaded event_id=01a233c5-… position=25 attempts=1 error=image 25 is corrupt
//! ...
//! stopping: published 600 events
//! ```
//!
//! Stop the database meanwhile (or refuse connections to its database) and `/health` answers 503
//! with the reasons ("handler `observe.search`: its last 12 claims failed: …") while
//! `/health/live` stays 200; it is ready again with the first claim after the database is back.
//!
//! `docs/health.md` shows a whole `/health` response of a run, and what live and ready mean.
//!
//! [`HealthReport`]: osa_events::health::HealthReport

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State as Shared;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use osa_events::health::Health;
use osa_events::prelude::*;
use osa_events::{CancellationToken, Runtime};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long the exporter keeps a gauge nobody sets any more: four of the runtime's metrics
/// intervals, so a node that stopped sampling does not export its last values for ever (the
/// claim loops' gauge is set every 5 s, so it is kept while its loops run). See `docs/metrics.md`.
const GAUGE_IDLE_TIMEOUT: Duration = Runtime::DEFAULT_METRICS_INTERVAL.saturating_mul(4);

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "image.uploaded")]
struct ImageUploaded {
    id: u64,
    bytes: u64,
}

/// Makes a thumbnail of each image: busy twice for ids ending in 7, and unable to read every 25th.
#[event_handler(
    name = "observe.thumbnail",
    retries = 3,
    backoff = "200ms",
    poll = "500ms"
)]
async fn thumbnail(image: ImageUploaded, ctx: Ctx) -> Result<(), HandlerError> {
    if image.id.is_multiple_of(25) {
        return Err(HandlerError::permanent(format!(
            "image {} is corrupt",
            image.id
        )));
    }
    if image.id % 10 == 7 && ctx.attempt() < 3 {
        return Err(HandlerError::retry("the thumbnail service is busy"));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(())
}

/// Indexes images for search, a batch at a time, on two claim loops.
#[event_handler(name = "observe.search", batch = 32, concurrency = 2, poll = "500ms")]
async fn index_search(images: Batch<ImageUploaded>) -> Result<(), HandlerError> {
    tokio::time::sleep(Duration::from_millis(2) * images.len() as u32).await;
    Ok(())
}

/// The bytes uploaded so far: the projection's read model.
#[derive(Default)]
struct Totals {
    bytes: AtomicU64,
}

/// Sums the bytes uploaded, in log order.
#[projection(name = "observe.bytes", batch = 100, poll = "500ms")]
async fn bytes_uploaded(
    images: Batch<ImageUploaded>,
    totals: State<Totals>,
) -> Result<(), HandlerError> {
    let bytes: u64 = images.iter().map(|image| image.bytes).sum();
    totals.bytes.fetch_add(bytes, Ordering::Relaxed);
    Ok(())
}

/// What the HTTP handlers share.
#[derive(Clone)]
struct Probes {
    prometheus: PrometheusHandle,
    health: Health,
}

/// `GET /metrics`.
async fn metrics(Shared(probes): Shared<Probes>) -> Response {
    let content_type = [(
        header::CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8",
    )];
    (content_type, probes.prometheus.render()).into_response()
}

/// `GET /health` and `GET /health/ready`: 200 when ready.
async fn ready(Shared(probes): Shared<Probes>) -> Response {
    let report = probes.health.report();
    (status(report.ready), axum::Json(report)).into_response()
}

/// `GET /health/live`: 200 when live.
async fn live(Shared(probes): Shared<Probes>) -> Response {
    let report = probes.health.report();
    (status(report.live), axum::Json(report)).into_response()
}

fn status(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Publishes an image every 100 ms until shutdown; returns how many it published. A publish that
/// fails (the database is away) is reported and skipped, as a request of the application would
/// fail: the runtime goes on, and shows it in `/health`.
async fn publish_images(store: PgStore, stopping: CancellationToken) -> u64 {
    let mut published = 0;
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stopping.cancelled() => return published,
        }
        let image = ImageUploaded {
            id: published + 1,
            bytes: 40_000 + (published + 1) * 7_919 % 60_000,
        };
        match publish_one(&store, &image).await {
            Ok(()) => published += 1,
            Err(error) => eprintln!("cannot publish image {}: {error}", image.id),
        }
    }
}

/// Publishes `image` in a transaction of its own.
async fn publish_one(store: &PgStore, image: &ImageUploaded) -> osa_events::Result<()> {
    let mut tx = store.pool().begin().await?;
    osa_events::publish(&mut *tx, image).await?;
    tx.commit().await?;
    Ok(())
}

/// `GET path` on `addr`, as a probe would: the status code and the body.
async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_owned()))
}

/// Waits until the runtime is ready (at most 30 s), then shows what a readiness probe sees.
async fn show_health_once_ready(addr: SocketAddr, health: Health) {
    for _ in 0..300 {
        if health.report().ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match http_get(addr, "/health").await {
        Ok((status, body)) => println!("GET /health -> {status}: {body}"),
        Err(error) => eprintln!("GET /health failed: {error}"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let addr: SocketAddr = std::env::var("OBSERVABILITY_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:9464".to_owned())
        .parse()?;
    let seconds: u64 = match std::env::var("OBSERVABILITY_SECONDS") {
        Ok(seconds) => seconds.parse()?,
        Err(_) => 60,
    };

    // The recorder first: the claim loops resolve their metrics once, as they start, and a
    // metric resolved before a recorder is installed records nowhere. Histograms as Prometheus
    // histograms (the default renders summaries), as `docs/metrics.md` recommends.
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full("osa_events_batch_size".into()),
            &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0],
        )?
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT))
        .install_recorder()?;

    let (url, _cluster) = osa_events_fixtures::pg::database_url_or_throwaway()?;
    let store = PgStore::connect(&url).await?;
    store.migrate().await?;
    let runtime = Runtime::builder(store.clone())
        .resources(Resources::new().with(Totals::default()))
        .build()?;
    // Subscriptions receive events published after they exist: register before publishing.
    runtime.register().await?;
    let health = runtime.health();
    let shutdown = runtime.shutdown_token();

    // Without its own HTTP listener the exporter needs its upkeep run (it drains histograms).
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });

    let probes = Probes {
        prometheus,
        health: health.clone(),
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(ready))
        .route("/health/ready", get(ready))
        .route("/health/live", get(live))
        .with_state(probes);
    let listener = TcpListener::bind(addr).await?;
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );
    match seconds {
        0 => println!(
            "serving http://{addr}/metrics and /health (/health/live, /health/ready) until Ctrl-C"
        ),
        seconds => {
            println!(
                "serving http://{addr}/metrics and /health (/health/live, /health/ready) for {seconds} s"
            );
            let stop = shutdown.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                stop.cancel();
            });
        }
    }

    println!("publishing an `image.uploaded` event every 100 ms");
    let publisher = tokio::spawn(publish_images(store, shutdown.clone()));
    tokio::spawn(show_health_once_ready(addr, health));

    runtime.run().await?;
    let published = publisher.await?;
    println!("stopping: published {published} events");
    server.await??;
    Ok(())
}
