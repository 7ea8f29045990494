use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.placed")]
struct OrderPlaced {
    cents: i64,
}

#[projection(name = "order_totals", batch = 100, linger = "50ms")]
async fn totals(orders: Batch<OrderPlaced>) -> Result<(), HandlerError> {
    let _ = orders.len();
    Ok(())
}

fn main() {}
