use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

// `linger` waits for a fuller batch: a handler called once per event has no batch to fill.
#[event_handler(batch = 64, linger = "50ms")]
async fn index(event: RecordPublished) -> Result<(), HandlerError> {
    let _ = event.srn;
    Ok(())
}

fn main() {}
