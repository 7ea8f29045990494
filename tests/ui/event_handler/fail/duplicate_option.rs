use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler(batch = 64, poll = "1s", batch = 32)]
async fn index(events: Batch<RecordPublished>) -> Result<(), HandlerError> {
    let _ = events;
    Ok(())
}

fn main() {}
