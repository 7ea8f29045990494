use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.changed")]
struct OrderChanged {
    order_id: u64,
}

#[event_handler(name = "orders.sync", ordered = "strict")]
async fn sync(_event: OrderChanged) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
