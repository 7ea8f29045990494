use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler]
async fn index(
    events: Batch<RecordPublished>,
    more: Batch<RecordPublished>,
) -> Result<(), HandlerError> {
    let _ = (events, more);
    Ok(())
}

fn main() {}
