use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler]
async fn log_record(event: RecordPublished, prefix: String) -> Result<(), HandlerError> {
    println!("{prefix}{}", event.srn);
    Ok(())
}

fn main() {}
