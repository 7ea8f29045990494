use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler]
async fn log_record(event: RecordPublished) -> Result<(), u8> {
    if event.srn.is_empty() {
        return Err(1);
    }
    Ok(())
}

fn main() {}
