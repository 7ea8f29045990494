//! The annotated fn stays an ordinary async fn: a unit test calls it with its arguments.

use std::sync::{Arc, Mutex};

use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[derive(Default)]
struct Seen {
    srns: Mutex<Vec<String>>,
}

#[event_handler(name = "seen.each")]
async fn remember(event: RecordPublished, seen: State<Seen>) -> Result<(), HandlerError> {
    seen.srns.lock().unwrap().push(event.srn);
    Ok(())
}

#[event_handler(name = "seen.batch", batch = 10)]
async fn remember_all(
    events: Batch<RecordPublished>,
    seen: State<Seen>,
) -> Result<(), HandlerError> {
    seen.srns
        .lock()
        .unwrap()
        .extend(events.into_iter().map(|event| event.srn));
    Ok(())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let seen = State::from(Arc::new(Seen::default()));
    runtime.block_on(async {
        let event = RecordPublished {
            srn: "srn:1".into(),
        };
        remember(event, seen.clone()).await.unwrap();
        let batch = Batch::from_events(vec![
            RecordPublished {
                srn: "srn:2".into(),
            },
            RecordPublished {
                srn: "srn:3".into(),
            },
        ]);
        remember_all(batch, seen.clone()).await.unwrap();
    });
    assert_eq!(*seen.srns.lock().unwrap(), ["srn:1", "srn:2", "srn:3"]);
}
