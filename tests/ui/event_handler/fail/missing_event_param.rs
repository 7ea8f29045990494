use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler]
async fn tick() -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
