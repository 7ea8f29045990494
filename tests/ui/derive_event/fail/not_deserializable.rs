use osa_events::prelude::*;
use serde::Serialize;

#[derive(Event, Serialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

fn main() {}
