use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler(name = "search.index", start_from = "latest")]
async fn index(event: RecordPublished) -> Result<(), HandlerError> {
    let _ = event;
    Ok(())
}

fn main() {}
