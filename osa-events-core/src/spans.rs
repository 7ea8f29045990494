//! The runtime's tracing spans, named and attributed after OpenTelemetry's messaging semantic
//! conventions, so an OpenTelemetry pipeline (through `tracing-opentelemetry`) shows them as
//! messaging spans:
//!
//! | span | name | kind | when |
//! | --- | --- | --- | --- |
//! | [`publish`] | `publish <event type>` | producer | every publish, in any store |
//! | [`receive`] | `receive <handler>` | consumer | every claimed batch |
//! | [`process_event`] | `process <handler>` | consumer | every call of a per-event handler (DEBUG) |
//! | [`process_batch`] | `process <handler>` | consumer | every call of a batch handler or projection |
//!
//! The tracing span's own name is the operation (`publish`, `receive`, `process`); `otel.name`
//! carries the conventional name with its destination, and `otel.kind` the span kind, the fields
//! `tracing-opentelemetry` reads. The destination is the event type for a publish, and the handler
//! (its subscription) or the projection for the consumer's spans. The attributes common to every
//! span (`messaging.system = "osa_events"`, `messaging.operation.type`) are set on the
//! OpenTelemetry span only (with the `opentelemetry` feature), to keep log lines short.
//!
//! Outcomes are recorded when known: `osa_events.outcome` (`completed`, `retried`,
//! `dead_lettered`, `deferred`, `released` or `lost`) and, on failure, `error.type` and
//! `otel.status_code = "ERROR"`. A handler's `HandlerError::retry_after` is recorded `deferred`
//! (the attempt is not counted, as for a newer event version); a `HandlerError::fatal` is
//! `released` with `error.type` and `otel.status_code = "ERROR"`. No span carries a payload
//! value.

use tracing::Span;
use tracing::field::Empty;

use crate::Outgoing;
#[cfg(feature = "opentelemetry")]
use crate::envelope::Metadata;
use crate::store::Delivery;

/// The `messaging.system` of every span.
#[cfg(feature = "opentelemetry")]
pub(crate) const SYSTEM: &str = "osa_events";

/// The span of one publish of `events` (entered while their metadata is stamped, so the trace
/// context they carry is this span's).
pub(crate) fn publish(events: &[Outgoing]) -> Span {
    let first = events.first().map(Outgoing::event_type);
    let one_type = first.filter(|first| events.iter().all(|e| e.event_type() == *first));
    let id = match events {
        [one] => Some(tracing::field::display(one.id())),
        _ => None,
    };
    let span = tracing::info_span!(
        target: "osa_events::publish",
        "publish",
        otel.name = %format_args!("publish {}", one_type.unwrap_or("events")),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.destination.name = one_type,
        messaging.message.id = id,
        messaging.batch.message_count = events.len(),
        osa_events.published = Empty,
        osa_events.deliveries = Empty,
        error.type = Empty,
    );
    with_common_attributes(&span, "send");
    span
}

/// The span of one claimed batch of `handler`, linked to the context of every event in it.
pub(crate) fn receive(handler: &str, event_type: &str, deliveries: &[Delivery]) -> Span {
    let span = tracing::info_span!(
        target: "osa_events::worker",
        "receive",
        otel.name = %format_args!("receive {handler}"),
        otel.kind = "consumer",
        messaging.destination.name = handler,
        messaging.batch.message_count = deliveries.len(),
        osa_events.event_type = event_type,
        osa_events.completed = Empty,
        osa_events.retried = Empty,
        osa_events.dead_lettered = Empty,
        osa_events.deferred = Empty,
        osa_events.released = Empty,
        osa_events.lost = Empty,
    );
    with_common_attributes(&span, "receive");
    link_events(&span, deliveries);
    span
}

/// The span of one call of per-event handler `handler`: a child of the publisher's span when the
/// event carries its trace context (with the `opentelemetry` feature), else of the batch's.
///
/// At DEBUG, like the rest of the per-event detail: a subscriber at INFO does not build (or
/// format) one span per event, which would cost a no-op handler most of its throughput; the
/// batch's `receive` span, at INFO, links to every event.
pub(crate) fn process_event(handler: &str, delivery: &Delivery) -> Span {
    // Asked first: a disabled span from the macro still costs its `log` fallback (which a
    // dependency may turn on) on every enter and exit; `Span::none()` costs nothing.
    if !tracing::enabled!(target: "osa_events::worker", tracing::Level::DEBUG) {
        return Span::none();
    }
    let span = tracing::debug_span!(
        target: "osa_events::worker",
        "process",
        otel.name = %format_args!("process {handler}"),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.destination.name = handler,
        messaging.message.id = %delivery.event_id,
        osa_events.event_type = %delivery.event_type,
        osa_events.position = delivery.fence.position,
        osa_events.attempt = delivery.attempt,
        osa_events.outcome = Empty,
        error.type = Empty,
    );
    with_common_attributes(&span, "process");
    #[cfg(feature = "opentelemetry")]
    if let Some(metadata) = trace_context(delivery) {
        crate::envelope::otel::set_parent(&span, &metadata);
    }
    span
}

