use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[derive(Serialize, Deserialize)]
struct RecordDeleted {
    srn: String,
}

#[event_handler]
async fn purge(events: Batch<RecordDeleted>) -> Result<(), HandlerError> {
    for event in events {
        let _ = event.srn;
    }
    Ok(())
}

fn main() {}
