use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.changed", ordering_key = "order")]
struct OrderChanged {
    order_id: u64,
}

fn main() {}
