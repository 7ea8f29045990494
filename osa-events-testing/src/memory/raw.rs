//! [`RawEvent`]: an event as the store keeps it, for publishing to an in-memory store.

use osa_events::store::Envelopes;
use osa_events::{Due, Event, Outgoing, Result};
use uuid::Uuid;

/// An event as a store keeps it: id, type name, version, routing key, and JSON text.
///
/// [`InMemoryStore::publish`](super::InMemoryStore::publish) builds one from a typed event, and
/// [`InMemoryStore::publish_batch`](super::InMemoryStore::publish_batch) from each [`Outgoing`]
/// (with its chosen id, routing key and metadata). Build one yourself for what no Rust type
/// produces: a payload that fails to decode, an old version, an event type with no Rust type at
/// all.
///
/// # Examples
///
/// ```
/// use osa_events_testing::{InMemoryStore, RawEvent};
///
/// let store = InMemoryStore::new();
/// let garbage = RawEvent::from_json("record.published", 1, "{\"srn\": 42}")
///     .with_routing_key("vector");
/// assert_eq!(store.publish_raw(&[garbage.clone(), garbage]), 1, "ids are idempotency keys");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// The event id, the idempotency key.
    pub id: Uuid,
    /// The event type's name ([`Event::NAME`]).
    pub event_type: String,
    /// The payload's version ([`Event::VERSION`]).
    pub event_version: i32,
    /// The routing key; `None` reaches only subscriptions without a routing-key filter.
    pub routing_key: Option<String>,
    /// The payload, as JSON text. It is not checked: a handler decodes it. The store keeps it as
    /// PostgreSQL's `jsonb` returns it (keys ordered by length then bytes, the last of duplicate
    /// keys kept, `1e2` as `100`, one space after `:` and `,`), so handlers see what they would
    /// see on PostgreSQL; text that is not JSON (which PostgreSQL refuses) is kept as written.
    pub payload: String,
    /// The metadata, as JSON text; `None` is delivered as `{}`. Normalised like the payload.
    pub metadata: Option<String>,
    /// The ordering key ([`Outgoing::with_ordering_key`]): ordered subscriptions take the events
    /// of one key one at a time. Not checked here.
    pub ordering_key: Option<String>,
    /// When its deliveries become due, by the store's clock ([`Outgoing::deliver_after`],
    /// [`Outgoing::deliver_at`]); [`Due::Now`] unless set.
    pub due: Due,
}

impl RawEvent {
    /// Serializes `event` with a fresh random id, no routing key and no metadata, with the checks
    /// of [`Outgoing::new`]: serialization, the payload size limit
    /// ([`DEFAULT_MAX_PAYLOAD_BYTES`](osa_events::DEFAULT_MAX_PAYLOAD_BYTES)), and no NUL
    /// characters.
    ///
    /// # Errors
    ///
    /// As for [`Outgoing::new`]: [`Error::Serialize`](osa_events::Error::Serialize) when serde
    /// cannot serialize the event, [`Error::PayloadTooLarge`](osa_events::Error::PayloadTooLarge)
    /// when its JSON is over the limit, [`Error::NulCharacter`](osa_events::Error::NulCharacter)
    /// when a string in it holds a NUL character.
    pub fn new<E: Event>(event: &E) -> Result<Self> {
        Outgoing::new(event).map(|outgoing| Self::from(&outgoing))
    }

    /// An event of any type name and version with `payload` as its JSON text, unchecked, with a
    /// fresh random id, no routing key and no metadata.
    pub fn from_json(
        event_type: impl Into<String>,
        event_version: i32,
        payload: impl Into<String>,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            event_type: event_type.into(),
            event_version,
            routing_key: None,
            payload: payload.into(),
            metadata: None,
            ordering_key: None,
            due: Due::Now,
        }
    }

    /// Sets the id. Publishing an id that is already logged is a no-op.
    #[must_use]
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Sets the routing key.
    #[must_use]
    pub fn with_routing_key(mut self, routing_key: impl Into<String>) -> Self {
        self.routing_key = Some(routing_key.into());
        self
    }

    /// Sets the ordering key.
    #[must_use]
    pub fn with_ordering_key(mut self, ordering_key: impl Into<String>) -> Self {
        self.ordering_key = Some(ordering_key.into());
        self
    }

    /// Sets the metadata (correlation id, causation id, trace context).
    #[must_use]
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(metadata.to_string());
        self
    }

    /// Sets when its deliveries become due, unchecked (an [`Outgoing`] checks the delay against
    /// [`MAX_DELIVERY_DELAY`](osa_events::MAX_DELIVERY_DELAY); the store saturates a longer one).
    #[must_use]
    pub fn with_due(mut self, due: Due) -> Self {
        self.due = due;
        self
    }
}

impl RawEvent {
    /// `events` as a publish stores them, with their metadata stamped (causation, correlation,
    /// trace context: see [`Envelopes`]), and the publish's envelopes (its span).
    pub(crate) fn stamped(events: &[Outgoing]) -> (Envelopes, Vec<RawEvent>) {
        let envelopes = Envelopes::stamp(events);
        let raw = events
            .iter()
            .zip(envelopes.metadata())
            .map(|(outgoing, metadata)| Self::with_stored_metadata(outgoing, metadata.clone()))
            .collect();
        (envelopes, raw)
    }

    fn with_stored_metadata(outgoing: &Outgoing, metadata: Option<String>) -> Self {
        Self {
            id: outgoing.id(),
            event_type: outgoing.event_type().to_owned(),
            event_version: outgoing.event_version(),
            routing_key: outgoing.routing_key().map(str::to_owned),
            payload: outgoing.payload_json().to_owned(),
            metadata,
            ordering_key: outgoing.ordering_key().map(str::to_owned),
            due: outgoing.due(),
        }
    }
}

/// The event as [`osa_events::publish_batch`] would store it outside a handler and without
/// tracing: same id, type, version, routing key, payload and metadata (a publish stamps
/// defaults on the metadata first; see [`Envelopes`]).
impl From<&Outgoing> for RawEvent {
    fn from(outgoing: &Outgoing) -> Self {
        let metadata = outgoing.metadata();
        let metadata = (!metadata.is_empty())
            .then(|| serde_json::to_string(metadata).expect("metadata always serializes"));
        Self::with_stored_metadata(outgoing, metadata)
    }
}
