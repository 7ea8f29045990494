//! `start_from` in its three forms, carried by the spec.

use osa_events::__private::{Handler, StartFrom};
use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler(name = "search.default")]
async fn by_default(event: RecordPublished) -> Result<(), HandlerError> {
    let _ = event.srn;
    Ok(())
}

#[event_handler(name = "search.now", start_from = "now")]
async fn from_now(event: RecordPublished) -> Result<(), HandlerError> {
    let _ = event.srn;
    Ok(())
}

#[event_handler(name = "search.history", start_from = "beginning")]
async fn from_the_beginning(events: Batch<RecordPublished>) -> Result<(), HandlerError> {
    let _ = events;
    Ok(())
}

#[event_handler(name = "search.since", start_from = 1_042)]
async fn after_a_position(event: RecordPublished) -> Result<(), HandlerError> {
    let _ = event.srn;
    Ok(())
}

fn main() {
    assert_eq!(ByDefaultHandler::SPEC.start_from(), StartFrom::Now);
    assert_eq!(FromNowHandler::SPEC.start_from(), StartFrom::Now);
    assert_eq!(
        FromTheBeginningHandler::SPEC.start_from(),
        StartFrom::Beginning
    );
    assert_eq!(
        AfterAPositionHandler::SPEC.start_from(),
        StartFrom::AfterPosition(1042)
    );
}
