//! PostgreSQL → JetStream → another process, end to end.
//!
//! ```text
//! cargo run --example jetstream
//! ```
//!
//! 1. This process publishes three `order.placed` events inside a PostgreSQL transaction, each with
//!    a correlation id of its own (`checkout-1`, ...).
//! 2. A handler on PostgreSQL confirms each order: it publishes `order.confirmed` through its `Tx`,
//!    which stamps the correlation id and names the placed event as the cause.
//! 3. The relay moves both event types into the JetStream stream `EVENTS`, in commit order.
//! 4. A second process (this program again, started with `consumer`) runs a handler on the
//!    JetStream store, receives each `order.confirmed`, and prints the chain.
//!
//! Uses `DATABASE_URL` and `NATS_URL` when they are set; otherwise it starts a throwaway
//! PostgreSQL cluster and a throwaway `nats-server -js` (from Debian's packages, installed with apt
//! when missing and running as root), removed at exit. It prints something like:
//!
//! ```text
//! [publisher] placed order 1 (event 0192…, correlation checkout-1)
//! [postgres handler] order 1 placed → publishing order.confirmed
//! [jetstream consumer 41234] order 1 confirmed: correlation checkout-1, caused by 0192… (the placed event)
//! ```

use std::process::Stdio;
use std::time::Duration;

use osa_events::nats::{Connect, JetStreamStore, Relay, Subjects};
use osa_events::prelude::*;
use osa_events::{Metadata, Outgoing, PgStore, Runtime};
use osa_events_fixtures::nats::NatsServer;
use osa_events_fixtures::pg::database_url_or_throwaway;
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "order.placed")]
struct OrderPlaced {
    order: u64,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "order.confirmed")]
struct OrderConfirmed {
    order: u64,
}

/// How many orders the example places.
const ORDERS: u64 = 3;

/// On PostgreSQL: confirms a placed order in the same transaction as its completion.
#[event_handler(name = "example.confirm", poll = "100ms")]
async fn confirm(placed: OrderPlaced, mut tx: Tx) -> Result<(), HandlerError> {
    println!(
        "[postgres handler] order {} placed → publishing order.confirmed",
        placed.order
    );
    tx.publish(&OrderConfirmed {
        order: placed.order,
    })
    .await
    .map_err(HandlerError::retry)?;
    Ok(())
}

/// Confirmations seen by the consumer process, which exits when it has them all.
#[derive(Debug, Default)]
struct Seen(std::sync::atomic::AtomicU64);

/// On JetStream, in the second process: prints the chain each confirmation carries.
#[event_handler(name = "example.ship", poll = "100ms", start_from = "beginning")]
async fn ship(confirmed: OrderConfirmed, ctx: Ctx, seen: State<Seen>) -> Result<(), HandlerError> {
    println!(
        "[jetstream consumer {}] order {} confirmed: correlation {}, caused by {} (the placed event)",
        std::process::id(),
        confirmed.order,
        ctx.metadata().correlation_id().unwrap_or("none"),
        ctx.metadata().causation_id().unwrap_or("none"),
    );
    seen.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    if std::env::args().nth(1).as_deref() == Some("consumer") {
        return consume().await;
    }
    let (database_url, cluster) = database_url_or_throwaway()?;
    let (nats_url, nats_server) = match std::env::var("NATS_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let server = NatsServer::start().await?;
            eprintln!(
                "NATS_URL is unset: started a throwaway nats-server -js at {} (removed on exit)",
                server.url()
            );
            (server.url(), Some(server))
        }
    };
    let result = run(&database_url, &nats_url).await;
    drop(nats_server);
    drop(cluster);
    result
}

/// The publishing side: PostgreSQL, its handler, the relay, and the consumer process.
async fn run(database_url: &str, nats_url: &str) -> Result<(), BoxError> {
    let store = PgStore::connect(database_url).await?;
    store.migrate().await?;
    let nats = async_nats::connect(nats_url).await?;
    osa_events::nats::stream::create(
        &async_nats::jetstream::new(nats),
        "EVENTS",
        &Subjects::default(),
    )
    .await?;

    let runtime = Runtime::builder(store.clone())
        .only(["example.confirm"])
        .handle_signals(false)
        .build()?;
    runtime.register().await?;
    let shutdown = runtime.shutdown_token();
    let handlers = tokio::spawn(runtime.run());
    let relay = Relay::builder("example")
        .events::<OrderPlaced>()
        .events::<OrderConfirmed>()
        .build()?;
    let relaying = {
        let (store, connect, shutdown) = (store.clone(), Connect::url(nats_url), shutdown.clone());
        tokio::spawn(async move { relay.run(&store, connect, shutdown).await })
    };
    let mut consumer = tokio::process::Command::new(std::env::current_exe()?)
        .arg("consumer")
        .env("NATS_URL", nats_url)
        .stdout(Stdio::inherit())
        .spawn()?;

    // Placed inside the application's own transaction: relayed if and only if it commits.
    let mut tx = store.pool().begin().await?;
    for order in 1..=ORDERS {
        let correlation = format!("checkout-{order}");
        let placed = Outgoing::new(&OrderPlaced { order })?
            .with_metadata(Metadata::new().with_correlation_id(&correlation))?;
        println!(
            "[publisher] placed order {order} (event {}, correlation {correlation})",
            placed.id()
        );
        osa_events::publish_batch(&mut *tx, &[placed]).await?;
    }
    tx.commit().await?;

    let status = tokio::time::timeout(Duration::from_secs(60), consumer.wait()).await??;
    shutdown.cancel();
    handlers.await??;
    relaying.await??;
    if !status.success() {
        return Err(format!("the consumer process failed: {status}").into());
    }
    println!(
        "done: {ORDERS} orders placed on PostgreSQL, confirmed, relayed and handled from JetStream"
    );
    Ok(())
}

/// The second process: the JetStream store, until every confirmation arrived.
async fn consume() -> Result<(), BoxError> {
    let url = std::env::var("NATS_URL")?;
    let store = JetStreamStore::builder(Connect::url(url), "EVENTS")
        .connect()
        .await?;
    let seen = std::sync::Arc::new(Seen::default());
    let runtime = Runtime::builder(store)
        .only(["example.ship"])
        .resources(Resources::new().with_arc(seen.clone()))
        .build()?;
    runtime.register().await?;
    let shutdown = runtime.shutdown_token();
    let running = tokio::spawn(runtime.run());
    while seen.0.load(std::sync::atomic::Ordering::SeqCst) < ORDERS {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    running.await??;
    Ok(())
}
