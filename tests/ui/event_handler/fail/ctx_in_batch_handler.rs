use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler]
async fn index(events: Batch<RecordPublished>, ctx: Ctx) -> Result<(), HandlerError> {
    let _ = (events, ctx);
    Ok(())
}

fn main() {}
