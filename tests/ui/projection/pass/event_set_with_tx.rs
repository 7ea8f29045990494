use osa_events::prelude::*;
use osa_events::__private::Projection;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "order.placed")]
struct OrderPlaced {
    cents: i64,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "order.cancelled")]
struct OrderCancelled {
    cents: i64,
}

#[derive(EventSet, Debug)]
enum OrderEvent {
    Placed(OrderPlaced),
    Cancelled(OrderCancelled),
}

struct Config;

#[projection(name = "order_totals", batch = 500, poll = "200ms", backoff = "100ms", max_backoff = "5s")]
async fn totals(events: Batch<OrderEvent>, mut tx: Tx, _config: State<Config>) -> Result<(), HandlerError> {
    for event in &events {
        let cents = match event {
            OrderEvent::Placed(e) => e.cents,
            OrderEvent::Cancelled(e) => -e.cents,
        };
        sqlx::query("select $1::int8").bind(cents).execute(&mut *tx).await?;
    }
    Ok(())
}

#[projection]
async fn single_type(events: Batch<OrderPlaced>) -> Result<(), HandlerError> {
    let _ = events.len();
    Ok(())
}

fn main() {
    let spec = TotalsProjection::SPEC;
    assert_eq!(spec.name(), "order_totals");
    assert_eq!(spec.event_types(), ["order.placed", "order.cancelled"]);
    assert_eq!(spec.batch(), 500);
    assert_eq!(spec.poll(), std::time::Duration::from_millis(200));
    assert_eq!(SingleTypeProjection::SPEC.name(), "single_type");
    assert_eq!(SingleTypeProjection::SPEC.event_types(), ["order.placed"]);
    let decoded = <OrderEvent as EventSet>::decode("order.cancelled", 1, r#"{"cents": 5}"#).unwrap();
    assert!(matches!(decoded, OrderEvent::Cancelled(OrderCancelled { cents: 5 })));
    let error = <OrderEvent as EventSet>::decode("order.shipped", 1, "{}").unwrap_err();
    assert!(error.is_permanent());
    assert_eq!(error.to_string(), "`order.shipped` is not an event of `OrderEvent`");
}
