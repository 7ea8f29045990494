use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler(name = "backup", register = "no")]
async fn backup_to(event: RecordPublished) -> Result<(), HandlerError> {
    let _ = event.srn;
    Ok(())
}

fn main() {}
