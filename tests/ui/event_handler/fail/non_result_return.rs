use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler]
async fn log_record(event: RecordPublished) -> bool {
    let _ = event.srn;
    true
}

fn main() {}
