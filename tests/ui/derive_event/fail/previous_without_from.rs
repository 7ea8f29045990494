use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.placed")]
struct OrderPlacedV1 {
    id: u64,
}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.placed", version = 2, previous = OrderPlacedV1)]
struct OrderPlaced {
    id: u64,
}

fn main() {}
