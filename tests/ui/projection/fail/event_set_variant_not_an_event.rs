use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.placed")]
struct OrderPlaced {
    cents: i64,
}

#[derive(EventSet)]
enum OrderEvent {
    Placed(OrderPlaced),
    Refunded(i64),
}

fn main() {}
