use osa_events::prelude::*;
use serde::Deserialize;

#[derive(Event, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

fn main() {}
