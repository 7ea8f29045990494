//! The envelope of an event: its typed [`Metadata`] (correlation, causation, W3C trace context,
//! and free extra fields), and how a publish fills it in.
//!
//! Metadata is stored beside the payload (the `metadata` column on PostgreSQL) as one JSON
//! object: the known fields under their names (`correlation_id`, `causation_id`, `traceparent`,
//! `tracestate`) and the extra fields beside them. Handlers read it back through
//! [`Ctx::metadata`](crate::Ctx::metadata).
//!
//! A publish made while an event is being handled (through the handler's `Tx`, or any other
//! publish in the handler's task) is stamped with what caused it, unless the caller set it: its
//! `causation_id` is the handled event's id, and its `correlation_id` the handled event's
//! correlation id, or the handled event's id when it has none. So a chain
//! submit → validate → publish → index shares one correlation id, that of the event which began it,
//! and each event names the one it came from.
//!
//! A delayed publish ([`Outgoing::deliver_after`](crate::Outgoing::deliver_after),
//! [`deliver_at`](crate::Outgoing::deliver_at)) records the delay it asked for as the extra field
//! `deliver_after` (seconds) or `deliver_at` (seconds since the Unix epoch): see
//! [`Metadata::due`].

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Ctx, Due, Error, Result};

pub(crate) mod cause;
#[cfg(feature = "opentelemetry")]
pub(crate) mod otel;
mod stamp;

pub use stamp::Envelopes;

/// The names of the known fields, as stored.
const CORRELATION_ID: &str = "correlation_id";
const CAUSATION_ID: &str = "causation_id";
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
/// The extra field a delayed publish records its delay in (seconds), see [`Metadata::due`].
const DELIVER_AFTER: &str = "deliver_after";
/// The extra field a publish due at a time records it in (epoch seconds).
const DELIVER_AT: &str = "deliver_at";

