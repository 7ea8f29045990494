use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.created")]
struct OrderCreated {
    id: u64,
}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.placed", version = 2, previous = OrderCreated)]
struct OrderPlaced {
    id: u64,
}

impl From<OrderCreated> for OrderPlaced {
    fn from(created: OrderCreated) -> Self {
        Self { id: created.id }
    }
}

fn main() {}
