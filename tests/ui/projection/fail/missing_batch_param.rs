use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.placed")]
struct OrderPlaced {
    cents: i64,
}

#[projection]
async fn totals() -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
