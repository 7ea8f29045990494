//! [`RawEvent`]: an event as the store keeps it, for publishing to an in-memory store.

use osa_events::{Error, Event, Outgoing, Result};
use uuid::Uuid;

/// An event as a store keeps it: id, type name, version, routing key, and JSON text.
///
/// [`InMemoryStore::publish`](super::InMemoryStore::publish) builds one from a typed event.
/// Build one yourself for what [`Outgoing`] offers (a chosen id, a
/// routing key, metadata) or for what no Rust type produces: a payload that fails to decode, an
/// old version, an event type with no Rust type at all.
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
    /// The payload, as JSON text. It is not checked: a handler decodes it.
    pub payload: String,
    /// The metadata, as JSON text; `None` is delivered as `{}`.
    pub metadata: Option<String>,
}

impl RawEvent {
    /// Serializes `event` with a fresh random id, no routing key and no metadata, with the checks
    /// of [`Outgoing::new`]: serialization, and the payload size limit
    /// ([`DEFAULT_MAX_PAYLOAD_BYTES`](osa_events::DEFAULT_MAX_PAYLOAD_BYTES)).
    ///
    /// # Errors
    ///
    /// As for [`Outgoing::new`]: [`Error::Serialize`] when serde cannot serialize the event,
    /// [`Error::PayloadTooLarge`] when its JSON is over the limit.
    pub fn new<E: Event>(event: &E) -> Result<Self> {
        // `Outgoing` has the checks but does not give its payload out: serialize a second time.
        let checked = Outgoing::new(event)?;
        let payload = serde_json::to_string(event).map_err(|source| Error::Serialize {
            event_type: E::NAME,
            source,
        })?;
        let version = i32::try_from(E::VERSION).unwrap_or(i32::MAX);
        Ok(Self::from_json(E::NAME, version, payload).with_id(checked.id()))
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

    /// Sets the metadata (correlation id, causation id, trace context).
    #[must_use]
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(metadata.to_string());
        self
    }
}
