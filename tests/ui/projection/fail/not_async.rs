use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.placed")]
struct OrderPlaced {
    cents: i64,
}

#[projection]
fn totals(events: Batch<OrderPlaced>) -> Result<(), HandlerError> {
    let _ = events.len();
    Ok(())
}

fn main() {}
