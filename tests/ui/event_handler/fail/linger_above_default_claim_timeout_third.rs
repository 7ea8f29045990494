use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

// What a lingering loop holds is claimed: without `claim_timeout`, the default (60s) bounds it.
#[event_handler(batch = 64, linger = "30s")]
async fn index(events: Batch<RecordPublished>) -> Result<(), HandlerError> {
    let _ = events.len();
    Ok(())
}

fn main() {}
