//! `register = false`: the type and its `Handler` impl exist (for
//! `RuntimeBuilder::handler_instance`), but the inventory holds only the registered handler.

use osa_events::__private::{Handler, Registration, inventory};
use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

#[event_handler(name = "backup", routing_key = "s3", register = false)]
async fn backup_to(event: RecordPublished) -> Result<(), HandlerError> {
    let _ = event.srn;
    Ok(())
}

#[event_handler(name = "index", register = true)]
async fn index(event: RecordPublished) -> Result<(), HandlerError> {
    let _ = event.srn;
    Ok(())
}

fn main() {
    assert_eq!(BackupToHandler::SPEC.name(), "backup");
    assert_eq!(BackupToHandler::SPEC.routing_key(), Some("s3"));
    let registered: Vec<&str> = inventory::iter::<Registration>
        .into_iter()
        .map(|registration| registration.spec().name())
        .collect();
    assert_eq!(registered, ["index"]);
}
