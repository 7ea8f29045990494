use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

// What a lingering loop holds is claimed: it must not wait longer than the heartbeat interval.
#[event_handler(batch = 64, claim_timeout = "30s", linger = "15s")]
async fn index(events: Batch<RecordPublished>) -> Result<(), HandlerError> {
    let _ = events.len();
    Ok(())
}

fn main() {}
