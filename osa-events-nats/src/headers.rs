//! The envelope of an event as NATS headers, both ways: what the relay writes, and what the
//! JetStream source reads back into a [`Delivery`].
//!
//! The body of a message is the event's payload JSON, unchanged, so a consumer in any language
//! reads it as it was published. Everything else travels in headers:
//!
//! | header | value |
//! | --- | --- |
//! | `Nats-Msg-Id` | the event id: JetStream drops a second copy within the stream's duplicate window |
//! | `Osa-Event-Id` | the event id (a UUID) |
//! | `Osa-Event-Type` | the event's type name, e.g. `order.placed` |
//! | `Osa-Event-Version` | its payload version, e.g. `1` |
//! | `Osa-Routing-Key` | the routing key, when it has one |
//! | `Osa-Position` | its position in the log it was relayed from |
//! | `Osa-Published-At` | when it was published, in seconds since the Unix epoch (`1764672000.25`) |
//! | `Osa-Correlation-Id`, `Osa-Causation-Id` | the ids of its chain and of the event that caused it |
//! | `traceparent`, `tracestate` | its W3C trace context |
//! | `Osa-Metadata` | the whole metadata object as JSON, extra fields included (absent when empty) |
//!
//! A value that a header cannot carry (a line break in a correlation id) is left out of its own
//! header; `Osa-Metadata` still has it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::{HeaderMap, HeaderName};
use osa_events_core::store::{Delivery, Fence};
use serde_json::{Map, Value};
use uuid::Uuid;

/// JetStream's de-duplication header.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// The event id.
pub const EVENT_ID: &str = "Osa-Event-Id";
/// The event type name.
pub const EVENT_TYPE: &str = "Osa-Event-Type";
/// The payload version.
pub const EVENT_VERSION: &str = "Osa-Event-Version";
/// The routing key.
pub const ROUTING_KEY: &str = "Osa-Routing-Key";
/// The position in the source log.
pub const POSITION: &str = "Osa-Position";
/// Publication time, seconds since the Unix epoch.
pub const PUBLISHED_AT: &str = "Osa-Published-At";
/// The correlation id.
pub const CORRELATION_ID: &str = "Osa-Correlation-Id";
/// The causation id.
pub const CAUSATION_ID: &str = "Osa-Causation-Id";
/// W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";
/// The whole metadata object, as JSON.
pub const METADATA: &str = "Osa-Metadata";

/// The metadata fields that also get a header of their own.
const METADATA_HEADERS: [(&str, &str); 4] = [
    ("correlation_id", CORRELATION_ID),
    ("causation_id", CAUSATION_ID),
    ("traceparent", TRACEPARENT),
    ("tracestate", TRACESTATE),
];

/// The headers of the message the relay publishes for `event`.
pub fn for_event(event: &Delivery) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let id = event.event_id.to_string();
    // Names made once, at compile time: inserting by `&str` validates and copies each name.
    headers.insert(HeaderName::from_static(MSG_ID), id.as_str());
    headers.insert(HeaderName::from_static(EVENT_ID), id);
    insert_text(&mut headers, EVENT_TYPE, &event.event_type);
    headers.insert(
        HeaderName::from_static(EVENT_VERSION),
        event.event_version.to_string(),
    );
    if let Some(key) = &event.routing_key {
        insert_text(&mut headers, ROUTING_KEY, key);
    }
    headers.insert(
        HeaderName::from_static(POSITION),
        event.fence.position.to_string(),
    );
    headers.insert(
        HeaderName::from_static(PUBLISHED_AT),
        epoch_seconds(event.published_at),
    );
    if event.metadata == "{}" {
        // The common case, without parsing.
        return headers;
    }
    if let Ok(Value::Object(metadata)) = serde_json::from_str::<Value>(&event.metadata) {
        for (field, header) in METADATA_HEADERS {
            if let Some(Value::String(text)) = metadata.get(field) {
                insert_text(&mut headers, header, text);
            }
        }
        if !metadata.is_empty() {
            // Compact JSON has no line break: control characters in strings are escaped.
            headers.insert(
                HeaderName::from_static(METADATA),
                Value::Object(metadata).to_string(),
            );
        }
    }
    headers
}

