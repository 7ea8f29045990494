//! Quickstart: publish a few events in a transaction and watch two handlers process them.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Runs on the store `DATABASE_URL` names (`postgres://...` or `sqlite://...`); when it is unset,
//! on an SQLite file in the temporary directory, removed at exit: nothing to install, no server.
//! Expected output, in some order:
//!
//! ```text
//! store: SQLite file /tmp/osa-events-....sqlite (temporary: removed at exit)
//! published 5 events (3 with routing key "vector") in one transaction
//! [log]    record srn:1 published: "Whale songs"
//! [vector] indexed a batch of 3: srn:1, srn:3, srn:5
//! ...
//! handled 8 deliveries in 0.0xx s; exiting
//! ```
//!
//! Both handlers receive `RecordPublished`. `log_record` has no routing-key filter, so it gets all
//! five events, one call each. `index_vectors` filters on `routing_key = "vector"` and takes a
//! `Batch`, so it gets the three vector events in one call. The program stops the runtime once all
//! eight deliveries are handled and exits 0.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use osa_events::prelude::*;
use osa_events::{AnyStore, CancellationToken, Outgoing, Runtime};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
    title: String,
}

/// Counts handled deliveries and stops the runtime when all expected ones are done.
struct Progress {
    handled: AtomicUsize,
    expected: usize,
    done: CancellationToken,
}

impl Progress {
    fn add(&self, count: usize) {
        let handled = self.handled.fetch_add(count, Ordering::SeqCst) + count;
        if handled >= self.expected {
            self.done.cancel();
        }
    }
}

#[event_handler(name = "quickstart.log", poll = "500ms")]
async fn log_record(event: RecordPublished, progress: State<Progress>) -> Result<(), HandlerError> {
    println!("[log]    record {} published: {:?}", event.srn, event.title);
    progress.add(1);
    Ok(())
}

#[event_handler(
    name = "quickstart.vector",
    routing_key = "vector",
    batch = 64,
    poll = "500ms",
    retries = 5
)]
async fn index_vectors(
    events: Batch<RecordPublished>,
    progress: State<Progress>,
) -> Result<(), HandlerError> {
    let srns: Vec<&str> = events.iter().map(|event| event.srn.as_str()).collect();
    println!(
        "[vector] indexed a batch of {}: {}",
        srns.len(),
        srns.join(", ")
    );
    progress.add(events.len());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    // `DATABASE_URL` if set, else a temporary SQLite file.
    let store = AnyStore::from_env().await?;
    store.migrate().await?;
    println!("store: {}", store.describe());

    let done = CancellationToken::new();
    let progress = Progress {
        handled: AtomicUsize::new(0),
        expected: 5 + 3, // every event for the log, the vector ones for the index
        done: done.clone(),
    };
    let runtime = Runtime::builder(store.clone())
        .resources(Resources::new().with(progress))
        .shutdown_token(done.clone())
        .build()?;
    // Subscriptions receive events published after they exist: register before publishing.
    runtime.register().await?;

    let started = Instant::now();
    let records = [
        ("srn:1", "Whale songs", true),
        ("srn:2", "Tide tables", false),
        ("srn:3", "Kelp forests", true),
        ("srn:4", "Harbour seals", false),
        ("srn:5", "Deep-sea vents", true),
    ];
    let mut batch = Vec::new();
    for (srn, title, vector) in records {
        let event = Outgoing::new(&RecordPublished {
            srn: srn.into(),
            title: title.into(),
        })?;
        batch.push(if vector {
            event.with_routing_key("vector")
        } else {
            event
        });
    }
    // In one transaction: all five or none. (With your own writes in the same transaction, use
    // the store's API: `osa_events::publish_batch(&mut *tx, ..)` on PostgreSQL,
    // `osa_events::sqlite::publish_batch(&mut tx, ..)` on SQLite.)
    store.publish_batch(&batch).await?;
    println!("published 5 events (3 with routing key \"vector\") in one transaction");

    runtime.run().await?;
    println!(
        "handled 8 deliveries in {:.3} s; exiting",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
