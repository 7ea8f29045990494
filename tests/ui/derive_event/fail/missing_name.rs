use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct RecordPublished {
    srn: String,
}

// The handler compiles: a derive with a bad attribute still implements `Event`, so only the
// attribute is reported.
#[event_handler]
async fn log_record(event: RecordPublished) -> Result<(), HandlerError> {
    let _ = event.srn;
    Ok(())
}

fn main() {}
