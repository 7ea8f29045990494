//! [`Envelopes`]: what every store's publish runs its events through, so all stores stamp the same
//! metadata and trace the same span.

use tracing::Span;

use super::{Metadata, cause};
use crate::{Due, Outgoing, Published, Result, spans};

/// The metadata of a publish's events as the store writes it, and the publish's span.
///
/// A store's publish (outside a handler, or through a [`Transaction`](crate::store::Transaction))
/// starts with [`Envelopes::stamp`], writes [`metadata`](Self::metadata) as each event's
/// metadata, runs its statement inside [`span`](Self::span), and reports the result with
/// [`finish`](Self::finish). Stamping fills in what each event's [`Metadata`] leaves unset: the
/// causation and correlation ids when an event is being handled (see [`crate::envelope`]), and,
/// with the `opentelemetry` feature, the trace context of the publish span.
///
/// # Examples
///
/// How a store's publish uses it:
///
/// ```
/// use osa_events::{Outgoing, Published, Result};
/// use osa_events::store::Envelopes;
/// use tracing::Instrument;
///
/// async fn publish(events: &[Outgoing]) -> Result<Published> {
///     let envelopes = Envelopes::stamp(events);
///     let result = async {
///         for (event, metadata) in events.iter().zip(envelopes.metadata()) {
///             // write `event` with `metadata` (`None`: no metadata, stored as `{}`)
///             let _ = (event, metadata);
///         }
///         Ok(Published::new(events.len() as u64, 0))
///     }
///     .instrument(envelopes.span().clone())
///     .await;
///     envelopes.finish(&result);
///     result
/// }
/// ```
#[derive(Debug)]
pub struct Envelopes {
    span: Span,
    metadata: Vec<Option<String>>,
    event_types: Vec<(&'static str, u64)>,
}

impl Envelopes {
    /// Opens the publish's span and stamps each event's metadata inside it.
    pub fn stamp(events: &[Outgoing]) -> Self {
        let span = spans::publish(events);
        let metadata = span.in_scope(|| {
            let cause = cause::current();
            #[cfg(feature = "opentelemetry")]
            let trace = super::otel::current_trace_context();
            #[cfg(not(feature = "opentelemetry"))]
            let trace: Option<Metadata> = None;
            events
                .iter()
                .map(|event| {
                    stamped(
                        event.metadata(),
                        event.due(),
                        cause.as_ref(),
                        trace.as_ref(),
                    )
                })
                .collect()
        });
        Self {
            span,
            metadata,
            event_types: by_type(events),
        }
    }

    /// Each event's metadata as JSON text, in the events' order; `None` for an event with none.
    pub fn metadata(&self) -> &[Option<String>] {
        &self.metadata
    }

    /// The publish's span: run the store's statement in it.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Records the publish's result on its span, and counts the new events in
    /// `osa_events_published_events_total` by event type.
    pub fn finish(&self, result: &Result<Published>) {
        let counts = result
            .as_ref()
            .map(|published| (published.events, published.deliveries));
        spans::record_published(&self.span, counts);
        if let Ok(published) = result {
            count_published(&self.event_types, published.events);
        }
    }
}

/// Adds a publish's new events to the counter of their event type. A publish of one type adds
/// exactly the new events; a publish of several adds every event of each type, since the store
/// reports new events in all (a repeated id in such a batch is counted again).
fn count_published(event_types: &[(&'static str, u64)], new_events: u64) {
    match event_types {
        [] => {}
        [(event_type, _)] => count(event_type, new_events),
        many => {
            for &(event_type, events) in many {
                count(event_type, events);
            }
        }
    }
}

fn count(event_type: &'static str, events: u64) {
    if events > 0 {
        metrics::counter!(crate::metrics::PUBLISHED_EVENTS, "event_type" => event_type)
            .increment(events);
    }
}

/// How many of `events` are of each type, in order of first appearance.
fn by_type(events: &[Outgoing]) -> Vec<(&'static str, u64)> {
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    for event in events {
        match counts.iter_mut().find(|(t, _)| *t == event.event_type()) {
            Some((_, count)) => *count += 1,
            None => counts.push((event.event_type(), 1)),
        }
    }
    counts
}

/// One event's metadata with its defaults filled in, and its delivery delay recorded (see
/// [`Metadata::due`]), as JSON text; `None` when it is empty.
fn stamped(
    metadata: &Metadata,
    due: Due,
    cause: Option<&cause::Cause>,
    trace: Option<&Metadata>,
) -> Option<String> {
    if cause.is_none() && trace.is_none() && due == Due::Now {
        // The common case outside handlers and tracing: nothing to add, nothing to copy.
        return (!metadata.is_empty()).then(|| to_json(metadata));
    }
    let mut filled = metadata.clone().with_due(due);
    if let Some(cause) = cause {
        filled = cause.fill(filled);
    }
    // The trace context comes whole or not at all: an event that carries a `traceparent`
    // keeps its own `tracestate` too.
    if let Some(trace) = trace
        && filled.traceparent.is_none()
        && !filled.extra.contains_key(super::TRACEPARENT)
    {
        filled.traceparent.clone_from(&trace.traceparent);
        filled.tracestate.clone_from(&trace.tracestate);
        filled.extra.remove(super::TRACESTATE);
    }
    (!filled.is_empty()).then(|| to_json(&filled))
}

fn to_json(metadata: &Metadata) -> String {
    // Strings and JSON values only: serializing cannot fail.
    serde_json::to_string(metadata).unwrap_or_else(|_| "{}".to_owned())
}
