use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

struct AuditLog {
    prefix: &'static str,
}

#[event_handler(name = "audit.log")]
async fn audit(event: RecordPublished, log: State<AuditLog>, ctx: Ctx) -> Result<(), HandlerError> {
    println!(
        "{} {} (event {}, attempt {})",
        log.prefix,
        event.srn,
        ctx.event_id(),
        ctx.attempt()
    );
    Ok(())
}

fn main() {
    let _ = Resources::new().with(AuditLog { prefix: "[audit]" });
}
