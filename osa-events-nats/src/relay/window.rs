//! Publishing one batch of the log to JetStream with a bounded window of outstanding PubAcks.
//!
//! Waiting for each PubAck before the next publish would cost a round trip per event. Instead up
//! to `window` publishes are in flight; acknowledgements are awaited in publish order, so when
//! one fails, every event before it is known to be in the stream and none after it is counted.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self, Context};
use osa_events_core::store::Delivery;
use osa_events_core::{Due, Metadata};

use crate::headers;
use crate::subjects::Subjects;

/// Why a batch did not reach the stream whole.
#[derive(Debug)]
pub(crate) enum Failure {
    /// NATS is unreachable or slow, or JetStream is not ready (after a restart): try the batch
    /// again after a pause. Events already acknowledged are de-duplicated by their `Nats-Msg-Id`.
    Unavailable(String),
    /// The stream refused this event for good (too large, no stream takes its subject): the
    /// relay stops rather than skip it.
    Rejected {
        /// The refused event.
        event: Box<Delivery>,
        /// Its subject.
        subject: String,
        /// What JetStream said.
        reason: String,
    },
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Events acknowledged by the stream.
    pub(crate) acknowledged: u64,
    /// Of those, the ones the stream already had (a re-send after a crash or an outage).
    pub(crate) duplicates: u64,
}

/// Publishes `events` (those `keep` accepts) in order, with at most `window` PubAcks
/// outstanding, and waits for every acknowledgement.
pub(crate) async fn publish_all(
    context: &Context,
    subjects: &Subjects,
    events: &mut [Delivery],
    keep: impl Fn(&Delivery) -> bool,
    window: usize,
) -> Result<Sent, Failure> {
    let mut in_flight: VecDeque<(usize, String, PublishAckFuture)> =
        VecDeque::with_capacity(window);
    let mut sent = Sent::default();
    for index in 0..events.len() {
        if !keep(&events[index]) {
            continue;
        }
        if in_flight.len() >= window {
            let (at, subject, ack) = in_flight.pop_front().expect("the window is not empty");
            settle(context, events, at, subject, ack.await, &mut sent).await?;
        }
        let event = &mut events[index];
        let subject = subjects.subject(&event.event_type, event.routing_key.as_deref());
        if let Some(refused) = delayed(event, &subject) {
            return Err(refused);
        }
        let message_headers = headers::for_event(event);
        // The body is the payload unchanged (a refusal's message names the event, not its body).
        let payload = std::mem::take(&mut event.payload);
        let ack = context
            .publish_with_headers(subject.clone(), message_headers, payload.into())
            .await
            .map_err(|error| classify_send(&error, event, &subject))?;
        in_flight.push_back((index, subject, ack));
    }
    while let Some((at, subject, ack)) = in_flight.pop_front() {
        settle(context, events, at, subject, ack.await, &mut sent).await?;
    }
    Ok(sent)
}

/// A delayed event (`Outgoing::deliver_after`, `deliver_at`: recorded in its metadata, see
/// `Metadata::due`) cannot be relayed: JetStream has no way to hold a message until a time
/// (nats-server before 2.12 has no message schedules, and a stream's consumers in other
/// languages would not honour an osa-events header), and relaying it at once would deliver it
/// early. The relay stops on it, as on a message the stream refuses.
fn delayed(event: &Delivery, subject: &str) -> Option<Failure> {
    let due = serde_json::from_str::<Metadata>(&event.metadata)
        .ok()?
        .due()?;
    let asked = match due {
        Due::After(delay) => format!("deliver_after {delay:?}"),
        Due::At(time) => format!(
            "deliver_at {} s since the Unix epoch",
            Due::At(time).at_epoch_seconds().unwrap_or_default()
        ),
        Due::Now => return None,
    };
    Some(Failure::Rejected {
        event: Box::new(event.clone()),
        subject: subject.to_owned(),
        reason: format!(
            "it was published delayed ({asked}), and JetStream cannot hold a message until it is \
             due: relaying it now would deliver it early (publish delayed events of types the \
             relay does not relay, or handle them on the database store)"
        ),
    })
}

/// Counts one acknowledgement, or turns its error into a [`Failure`].
async fn settle(
    context: &Context,
    events: &[Delivery],
    at: usize,
    subject: String,
    acked: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    sent: &mut Sent,
) -> Result<(), Failure> {
    match acked {
        Ok(ack) => {
            sent.acknowledged += 1;
            sent.duplicates += u64::from(ack.duplicate);
            Ok(())
        }
        Err(error) => Err(classify_ack(context, &events[at], subject, &error).await),
    }
}

/// A publish that could not even be sent: the message is larger than the server takes (for
/// good), or the connection is down (for now).
fn classify_send(
    error: &jetstream::context::PublishError,
    event: &Delivery,
    subject: &str,
) -> Failure {
    if error.kind() == PublishErrorKind::MaxPayloadExceeded {
        return Failure::Rejected {
            event: Box::new(event.clone()),
            subject: subject.to_owned(),
            reason: format!("{error} (the server's `max_payload`)"),
        };
    }
    Failure::Unavailable(format!("cannot publish to `{subject}`: {error}"))
}

/// What a failed acknowledgement means. "No stream" answers also come from a JetStream that is
/// still loading its streams after a restart, so they count as a refusal only when the
/// server's stream listing confirms that no stream takes the subject.
async fn classify_ack(
    context: &Context,
    event: &Delivery,
    subject: String,
    error: &jetstream::context::PublishError,
) -> Failure {
    let rejected = |reason: String| Failure::Rejected {
        event: Box::new(event.clone()),
        subject: subject.clone(),
        reason,
    };
    match error.kind() {
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => Failure::Unavailable(format!(
            "no acknowledgement from JetStream for `{subject}`: {error}"
        )),
        PublishErrorKind::StreamNotFound => {
            match context.stream_by_subject(subject.clone()).await {
                Err(lookup)
                    if lookup.kind() == jetstream::context::GetStreamByNameErrorKind::NotFound =>
                {
                    rejected("no stream takes this subject".to_owned())
                }
                Ok(_) | Err(_) => Failure::Unavailable(format!(
                    "JetStream has no stream ready for `{subject}` yet (restarting?): {error}"
                )),
            }
        }
        PublishErrorKind::MaxPayloadExceeded => rejected(error.to_string()),
        _ => match jetstream_error(error) {
            // 503: JetStream is there but not available (a restart, a lost quorum).
            Some(api) if api.code() == 503 => {
                Failure::Unavailable(format!("JetStream is unavailable: {api}"))
            }
            Some(api) => rejected(api.to_string()),
            None => Failure::Unavailable(format!("publish to `{subject}` failed: {error}")),
        },
    }
}

/// The JetStream API error behind a publish error, if the server answered with one.
fn jetstream_error(error: &jetstream::context::PublishError) -> Option<&jetstream::Error> {
    std::error::Error::source(error)?.downcast_ref::<jetstream::Error>()
}

/// The least pause after a failed batch, and its cap.
pub(crate) const FIRST_PAUSE: Duration = Duration::from_millis(200);
/// The cap of the pause between attempts while NATS is unavailable.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(10);

/// The pause before attempt `failures + 1` of a batch: doubling from [`FIRST_PAUSE`] up to
/// [`MAX_PAUSE`].
pub(crate) fn pause_after(failures: u32) -> Duration {
    FIRST_PAUSE
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_PAUSE)
}