/// Inserts `value` unless a header cannot carry it (a line break).
fn insert_text(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if !value.contains(['\r', '\n']) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

fn epoch_seconds(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:06}", since.as_secs(), since.subsec_micros())
}

/// What a JetStream message says about its event, read back from its headers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Envelope {
    pub(crate) event_id: Uuid,
    pub(crate) event_type: Option<String>,
    pub(crate) event_version: i32,
    pub(crate) routing_key: Option<String>,
    pub(crate) published_at: Option<SystemTime>,
    pub(crate) metadata: String,
}

impl Envelope {
    /// Reads `headers` (of the message at `stream_sequence`). Lenient, since other programs
    /// publish to the same streams: a missing or unreadable event id becomes a stable one derived
    /// from the stream sequence, a missing version is 1, missing metadata is `{}` (or is built
    /// from the individual headers).
    pub(crate) fn read(headers: Option<&HeaderMap>, stream_sequence: u64) -> Self {
        // One pass over the headers: a lookup by a `&str` name builds (and validates) a header
        // name each time, which costs more than the rest of a message's handling.
        let mut found = Found::default();
        for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
            let Some(value) = values.first().map(|value| value.as_str()) else {
                continue;
            };
            let name: &str = name.as_ref();
            match name {
                EVENT_ID => found.event_id = Some(value),
                MSG_ID => found.msg_id = Some(value),
                EVENT_TYPE => found.event_type = Some(value),
                EVENT_VERSION => found.event_version = Some(value),
                ROUTING_KEY => found.routing_key = Some(value),
                PUBLISHED_AT => found.published_at = Some(value),
                METADATA => found.metadata = Some(value),
                _ => {
                    if let Some((field, _)) =
                        METADATA_HEADERS.iter().find(|(_, header)| *header == name)
                    {
                        found.fields.push((*field, value));
                    }
                }
            }
        }
        let event_id = found
            .event_id
            .or(found.msg_id)
            .and_then(|id| Uuid::parse_str(id).ok())
            .unwrap_or_else(|| Uuid::from_u64_pair(0, stream_sequence));
        let metadata = match found.metadata {
            Some(metadata) => metadata.to_owned(),
            None if found.fields.is_empty() => "{}".to_owned(),
            None => {
                let mut object = Map::new();
                for (field, value) in found.fields {
                    object.insert(field.to_owned(), Value::String(value.to_owned()));
                }
                Value::Object(object).to_string()
            }
        };
        Self {
            event_id,
            event_type: found.event_type.map(str::to_owned),
            event_version: found
                .event_version
                .and_then(|version| version.parse().ok())
                .unwrap_or(1),
            routing_key: found.routing_key.map(str::to_owned),
            published_at: found.published_at.and_then(parse_epoch_seconds),
            metadata,
        }
    }

    /// The delivery of this event as the runtime sees it.
    pub(crate) fn into_delivery(
        self,
        fence: Fence,
        attempt: u32,
        event_type: &str,
        payload: String,
        received_at: SystemTime,
    ) -> Delivery {
        Delivery {
            fence,
            attempt,
            last_error: None,
            event_id: self.event_id,
            event_type: self.event_type.unwrap_or_else(|| event_type.to_owned()),
            event_version: self.event_version,
            routing_key: self.routing_key,
            payload,
            metadata: self.metadata,
            published_at: self.published_at.unwrap_or(received_at),
        }
    }
}

/// The headers [`Envelope::read`] looks at, as found.
#[derive(Default)]
struct Found<'a> {
    event_id: Option<&'a str>,
    msg_id: Option<&'a str>,
    event_type: Option<&'a str>,
    event_version: Option<&'a str>,
    routing_key: Option<&'a str>,
    published_at: Option<&'a str>,
    metadata: Option<&'a str>,
    /// Metadata fields with a header of their own, for a message without `Osa-Metadata`.
    fields: Vec<(&'static str, &'a str)>,
}

