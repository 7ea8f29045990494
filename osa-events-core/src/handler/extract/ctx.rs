//! [`Ctx`]: what a handler may want to know about the delivery it is handling.

use std::sync::OnceLock;
use std::time::SystemTime;

use uuid::Uuid;

use super::{Call, FromEventArg};
use crate::store::Delivery;
use crate::{Metadata, Resources, Result};

/// The context of one delivery: event id, position, attempt, routing key, publish time, metadata.
///
/// Take it as a parameter of a per-event handler; a batch handler reads it per event with
/// [`Batch::iter_with_ctx`](crate::Batch::iter_with_ctx).
#[derive(Debug)]
pub struct Ctx {
    event_id: Uuid,
    position: i64,
    attempt: u32,
    routing_key: Option<String>,
    published_at: SystemTime,
    metadata_json: String,
    metadata: OnceLock<Metadata>,
}

impl Ctx {
    pub(crate) fn from_delivery(delivery: &Delivery) -> Self {
        Self {
            event_id: delivery.event_id,
            position: delivery.fence.position,
            attempt: delivery.attempt,
            routing_key: delivery.routing_key.clone(),
            published_at: delivery.published_at,
            metadata_json: delivery.metadata.clone(),
            metadata: OnceLock::new(),
        }
    }

    /// The event's id (its idempotency key).
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }

    /// The event's position in the log.
    pub fn position(&self) -> i64 {
        self.position
    }

    /// Which attempt this is: 1 for the first, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The routing key the event was published with.
    pub fn routing_key(&self) -> Option<&str> {
        self.routing_key.as_deref()
    }

    /// When the event was published (database time).
    pub fn published_at(&self) -> SystemTime {
        self.published_at
    }

    /// The metadata published with the event: correlation and causation ids, trace context and
    /// extra fields ([`Metadata`]; empty when none). Parsed on first use.
    pub fn metadata(&self) -> &Metadata {
        self.metadata
            .get_or_init(|| Metadata::from_stored(&self.metadata_json))
    }

    /// The metadata as stored, JSON text (`{}` when none): for metadata written by other code
    /// that [`metadata`](Self::metadata) does not read (anything but a JSON object).
    pub fn metadata_json(&self) -> &str {
        &self.metadata_json
    }
}

impl FromEventArg for Ctx {
    type Bound = ();

    fn bind(_resources: &Resources, _handler: &'static str) -> Result<()> {
        Ok(())
    }

    fn extract(_bound: &(), call: &mut Call<'_>) -> Self {
        Ctx::from_delivery(call.delivery())
    }
}

impl Ctx {
    /// A context for an event that was never stored, for unit tests that call handlers directly.
    pub(crate) fn for_test(position: i64) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            position,
            attempt: 1,
            routing_key: None,
            published_at: SystemTime::now(),
            metadata_json: "{}".to_owned(),
            metadata: OnceLock::new(),
        }
    }
}
