use std::sync::Mutex;

use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

struct VectorIndex {
    srns: Mutex<Vec<String>>,
}

#[event_handler(name = "index.vector", batch = 100)]
async fn index_vectors(
    events: Batch<RecordPublished>,
    index: State<VectorIndex>,
) -> Result<(), HandlerError> {
    let mut srns = index.srns.lock().unwrap();
    srns.extend(events.into_iter().map(|event| event.srn));
    Ok(())
}

fn main() {
    let _ = Resources::new().with(VectorIndex {
        srns: Mutex::new(Vec::new()),
    });
}
