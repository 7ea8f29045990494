//! Per-key order: three orders' events through one handler with eight claim loops, each order's
//! events one at a time and in publish order, the orders in parallel.
//!
//! ```text
//! cargo run --example ordered
//! ```
//!
//! Runs on the store `DATABASE_URL` names (`postgres://...` or `sqlite://...`); when it is unset,
//! on an SQLite file in the temporary directory, removed at exit. The interleaving of the orders
//! varies from run to run; each order's own lines never do:
//!
//! ```text
//! store: SQLite file /tmp/osa-events-....sqlite (temporary: removed at exit)
//! published 12 events of 3 orders, interleaved
//! order 1: created
//! order 2: created
//! order 3: created
//! order 1: paid
//! ...
//! order 3: delivered
//! every order's events came in publish order; exiting
//! ```
//!
//! The first attempt of each order's `paid` event fails: the retry holds back that order's
//! `shipped` and `delivered` until it succeeds, and only that order's. Remove `ordered` from the
//! handler to see the orders' steps come out of order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::prelude::*;
use osa_events::{AnyStore, CancellationToken, Outgoing, Runtime};
use serde::{Deserialize, Serialize};

/// One step of an order's life; every event of one order has its id as ordering key.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "order.step", ordering_key = "order")]
struct OrderStep {
    order: u64,
    step: String,
}

const STEPS: [&str; 4] = ["created", "paid", "shipped", "delivered"];
const ORDERS: u64 = 3;

/// The steps each order went through, and the token that stops the example when all are in.
struct Seen {
    steps: Mutex<BTreeMap<u64, Vec<String>>>,
    done: CancellationToken,
}

#[event_handler(
    name = "ordered.orders",
    ordered = "block",
    concurrency = 8,
    batch = 4,
    backoff = "200ms",
    poll = "100ms"
)]
async fn track(step: OrderStep, seen: State<Seen>, ctx: Ctx) -> Result<(), HandlerError> {
    if step.step == "paid" && ctx.attempt() == 1 {
        return Err(HandlerError::retry("the payment provider timed out"));
    }
    // Some work, so that other loops would overtake this one were the order not held back.
    tokio::time::sleep(Duration::from_millis(20)).await;
    println!("order {}: {}", step.order, step.step);
    let mut steps = seen.steps.lock().expect("no handler panics holding it");
    steps.entry(step.order).or_default().push(step.step);
    if steps.values().map(Vec::len).sum::<usize>() == STEPS.len() * ORDERS as usize {
        seen.done.cancel();
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = AnyStore::from_env().await?;
    store.migrate().await?;
    println!("store: {}", store.describe());

    let done = CancellationToken::new();
    let seen = Arc::new(Seen {
        steps: Mutex::new(BTreeMap::new()),
        done: done.clone(),
    });
    let runtime = Runtime::builder(store.clone())
        .only(["ordered.orders"])
        .resources(Resources::new().with_arc(seen.clone()))
        .shutdown_token(done)
        .build()?;
    runtime.register().await?;

    // Step by step, the orders interleaved: created 1, created 2, created 3, paid 1, ...
    let batch = STEPS
        .iter()
        .flat_map(|step| {
            (1..=ORDERS).map(move |order| {
                Outgoing::new(&OrderStep {
                    order,
                    step: (*step).to_owned(),
                })
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    store.publish_batch(&batch).await?;
    println!(
        "published {} events of {ORDERS} orders, interleaved",
        batch.len()
    );

    runtime.run().await?;
    let steps = seen.steps.lock().expect("no handler panicked holding it");
    for (order, steps) in steps.iter() {
        if steps.iter().map(String::as_str).ne(STEPS) {
            return Err(format!("order {order} went {steps:?}, not {STEPS:?}").into());
        }
    }
    println!("every order's events came in publish order; exiting");
    Ok(())
}
