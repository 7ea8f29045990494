//! OpenTelemetry trace context across the hop (the `opentelemetry` feature): a publish injects
//! the current span's W3C context into the event's [`Metadata`]; handling extracts it, to parent a
//! per-event span on the publisher's or to link a batch's span to each event.
//!
//! The spans are `tracing` spans; `tracing-opentelemetry`'s layer, which the application installs,
//! turns them into OpenTelemetry spans. Without that layer every function here does nothing.
//! W3C Trace Context is the format, whatever propagator the application installs globally: it is
//! what the envelope's `traceparent` and `tracestate` fields hold.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{Metadata, TRACEPARENT, TRACESTATE};
use crate::spans::SYSTEM;

/// The current span's trace context as envelope fields (only `traceparent` and `tracestate`
/// set), or `None` when there is no valid OpenTelemetry context (no layer, or tracing off).
pub(crate) fn current_trace_context() -> Option<Metadata> {
    let context = Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = Metadata::new();
    TraceContextPropagator::new().inject_context(&context, &mut Carrier(&mut carrier));
    carrier.traceparent.is_some().then_some(carrier)
}

/// Makes the publisher's span, whose context `metadata` carries, the parent of `span` (which must
/// not have been entered yet). Without a context, `span` keeps its parent.
pub(crate) fn set_parent(span: &Span, metadata: &Metadata) {
    if metadata.traceparent.is_none() {
        return;
    }
    let context = TraceContextPropagator::new().extract(&Reader(metadata));
    if context.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed or the span is disabled: then
        // there is nothing to parent.
        let _ = span.set_parent(context);
    }
}

/// Links `span` to the publisher's span, whose context `metadata` carries, if it carries one.
pub(crate) fn add_link(span: &Span, metadata: &Metadata) {
    if metadata.traceparent.is_none() {
        return;
    }
    let context = TraceContextPropagator::new().extract(&Reader(metadata));
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.add_link(span_context);
    }
}

/// The attributes every span of ours has: the messaging system and the operation's type.
pub(crate) fn set_common_attributes(span: &Span, operation_type: &'static str) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("messaging.system", SYSTEM);
    span.set_attribute("messaging.operation.type", operation_type);
}

/// Writes the propagator's headers into the envelope's fields.
struct Carrier<'a>(&'a mut Metadata);

impl Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.0.traceparent = Some(value),
            TRACESTATE if !value.is_empty() => self.0.tracestate = Some(value),
            _ => {}
        }
    }
}

/// Reads the propagator's headers from the envelope's fields.
struct Reader<'a>(&'a Metadata);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.0.traceparent(),
            TRACESTATE => self.0.tracestate(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        [TRACEPARENT, TRACESTATE]
            .into_iter()
            .filter(|key| self.get(key).is_some())
            .collect()
    }
}
