use osa_events::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

/// A unit struct and a tuple struct are events too.
#[derive(Event, Serialize, Deserialize)]
#[event(name = "clock.tick")]
struct Tick;

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.renamed")]
struct RecordRenamed(String, String);

fn main() {
    assert_eq!(<RecordPublished as Event>::VERSION, 1);
    assert_eq!(<Tick as Event>::NAME, "clock.tick");
    assert_eq!(<RecordRenamed as Event>::NAME, "record.renamed");
    let _ = (RecordPublished { srn: String::new() }.srn, Tick);
    let RecordRenamed(_, _) = RecordRenamed(String::new(), String::new());
}
