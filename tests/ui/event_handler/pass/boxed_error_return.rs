use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler(name = "archive.parse")]
async fn parse(event: RecordPublished) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let number: u64 = event.srn.parse()?;
    let _ = number;
    Ok(())
}

#[event_handler(name = "archive.batch")]
async fn parse_all(
    events: Batch<RecordPublished>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    for event in events {
        let _: u64 = event.srn.parse()?;
    }
    Ok(())
}

fn main() {}
