use osa_events::prelude::*;

struct NotAnEvent;

#[projection(name = "order_totals")]
async fn totals(events: Batch<NotAnEvent>) -> Result<(), HandlerError> {
    let _ = events.len();
    Ok(())
}

fn main() {}