fn parse_epoch_seconds(text: &str) -> Option<SystemTime> {
    let seconds: f64 = text.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| UNIX_EPOCH + Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(metadata: &str) -> Delivery {
        Delivery {
            fence: Fence {
                position: 42,
                token: Uuid::nil(),
            },
            attempt: 1,
            last_error: None,
            event_id: Uuid::new_v4(),
            event_type: "order.placed".into(),
            event_version: 3,
            routing_key: Some("eu".into()),
            payload: r#"{"order": 7}"#.into(),
            metadata: metadata.into(),
            published_at: UNIX_EPOCH + Duration::from_millis(1_764_672_000_250),
        }
    }

    #[test]
    fn the_envelope_round_trips_through_headers() {
        let sent = event(
            r#"{"correlation_id": "req-1", "causation_id": "c-2", "traceparent": "00-ab-cd-01", "tenant": "acme"}"#,
        );
        let headers = for_event(&sent);
        assert_eq!(
            headers.get(MSG_ID).unwrap().as_str(),
            sent.event_id.to_string()
        );
        assert_eq!(headers.get(EVENT_TYPE).unwrap().as_str(), "order.placed");
        assert_eq!(headers.get(EVENT_VERSION).unwrap().as_str(), "3");
        assert_eq!(headers.get(ROUTING_KEY).unwrap().as_str(), "eu");
        assert_eq!(headers.get(POSITION).unwrap().as_str(), "42");
        assert_eq!(
            headers.get(PUBLISHED_AT).unwrap().as_str(),
            "1764672000.250000"
        );
        assert_eq!(headers.get(CORRELATION_ID).unwrap().as_str(), "req-1");
        assert_eq!(headers.get(TRACEPARENT).unwrap().as_str(), "00-ab-cd-01");
        let fence = Fence {
            position: 9,
            token: Uuid::new_v4(),
        };
        let received = Envelope::read(Some(&headers), 9).into_delivery(
            fence,
            2,
            "other",
            sent.payload.clone(),
            SystemTime::now(),
        );
        assert_eq!(received.event_id, sent.event_id);
        assert_eq!(received.event_type, "order.placed");
        assert_eq!(received.event_version, 3);
        assert_eq!(received.routing_key.as_deref(), Some("eu"));
        assert_eq!(received.published_at, sent.published_at);
        assert_eq!(received.attempt, 2);
        assert_eq!(received.fence, fence);
        let metadata: Value = serde_json::from_str(&received.metadata).unwrap();
        let expected: Value = serde_json::from_str(&sent.metadata).unwrap();
        assert_eq!(metadata, expected);
    }

    #[test]
    fn a_line_break_stays_out_of_its_header_but_not_out_of_the_metadata() {
        let headers = for_event(&event(r#"{"correlation_id": "a\nb"}"#));
        assert!(headers.get(CORRELATION_ID).is_none());
        let metadata: Value =
            serde_json::from_str(headers.get(METADATA).unwrap().as_str()).unwrap();
        assert_eq!(metadata["correlation_id"], "a\nb");
        assert!(for_event(&event("{}")).get(METADATA).is_none());
    }

    #[test]
    fn a_foreign_message_reads_with_defaults() {
        let mut headers = HeaderMap::new();
        headers.insert(CORRELATION_ID, "req-9");
        let envelope = Envelope::read(Some(&headers), 77);
        assert_eq!(envelope.event_id, Uuid::from_u64_pair(0, 77));
        assert_eq!(envelope.event_type, None);
        assert_eq!(envelope.event_version, 1);
        assert_eq!(envelope.metadata, r#"{"correlation_id":"req-9"}"#);
        let bare = Envelope::read(None, 78);
        assert_eq!(bare.metadata, "{}");
        assert_eq!(bare.published_at, None);
    }
}
