use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct OrderPlacedV1 {
    id: u64,
}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.placed", version = 2, previous = OrderPlacedV1)]
struct OrderPlaced {
    id: u64,
}

impl From<OrderPlacedV1> for OrderPlaced {
    fn from(v1: OrderPlacedV1) -> Self {
        Self { id: v1.id }
    }
}

fn main() {}
