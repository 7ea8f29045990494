use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler(name = "archive.write")]
async fn archive(event: RecordPublished) -> Result<(), std::io::Error> {
    if event.srn.is_empty() {
        return Err(std::io::Error::other("empty srn"));
    }
    Ok(())
}

fn main() {}
