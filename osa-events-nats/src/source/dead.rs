//! Dead letters: a message that failed for good is published, with its error, to the handler's
//! dead-letter subject, and only then terminated, so it is never dropped.
//!
//! The dead-letter subject of handler `index.vector` is `<dead-letter prefix>.index_vector-2c8bf99c`
//! (`osa-dead.index_vector-2c8bf99c` by default; the handler name is written as its consumer name). A
//! dead letter is a copy of the message (body and headers) with these headers added:
//!
//! | header | value |
//! | --- | --- |
//! | `Osa-Handler` | the handler's name |
//! | `Osa-Error` | the last error (line breaks replaced by spaces) |
//! | `Osa-Attempts` | the deliveries it had |
//! | `Osa-Stream` / `Osa-Stream-Sequence` | where the message was |
//! | `Nats-Msg-Id` | `<event id>:<handler>`: a dead letter written twice is stored once |

use async_nats::jetstream::{self, Message};
use osa_events_core::Result;

use super::broker;

/// The header naming the handler that gave up.
pub const HANDLER: &str = "Osa-Handler";
/// The header with the last error.
pub const ERROR: &str = "Osa-Error";
/// The header with the number of deliveries.
pub const ATTEMPTS: &str = "Osa-Attempts";
/// The header naming the stream the message was in.
pub const STREAM: &str = "Osa-Stream";
/// The header with the message's sequence in that stream.
pub const STREAM_SEQUENCE: &str = "Osa-Stream-Sequence";

/// Publishes `message` as a dead letter of `handler` to `subject` and waits for JetStream to
/// store it.
pub(crate) async fn publish(
    context: &jetstream::Context,
    subject: String,
    handler: &str,
    event_id: uuid::Uuid,
    message: &Message,
    error: &str,
) -> Result<()> {
    let mut headers = message.headers.clone().unwrap_or_default();
    headers.insert(HANDLER, handler);
    headers.insert(ERROR, error.replace(['\r', '\n'], " "));
    if let Ok(info) = message.info() {
        headers.insert(ATTEMPTS, info.delivered.to_string());
        headers.insert(STREAM, info.stream);
        headers.insert(STREAM_SEQUENCE, info.stream_sequence.to_string());
    }
    headers.insert(crate::headers::MSG_ID, format!("{event_id}:{handler}"));
    context
        .publish_with_headers(subject, headers, message.payload.clone())
        .await
        .map_err(broker)?
        .await
        .map_err(broker)?;
    Ok(())
}
