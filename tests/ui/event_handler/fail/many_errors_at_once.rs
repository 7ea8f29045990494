use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler(
    bach = 64,
    batch = 0,
    poll = "soon",
    retries = 5,
    retries = 6,
    name = ""
)]
fn index(events: Batch<RecordPublished>) -> Result<(), HandlerError> {
    let _ = events;
    Ok(())
}

fn main() {}
