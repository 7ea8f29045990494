use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.deleted")]
struct RecordDeleted {
    srn: String,
}

#[event_handler]
async fn sync(published: RecordPublished, deleted: RecordDeleted) -> Result<(), HandlerError> {
    let _ = (published.srn, deleted.srn);
    Ok(())
}

fn main() {}
