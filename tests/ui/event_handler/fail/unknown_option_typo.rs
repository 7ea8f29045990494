use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler(name = "index.vector", bach = 64)]
async fn index(events: Batch<RecordPublished>) -> Result<(), HandlerError> {
    let _ = events;
    Ok(())
}

fn main() {}
