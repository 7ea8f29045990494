//! `previous` chains older versions: v1 → v2 → v3, each converted with `From`.
use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.placed")]
struct OrderPlacedV1 {
    id: u64,
}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "order.placed", version = 2, previous = OrderPlacedV1)]
struct OrderPlacedV2 {
    id: u64,
    total_cents: u64,
}

impl From<OrderPlacedV1> for OrderPlacedV2 {
    fn from(v1: OrderPlacedV1) -> Self {
        Self { id: v1.id, total_cents: 0 }
    }
}

mod current {
    use super::*;

    /// The current type names the previous one by path.
    #[derive(Event, Serialize, Deserialize)]
    #[event(name = "order.placed", version = 3, previous = super::OrderPlacedV2)]
    pub struct OrderPlaced {
        pub id: u64,
        pub total_cents: u64,
        pub currency: String,
    }

    impl From<OrderPlacedV2> for OrderPlaced {
        fn from(v2: OrderPlacedV2) -> Self {
            Self { id: v2.id, total_cents: v2.total_cents, currency: "EUR".into() }
        }
    }
}

use current::OrderPlaced;

fn main() {
    assert_eq!(OrderPlaced::accepted_versions(), [3, 2, 1]);
    let v1: OrderPlaced = osa_events::__private::decode_event("order.placed", 1, r#"{"id":7}"#).unwrap();
    assert_eq!((v1.id, v1.total_cents, v1.currency.as_str()), (7, 0, "EUR"));
    let v2: OrderPlaced =
        osa_events::__private::decode_event("order.placed", 2, r#"{"id":7,"total_cents":5}"#).unwrap();
    assert_eq!((v2.id, v2.total_cents), (7, 5));
    let v3: OrderPlaced = osa_events::__private::decode_event(
        "order.placed",
        3,
        r#"{"id":7,"total_cents":5,"currency":"USD"}"#,
    )
    .unwrap();
    assert_eq!(v3.currency, "USD");
    // The middle of the chain accepts only what is below it.
    assert!(osa_events::__private::decode_event::<OrderPlacedV2>("order.placed", 1, r#"{"id":7}"#).is_ok());
}
