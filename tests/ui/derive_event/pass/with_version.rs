use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published", version = 3)]
struct RecordPublished {
    srn: String,
}

/// Several `#[event]` attributes are read together.
#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.deleted")]
#[event(version = 2)]
enum RecordDeleted {
    Soft { srn: String },
    Hard { srn: String },
}

fn main() {
    assert_eq!(<RecordPublished as Event>::NAME, "record.published");
    assert_eq!(<RecordPublished as Event>::VERSION, 3);
    assert_eq!(<RecordDeleted as Event>::NAME, "record.deleted");
    assert_eq!(<RecordDeleted as Event>::VERSION, 2);
    let _ = RecordPublished { srn: String::new() }.srn;
    let _ = [
        RecordDeleted::Soft { srn: String::new() },
        RecordDeleted::Hard { srn: String::new() },
    ];
}
