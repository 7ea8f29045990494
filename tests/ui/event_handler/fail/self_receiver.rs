use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

struct Indexer;

impl Indexer {
    #[event_handler]
    async fn index(&self, event: RecordPublished) -> Result<(), HandlerError> {
        let _ = event.srn;
        Ok(())
    }
}

fn main() {}
