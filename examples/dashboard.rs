//! The dashboard: a small shop whose handlers succeed, retry and dead-letter, with the web
//! dashboard mounted in the same process.
//!
//! ```text
//! cargo run --example dashboard
//! ```
//!
//! Runs on the store `DATABASE_URL` names (`postgres://...` or `sqlite://...`); when it is unset,
//! on an SQLite file in the temporary directory, removed at exit. It serves the dashboard at
//! <http://localhost:8080/osa> (`OSA_DASHBOARD_LISTEN=127.0.0.1:9000` to change the address),
//! publishes an order every 200 ms, and runs until Ctrl-C. Expected output:
//!
//! ```text
//! store: SQLite file /tmp/osa-events-....sqlite (temporary: removed at exit)
//! dashboard: http://localhost:8080/osa (Ctrl-C stops)
//! ```
//!
//! What to look at: `shop.index_search` fails every seventh order once (a retry, shown in red on
//! its chart) and dead-letters the orders of a customer whose name is an HTML `<script>` tag,
//! which the dead letter's page shows as text. Retry one from its page and watch it fail again,
//! or purge them all from the dead letters page. `shop.revenue` is a projection. The same
//! dashboard, alone, is `osa-events dashboard`.

use std::sync::Mutex;
use std::time::Duration;

use osa_events::dashboard::{self, DashboardOptions};
use osa_events::prelude::*;
use osa_events::{AnyStore, Outgoing, Runtime};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "shop.order_placed")]
struct OrderPlaced {
    order: u64,
    customer: String,
    cents: i64,
}

/// The customer whose orders the search index refuses: its name is markup.
const MARKUP_CUSTOMER: &str = "<script>alert('not run')</script>";

#[event_handler(name = "shop.send_receipt", batch = 16, poll = "250ms")]
async fn send_receipt(orders: Batch<OrderPlaced>) -> Result<(), HandlerError> {
    tracing::debug!(orders = orders.len(), "receipts sent");
    Ok(())
}

#[event_handler(
    name = "shop.index_search",
    poll = "250ms",
    retries = 3,
    backoff = "2s"
)]
async fn index_search(order: OrderPlaced, ctx: Ctx) -> Result<(), HandlerError> {
    if order.customer == MARKUP_CUSTOMER {
        return Err(HandlerError::permanent(format!(
            "customer name {:?} is not a valid search term",
            order.customer
        )));
    }
    if order.order.is_multiple_of(7) && ctx.attempt() == 1 {
        return Err(HandlerError::retry("search cluster timed out after 2s"));
    }
    Ok(())
}

#[event_handler(
    name = "shop.notify_warehouse",
    routing_key = "express",
    poll = "250ms"
)]
async fn notify_warehouse(order: OrderPlaced) -> Result<(), HandlerError> {
    tracing::debug!(order = order.order, "warehouse notified");
    Ok(())
}

/// Revenue so far, in cents: the projection's read model (in memory, for the example).
#[derive(Default)]
struct Revenue(Mutex<i64>);

#[projection(name = "shop.revenue", batch = 50, poll = "250ms")]
async fn revenue(orders: Batch<OrderPlaced>, total: State<Revenue>) -> Result<(), HandlerError> {
    let mut total = total.0.lock().expect("no panic holds the revenue lock");
    *total += orders.iter().map(|order| order.cents).sum::<i64>();
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let store = AnyStore::from_env().await?;
    store.migrate().await?;
    println!("store: {}", store.describe());

    let runtime = Runtime::builder(store.clone())
        .resources(Resources::new().with(Revenue::default()))
        // Charts fill from the nodes' heartbeats: every 2 s here (10 s by default).
        .node_heartbeat(Duration::from_secs(2))
        .build()?;
    runtime.register().await?;
    let stopping = runtime.shutdown_token();

    let listen: std::net::SocketAddr = std::env::var("OSA_DASHBOARD_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
        .parse()?;
    // Mounted under /osa, as it would be in a service of your own.
    let app = axum::Router::new().nest(
        "/osa",
        dashboard::router(store.clone(), DashboardOptions::new())?,
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "dashboard: http://localhost:{}/osa (Ctrl-C stops)",
        listen.port()
    );
    let server = tokio::spawn({
        let stopping = stopping.clone();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopping.cancelled_owned())
                .await
        }
    });

    let publisher = tokio::spawn({
        let store = store.clone();
        let stopping = stopping.clone();
        async move {
            let customers = ["ada", "grace", "edsger", "barbara"];
            for order in 1u64.. {
                // One order in fifty is the markup customer's: a dead letter.
                let customer = if order % 50 == 13 {
                    MARKUP_CUSTOMER
                } else {
                    customers[(order % 4) as usize]
                };
                let event = Outgoing::new(&OrderPlaced {
                    order,
                    customer: customer.to_owned(),
                    cents: 500 + (order % 40) as i64 * 125,
                })?;
                let event = if order.is_multiple_of(3) {
                    event.with_routing_key("express")
                } else {
                    event
                };
                store.publish_batch(&[event]).await?;
                tokio::select! {
                    () = stopping.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            Ok::<(), osa_events::Error>(())
        }
    });

    runtime.run().await?;
    publisher.await??;
    server.await??;
    Ok(())
}
