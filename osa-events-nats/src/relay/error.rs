//! Why a relay stopped, or could not start.

use uuid::Uuid;

/// What [`Relay::run`](super::Relay::run) and [`RelayBuilder::build`](super::RelayBuilder::build)
/// fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The relay's configuration is invalid.
    #[error("invalid relay configuration: {0}")]
    Config(String),

    /// No JetStream stream takes one of the relay's subjects: create one (the stream set-up is
    /// yours; `osa_events_nats::stream::create` makes one for tests and examples).
    #[error(
        "no JetStream stream takes subject `{subject}` (events of type `{event_type}`): create a stream \
         whose subjects cover it (e.g. `{suggestion}`), then start the relay again"
    )]
    NoStream {
        /// The event type whose subjects no stream takes.
        event_type: String,
        /// Its subjects, as a filter.
        subject: String,
        /// A stream subject that would take them.
        suggestion: String,
    },

    /// The stream refused an event for good (too large, no stream for its subject). The relay
    /// stopped on it, without skipping it: its checkpoint is just before the batch that holds it.
    #[error(
        "relay `{relay}`: the stream refused event {event_id} (`{event_type}`, position {position}) on \
         `{subject}`: {reason}; the relay stopped before it (fix the stream, or move the checkpoint past \
         the event with a reset, then start the relay again)"
    )]
    Rejected {
        /// The relay's checkpoint name.
        relay: &'static str,
        /// The refused event's id.
        event_id: Uuid,
        /// Its type.
        event_type: String,
        /// Its position in the log.
        position: i64,
        /// The subject it was published to.
        subject: String,
        /// What JetStream said.
        reason: String,
    },

    /// NATS could not be reached, or JetStream did not answer: the relay retries by itself; this
    /// is returned only by the start-up checks' helpers.
    #[error("NATS is unavailable: {0}")]
    Unavailable(String),

    /// The store failed, or cannot run a relay.
    #[error(transparent)]
    Store(#[from] osa_events_core::Error),
}
