use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler(claim_timeout = "100years")]
async fn index(event: RecordPublished) -> Result<(), HandlerError> {
    let _ = event.srn;
    Ok(())
}

fn main() {}
