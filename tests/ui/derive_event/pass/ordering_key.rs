use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.changed", ordering_key = "order_id")]
struct OrderChanged {
    order_id: u64,
}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "account.posted", ordering_key = "0")]
struct Posted(String, i64);

fn main() {
    assert_eq!(OrderChanged { order_id: 42 }.ordering_key(), Some("42".to_owned()));
    assert_eq!(Posted("acct-7".into(), 5).ordering_key(), Some("acct-7".to_owned()));
}