/// The metadata an event carries beside its payload: correlation and causation ids, W3C trace
/// context, and extra fields of your own.
///
/// Set it on an [`Outgoing`](crate::Outgoing) with
/// [`with_metadata`](crate::Outgoing::with_metadata); read it in a handler with
/// [`Ctx::metadata`](crate::Ctx::metadata). What you leave unset, a publish made while handling
/// an event fills in (the causation and correlation ids; see the [module docs](self)), and, with
/// the `opentelemetry` feature, the trace context of the publishing span.
///
/// Stored as one JSON object: `{"correlation_id": "req-42", "causation_id": "…", "traceparent":
/// "00-…-…-01", "tenant": "acme"}`. Reading it back is lenient: a known field that is not a
/// string (written by other code) stays an extra field of that name, and anything that is not a
/// JSON object reads as empty metadata ([`Ctx::metadata_json`](crate::Ctx::metadata_json) still
/// has the stored text).
///
/// # Examples
///
/// ```
/// use osa_events::{Event, Metadata, Outgoing};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize)]
/// #[event(name = "order.submitted")]
/// struct OrderSubmitted { order: u64 }
///
/// let metadata = Metadata::new()
///     .with_correlation_id("req-42")
///     .with_extra("tenant", "acme");
/// let outgoing = Outgoing::new(&OrderSubmitted { order: 7 })?.with_metadata(metadata)?;
/// assert_eq!(outgoing.metadata().correlation_id(), Some("req-42"));
/// assert_eq!(outgoing.metadata().extra("tenant"), Some(&serde_json::json!("acme")));
/// # Ok::<(), osa_events::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    correlation_id: Option<String>,
    causation_id: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    /// Never holds a known field's name while that field is set (the typed field wins).
    extra: Map<String, Value>,
}

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Metadata naming `ctx`'s event as the cause: `causation_id` is its id, `correlation_id` its
    /// correlation id (or its id when it has none). What a publish made while handling that
    /// event gets by default; use it in a batch handler, where the runtime cannot know which
    /// event of the batch a publish came from.
    ///
    /// # Examples
    ///
    /// ```
    /// use osa_events::prelude::*;
    /// use osa_events::{Metadata, Outgoing};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Event, Serialize, Deserialize)]
    /// # #[event(name = "record.published")]
    /// # struct RecordPublished { srn: String }
    /// # #[derive(Event, Serialize, Deserialize)]
    /// # #[event(name = "record.indexed")]
    /// # struct RecordIndexed { srn: String }
    ///
    /// #[event_handler(name = "index.records", batch = 64)]
    /// async fn index(records: Batch<RecordPublished>, mut tx: Tx) -> Result<(), HandlerError> {
    ///     let mut indexed = Vec::new();
    ///     for (ctx, record) in records.iter_with_ctx() {
    ///         indexed.push(
    ///             Outgoing::new(&RecordIndexed { srn: record.srn.clone() })?
    ///                 .with_metadata(Metadata::caused_by(ctx))?,
    ///         );
    ///     }
    ///     tx.publish_batch(&indexed).await?;
    ///     Ok(())
    /// }
    /// ```
    pub fn caused_by(ctx: &Ctx) -> Self {
        let cause = cause::Cause::of_one(ctx.event_id(), ctx.metadata().correlation_id());
        cause.fill(Self::new())
    }

    /// Sets the correlation id: the id shared by every event of one chain (a request id, or the
    /// id of the chain's first event).
    #[must_use]
    pub fn with_correlation_id(mut self, correlation_id: impl Into<String>) -> Self {
        self.extra.remove(CORRELATION_ID);
        self.correlation_id = Some(correlation_id.into());
        self
    }

    /// Sets the causation id: the id of the event (or command) this one was published because of.
    #[must_use]
    pub fn with_causation_id(mut self, causation_id: impl Into<String>) -> Self {
        self.extra.remove(CAUSATION_ID);
        self.causation_id = Some(causation_id.into());
        self
    }

    /// Sets the W3C trace context: the `traceparent` header's value and, if any, `tracestate`'s.
    /// With the `opentelemetry` feature a publish sets it from the current span when it is unset.
    #[must_use]
    pub fn with_trace_context(
        mut self,
        traceparent: impl Into<String>,
        tracestate: Option<String>,
    ) -> Self {
        self.extra.remove(TRACEPARENT);
        self.extra.remove(TRACESTATE);
        self.traceparent = Some(traceparent.into());
        self.tracestate = tracestate;
        self
    }

    /// Sets an extra field. A known field's name (`correlation_id`, `causation_id`,
    /// `traceparent`, `tracestate`) with a string value sets that field; with any other value
    /// it replaces the field by an extra field of that name.
    #[must_use]
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.insert(key.into(), value.into());
        self
    }

    /// The correlation id, if set.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// The causation id, if set.
    pub fn causation_id(&self) -> Option<&str> {
        self.causation_id.as_deref()
    }

    /// The W3C `traceparent`, if set.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// The W3C `tracestate`, if set.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The extra field `key`, if set.
    pub fn extra(&self, key: &str) -> Option<&Value> {
        self.extra.get(key)
    }

    /// Every extra field.
    pub fn extras(&self) -> &Map<String, Value> {
        &self.extra
    }

    /// The delivery delay the event was published with
    /// ([`Outgoing::deliver_after`](crate::Outgoing::deliver_after),
    /// [`Outgoing::deliver_at`](crate::Outgoing::deliver_at)), which a publish records in the
    /// metadata as the extra field `deliver_after` (seconds) or `deliver_at` (seconds since the
    /// Unix epoch), so that a handler, a relay or a consumer in another language can tell; `None`
    /// for an event delivered at once.
    ///
    /// The store keeps the due time it computed on the event itself; this is what was asked for.
    pub fn due(&self) -> Option<Due> {
        let seconds = |key| {
            self.extra
                .get(key)
                .and_then(Value::as_f64)
                .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
                .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        };
        if let Some(delay) = seconds(DELIVER_AFTER) {
            return Some(Due::After(delay));
        }
        seconds(DELIVER_AT).map(|since_epoch| Due::At(SystemTime::UNIX_EPOCH + since_epoch))
    }

    /// `self` with `due` recorded as [`due`](Self::due) reads it (nothing for [`Due::Now`]).
    pub(crate) fn with_due(mut self, due: Due) -> Self {
        match due {
            Due::Now => {}
            Due::After(_) => {
                self.extra.remove(DELIVER_AT);
                self.extra
                    .insert(DELIVER_AFTER.to_owned(), due.delay_seconds().into());
            }
            Due::At(_) => {
                self.extra.remove(DELIVER_AFTER);
                self.extra
                    .insert(DELIVER_AT.to_owned(), due.at_epoch_seconds().into());
            }
        }
        self
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.correlation_id.is_none()
            && self.causation_id.is_none()
            && self.traceparent.is_none()
            && self.tracestate.is_none()
            && self.extra.is_empty()
    }

    /// Reads stored metadata leniently (see the type's docs): never fails.
    pub(crate) fn from_stored(json: &str) -> Self {
        match serde_json::from_str::<Map<String, Value>>(json) {
            Ok(object) => Self::from_object(object),
            Err(_) => Self::new(),
        }
    }

    fn from_object(object: Map<String, Value>) -> Self {
        let mut metadata = Self::new();
        for (key, value) in object {
            metadata.insert(key, value);
        }
        metadata
    }

    fn insert(&mut self, key: String, value: Value) {
        let field = match key.as_str() {
            CORRELATION_ID => &mut self.correlation_id,
            CAUSATION_ID => &mut self.causation_id,
            TRACEPARENT => &mut self.traceparent,
            TRACESTATE => &mut self.tracestate,
            _ => {
                self.extra.insert(key, value);
                return;
            }
        };
        match value {
            Value::String(text) => {
                *field = Some(text);
                self.extra.remove(&key);
            }
            other => {
                *field = None;
                self.extra.insert(key, other);
            }
        }
    }

    /// The fields that are unset here taken from `defaults` (the extra fields merged, ours
    /// winning).
    pub(crate) fn or(mut self, defaults: &Metadata) -> Self {
        let fields = [
            (
                &mut self.correlation_id,
                &defaults.correlation_id,
                CORRELATION_ID,
            ),
            (&mut self.causation_id, &defaults.causation_id, CAUSATION_ID),
            (&mut self.traceparent, &defaults.traceparent, TRACEPARENT),
            (&mut self.tracestate, &defaults.tracestate, TRACESTATE),
        ];
        for (ours, theirs, name) in fields {
            // An extra field of a known name (a non-string value someone stored) counts as set.
            if ours.is_none() && !self.extra.contains_key(name) {
                ours.clone_from(theirs);
            }
        }
        for (key, value) in &defaults.extra {
            self.extra
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
        self
    }
}

impl TryFrom<Value> for Metadata {
    type Error = Error;

    /// Metadata from a JSON object, read as stored metadata is (known fields that are strings
    /// become those fields, everything else an extra field).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `value` is not a JSON object.
    fn try_from(value: Value) -> Result<Self> {
        match value {
            Value::Object(object) => Ok(Self::from_object(object)),
            other => Err(Error::Config(
                format!(
                    "event metadata must be a JSON object, found {}",
                    json_kind(&other)
                )
                .into(),
            )),
        }
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Serialize for Metadata {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let known = [
            (CORRELATION_ID, &self.correlation_id),
            (CAUSATION_ID, &self.causation_id),
            (TRACEPARENT, &self.traceparent),
            (TRACESTATE, &self.tracestate),
        ];
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in known {
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        for (key, value) in &self.extra {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        Map::<String, Value>::deserialize(deserializer).map(Self::from_object)
    }
}

#[cfg(test)]
mod tests;
