use std::time::Duration;

use osa_events::__private::{Handler, Shape, StartFrom};
use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler(
    name = "index.vector",
    routing_key = "vector",
    batch = 64,
    linger = "50ms",
    poll = "500ms",
    retries = 5,
    claim_timeout = "5m",
    concurrency = 4,
    timeout = "30s",
    backoff = "1s",
    max_backoff = "1m",
    start_from = "beginning"
)]
async fn index_vectors(events: Batch<RecordPublished>) -> Result<(), HandlerError> {
    for event in &events {
        let _ = &event.srn;
    }
    Ok(())
}

fn main() {
    let spec = IndexVectorsHandler::SPEC;
    assert_eq!(spec.name(), "index.vector");
    assert_eq!(spec.event_type(), "record.published");
    assert_eq!(spec.event_version(), 1);
    assert_eq!(spec.shape(), Shape::Batch);
    assert_eq!(spec.routing_key(), Some("vector"));
    assert_eq!(spec.batch(), 64);
    assert_eq!(spec.linger(), Duration::from_millis(50));
    assert_eq!(spec.poll(), Duration::from_millis(500));
    assert_eq!(spec.retries(), 5);
    assert_eq!(spec.claim_timeout(), Duration::from_secs(300));
    assert_eq!(spec.concurrency(), 4);
    assert_eq!(spec.timeout(), Some(Duration::from_secs(30)));
    assert_eq!(spec.backoff(), Duration::from_secs(1));
    assert_eq!(spec.max_backoff(), Duration::from_secs(60));
    assert_eq!(spec.start_from(), StartFrom::Beginning);
}
