use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published", name = "record.created")]
struct RecordPublished {
    srn: String,
}

fn main() {}
