//! A projection: order totals per customer, built from `order.placed` and `order.cancelled`
//! events, applied once each and in order, with the checkpoint saved in the same transaction.
//!
//! ```text
//! cargo run --example projection
//! ```
//!
//! Publishes 40 orders from four concurrent publishers whose transactions commit out of order,
//! cancels some, runs the projection until it has caught up, and prints the read model next to
//! the totals computed in memory. Expected output (amounts vary):
//!
//! ```text
//! published 52 events from 4 concurrent publishers
//! projection `order_totals` at position 52, lag 0, leader: none (stopped)
//! customer    projected   expected
//! ada              1234       1234
//! ...
//! read model matches: true
//! ```
//!
//! Uses `DATABASE_URL`, or a throwaway PostgreSQL cluster when it is unset.

use std::collections::BTreeMap;
use std::time::Duration;

use osa_events::Runtime;
use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "order.placed")]
struct OrderPlaced {
    customer: String,
    cents: i64,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "order.cancelled")]
struct OrderCancelled {
    customer: String,
    cents: i64,
}

/// The events the projection reads.
#[derive(EventSet, Debug)]
enum OrderEvent {
    Placed(OrderPlaced),
    Cancelled(OrderCancelled),
}

#[projection(name = "order_totals", batch = 20, poll = "50ms")]
async fn order_totals(events: Batch<OrderEvent>, mut tx: Tx) -> Result<(), HandlerError> {
    for event in &events {
        let (customer, cents) = match event {
            OrderEvent::Placed(order) => (&order.customer, order.cents),
            OrderEvent::Cancelled(order) => (&order.customer, -order.cents),
        };
        sqlx::query(
            "insert into order_totals (customer, cents) values ($1, $2) \
             on conflict (customer) do update set cents = order_totals.cents + excluded.cents",
        )
        .bind(customer)
        .bind(cents)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

const CUSTOMERS: [&str; 4] = ["ada", "grace", "edsger", "barbara"];

/// One publisher: ten orders, each in its own transaction that lingers before committing, so
/// transactions of different publishers commit out of position order.
async fn publish_orders(
    pool: sqlx::PgPool,
    publisher: usize,
) -> Result<(BTreeMap<String, i64>, usize), osa_events::Error> {
    let mut expected = BTreeMap::new();
    let mut published = 0;
    for n in 0..10 {
        let customer = CUSTOMERS[(publisher + n) % CUSTOMERS.len()].to_owned();
        let cents = i64::try_from(100 * (publisher + 1) + n).unwrap_or(1);
        let mut tx = pool.begin().await?;
        osa_events::publish(
            &mut *tx,
            &OrderPlaced {
                customer: customer.clone(),
                cents,
            },
        )
        .await?;
        *expected.entry(customer.clone()).or_insert(0) += cents;
        published += 1;
        if n % 3 == 0 {
            osa_events::publish(
                &mut *tx,
                &OrderCancelled {
                    customer: customer.clone(),
                    cents,
                },
            )
            .await?;
            *expected.entry(customer).or_insert(0) -= cents;
            published += 1;
        }
        tokio::time::sleep(Duration::from_millis(
            ((publisher * 7 + n * 13) % 25) as u64,
        ))
        .await;
        tx.commit().await?;
    }
    Ok((expected, published))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let (url, _cluster) = osa_events_fixtures::pg::database_url_or_throwaway()?;
    let store = PgStore::connect(&url).await?;
    store.migrate().await?;
    // A fresh read model, and the checkpoint just after what earlier runs published, so the example
    // can run again on the same database.
    let mut tx = store.pool().begin().await?;
    sqlx::query("create table if not exists order_totals (customer text primary key, cents bigint not null)")
        .execute(&mut *tx)
        .await?;
    // Reset first, then clear the read model: the order a running batch takes its locks in.
    osa_events::reset_projection(&mut *tx, "order_totals", osa_events::ResetTo::End).await?;
    sqlx::query("truncate order_totals")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    let runtime = Runtime::builder(store.clone())
        .handle_signals(false)
        .build()?;
    let shutdown = runtime.shutdown_token();
    let running = tokio::spawn(runtime.run());

    let publishers: Vec<_> = (0..4)
        .map(|p| tokio::spawn(publish_orders(store.pool().clone(), p)))
        .collect();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let mut published = 0;
    for publisher in publishers {
        let (partial, count) = publisher.await??;
        for (customer, cents) in partial {
            *expected.entry(customer).or_insert(0) += cents;
        }
        published += count;
    }
    println!("published {published} events from 4 concurrent publishers");

    loop {
        let status = store.projection_status().await?;
        if status.iter().all(|s| s.lag == 0 && s.position > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    running.await??;

    for status in store.projection_status().await? {
        println!(
            "projection `{}` at position {}, lag {}, leader: {}",
            status.name,
            status.position,
            status.lag,
            status.leader.as_deref().unwrap_or("none (stopped)")
        );
    }
    let rows: Vec<(String, i64)> =
        sqlx::query_as("select customer, cents from order_totals order by customer")
            .fetch_all(store.pool())
            .await?;
    let projected: BTreeMap<String, i64> = rows.into_iter().collect();
    println!("{:<10} {:>10} {:>10}", "customer", "projected", "expected");
    for customer in CUSTOMERS {
        println!(
            "{customer:<10} {:>10} {:>10}",
            projected.get(customer).copied().unwrap_or(0),
            expected.get(customer).copied().unwrap_or(0)
        );
    }
    println!("read model matches: {}", projected == expected);
    Ok(())
}
