use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.placed", version = 2)]
struct OrderPlacedV2 {
    id: u64,
}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.placed", version = 2, previous = OrderPlacedV2)]
struct OrderPlaced {
    id: u64,
}

impl From<OrderPlacedV2> for OrderPlaced {
    fn from(v2: OrderPlacedV2) -> Self {
        Self { id: v2.id }
    }
}

fn main() {}
