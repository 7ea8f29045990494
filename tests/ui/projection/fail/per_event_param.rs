use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.placed")]
struct OrderPlaced {
    cents: i64,
}

#[projection(name = "order_totals")]
async fn totals(order: OrderPlaced) -> Result<(), HandlerError> {
    let _ = order.cents;
    Ok(())
}

fn main() {}
