use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published", verison = 2)]
struct RecordPublished {
    srn: String,
}

fn main() {}