/// The span of one call of a batch handler or projection `destination` (of `event_type`, for a
/// handler) over `events`, linked to each event's context.
pub(crate) fn process_batch(
    destination: &str,
    event_type: Option<&str>,
    events: &[&Delivery],
) -> Span {
    let span = tracing::info_span!(
        target: "osa_events::worker",
        "process",
        otel.name = %format_args!("process {destination}"),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.destination.name = destination,
        messaging.batch.message_count = events.len(),
        osa_events.event_type = event_type,
        osa_events.outcome = Empty,
        error.type = Empty,
    );
    with_common_attributes(&span, "process");
    link_events(&span, events.iter().copied());
    span
}

/// The metadata of `delivery` if it may carry a trace context: parsed only then (the common
/// case without one costs a substring search, not a JSON parse per event).
#[cfg(feature = "opentelemetry")]
fn trace_context(delivery: &Delivery) -> Option<Metadata> {
    delivery
        .metadata
        .contains("traceparent")
        .then(|| Metadata::from_stored(&delivery.metadata))
}

/// How one delivery's processing ended, as recorded on its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    Completed,
    Retried,
    DeadLettered,
    Deferred,
    Released,
    Lost,
}

impl Recorded {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Recorded::Completed => "completed",
            Recorded::Retried => "retried",
            Recorded::DeadLettered => "dead_lettered",
            Recorded::Deferred => "deferred",
            Recorded::Released => "released",
            Recorded::Lost => "lost",
        }
    }

    fn is_error(self) -> bool {
        matches!(self, Recorded::Retried | Recorded::DeadLettered)
    }
}

/// Records `outcome` (and, for a failure or a fatal error, `error_type`) on a process span.
pub(crate) fn record_outcome(span: &Span, outcome: Recorded, error_type: Option<&'static str>) {
    if span.is_disabled() {
        return;
    }
    span.record("osa_events.outcome", outcome.as_str());
    // A fatal error releases its deliveries (`released`), and is an error all the same.
    if outcome.is_error() || error_type.is_some() {
        span.record("error.type", error_type.unwrap_or("handler"));
        span.record("otel.status_code", "ERROR");
    }
}

/// Records a publish's result on its span.
pub(crate) fn record_published(span: &Span, published: Result<(u64, u64), &crate::Error>) {
    match published {
        Ok((events, deliveries)) => {
            span.record("osa_events.published", events);
            span.record("osa_events.deliveries", deliveries);
        }
        Err(error) => {
            span.record("error.type", error.kind_name());
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// The attributes every span of ours has, on its OpenTelemetry span.
fn with_common_attributes(span: &Span, operation_type: &'static str) {
    #[cfg(feature = "opentelemetry")]
    crate::envelope::otel::set_common_attributes(span, operation_type);
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, operation_type);
}

/// Links `span` to the trace context each event carries (with the `opentelemetry` feature).
fn link_events<'a>(span: &Span, deliveries: impl IntoIterator<Item = &'a Delivery>) {
    #[cfg(feature = "opentelemetry")]
    for metadata in deliveries.into_iter().filter_map(trace_context) {
        crate::envelope::otel::add_link(span, &metadata);
    }
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, deliveries);
}

/// How many deliveries of one claimed batch ended each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) completed: u64,
    pub(crate) retried: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) deferred: u64,
    pub(crate) released: u64,
    pub(crate) lost: u64,
}

impl Tally {
    /// Counts one delivery that ended as `outcome`.
    pub(crate) fn add(&mut self, outcome: Recorded) {
        let count = match outcome {
            Recorded::Completed => &mut self.completed,
            Recorded::Retried => &mut self.retried,
            Recorded::DeadLettered => &mut self.dead_lettered,
            Recorded::Deferred => &mut self.deferred,
            Recorded::Released => &mut self.released,
            Recorded::Lost => &mut self.lost,
        };
        *count += 1;
    }

    /// Every count with its outcome, in a fixed order.
    pub(crate) fn counts(&self) -> [(Recorded, u64); 6] {
        [
            (Recorded::Completed, self.completed),
            (Recorded::Retried, self.retried),
            (Recorded::DeadLettered, self.dead_lettered),
            (Recorded::Deferred, self.deferred),
            (Recorded::Released, self.released),
            (Recorded::Lost, self.lost),
        ]
    }

    /// The outcome that sums the batch up for a batch handler's span: `completed` when every
    /// delivery completed, else the gravest that occurred (dead-lettered, then retried, lost,
    /// deferred, released).
    pub(crate) fn summary(&self) -> Recorded {
        [
            (Recorded::DeadLettered, self.dead_lettered),
            (Recorded::Retried, self.retried),
            (Recorded::Lost, self.lost),
            (Recorded::Deferred, self.deferred),
            (Recorded::Released, self.released),
        ]
        .into_iter()
        .find(|&(_, count)| count > 0)
        .map_or(Recorded::Completed, |(outcome, _)| outcome)
    }

    /// Records the counts on a receive span (the current span of the batch).
    pub(crate) fn record_on(&self, span: &Span) {
        if span.is_disabled() {
            return;
        }
        for (outcome, count) in self.counts() {
            span.record(
                match outcome {
                    Recorded::Completed => "osa_events.completed",
                    Recorded::Retried => "osa_events.retried",
                    Recorded::DeadLettered => "osa_events.dead_lettered",
                    Recorded::Deferred => "osa_events.deferred",
                    Recorded::Released => "osa_events.released",
                    Recorded::Lost => "osa_events.lost",
                },
                count,
            );
        }
    }
}
