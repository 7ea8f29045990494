use std::collections::HashMap;
use std::sync::Mutex;

use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

struct Cache {
    titles: Mutex<HashMap<String, String>>,
}

// `State` dereferences to `Cache`; its `Arc` is private, so `.0` is an error naming the field,
// not a confusing one about `Arc<Cache>`.
#[event_handler]
async fn cache_record(event: RecordPublished, cache: State<Cache>) -> Result<(), HandlerError> {
    cache.0.titles.lock().unwrap().remove(&event.srn);
    Ok(())
}

fn main() {}
