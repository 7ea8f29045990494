use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.placed")]
struct OrderPlaced {
    cents: i64,
}

#[projection]
async fn totals(events: Batch<OrderPlaced>, ctx: Ctx) -> Result<(), HandlerError> {
    let _ = (events.len(), ctx);
    Ok(())
}

fn main() {}
