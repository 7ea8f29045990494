//! Delayed publish: a reminder published now and handled two seconds later, beside an event
//! handled at once.
//!
//! ```text
//! cargo run --example delayed_publish
//! ```
//!
//! Runs on the store `DATABASE_URL` names (`postgres://...` or `sqlite://...`); when it is unset,
//! on an SQLite file in the temporary directory, removed at exit. Expected output:
//!
//! ```text
//! store: SQLite file /tmp/osa-events-....sqlite (temporary: removed at exit)
//! published order 7 and its payment reminder, due in 2 s (the store's clock)
//! [0.0xs] order 7 placed
//! [2.0xs] reminder: order 7 is still unpaid
//! exiting
//! ```
//!
//! The reminder's delivery becomes due two seconds after the publish, by the database's clock;
//! the handler claims it at its first poll (every 100 ms) after that. The program stops the
//! runtime once both are handled and exits 0.

use std::time::{Duration, Instant};

use osa_events::prelude::*;
use osa_events::{AnyStore, CancellationToken, Outgoing, Runtime};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "order.placed")]
struct OrderPlaced {
    order: u64,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "order.payment_reminder")]
struct PaymentReminder {
    order: u64,
}

/// When the example started, and the token that stops it after the reminder.
struct Clock {
    started: Instant,
    done: CancellationToken,
}

#[event_handler(name = "delayed_publish.placed", poll = "100ms")]
async fn placed(order: OrderPlaced, clock: State<Clock>) -> Result<(), HandlerError> {
    let at = clock.started.elapsed().as_secs_f64();
    println!("[{at:.2}s] order {} placed", order.order);
    Ok(())
}

#[event_handler(name = "delayed_publish.reminder", poll = "100ms")]
async fn remind(reminder: PaymentReminder, clock: State<Clock>) -> Result<(), HandlerError> {
    let at = clock.started.elapsed().as_secs_f64();
    println!(
        "[{at:.2}s] reminder: order {} is still unpaid",
        reminder.order
    );
    clock.done.cancel();
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = AnyStore::from_env().await?;
    store.migrate().await?;
    println!("store: {}", store.describe());

    let done = CancellationToken::new();
    let clock = Clock {
        started: Instant::now(),
        done: done.clone(),
    };
    let runtime = Runtime::builder(store.clone())
        .only(["delayed_publish.placed", "delayed_publish.reminder"])
        .resources(Resources::new().with(clock))
        .shutdown_token(done)
        .build()?;
    runtime.register().await?;

    let order = 7;
    let batch = [
        Outgoing::new(&OrderPlaced { order })?,
        Outgoing::new(&PaymentReminder { order })?.deliver_after(Duration::from_secs(2))?,
    ];
    store.publish_batch(&batch).await?;
    println!("published order {order} and its payment reminder, due in 2 s (the store's clock)");

    runtime.run().await?;
    println!("exiting");
    Ok(())
}
