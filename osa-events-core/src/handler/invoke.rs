//! [`Invoker`]: a bound handler, type-erased so the runtime can call any handler the same way.
//!
//! The generated code hands a closure to [`Invoker::each`] or [`Invoker::batch`]; the generic code
//! here decodes payloads into the handler's event type and boxes the returned future. Decoding
//! failures never reach the handler: each becomes a permanent failure of its own delivery.
//!
//! Decoding and extracting run user code (a `Deserialize` impl, a custom extractor) outside the
//! handler's future, so each runs under `catch_unwind` here: a panic there is a permanent failure
//! of the events it concerns, never the end of the loop that made the call.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};

use futures_util::future::BoxFuture;

use super::error::{HandlerError, Origin};
use super::extract::{Batch, BatchOutcome, Call, Ctx};
use crate::Event;
use crate::projection::{EventSet, decode_event};
use crate::store::Delivery;

/// The future of one per-event handler call.
pub(crate) type HandlerFuture = BoxFuture<'static, Result<(), HandlerError>>;
/// The future of one batch handler call.
pub(crate) type BatchFuture = BoxFuture<'static, Result<BatchOutcome, HandlerError>>;

pub(crate) type EachFn = dyn Fn(&mut Call<'_>) -> Result<HandlerFuture, HandlerError> + Send + Sync;
pub(crate) type BatchFn = dyn Fn(&mut Call<'_>) -> BatchCall + Send + Sync;

/// A handler bound to its resources, ready to be called by the runtime.
pub struct Invoker {
    pub(crate) kind: InvokerKind,
    pub(crate) transactional: bool,
}

pub(crate) enum InvokerKind {
    Each(Box<EachFn>),
    Batch(Box<BatchFn>),
}

/// One call of a batch handler: the future over the decodable events, and the rest.
pub(crate) struct BatchCall {
    /// `None` when no event of the batch could be decoded.
    pub(crate) future: Option<BatchFuture>,
    /// Indexes (into the claimed deliveries) of the events passed to the handler, in batch order.
    pub(crate) accepted: Vec<usize>,
    /// Indexes of events that could not be decoded, with why.
    pub(crate) rejected: Vec<(usize, HandlerError)>,
}

impl std::fmt::Debug for Invoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shape = match self.kind {
            InvokerKind::Each(_) => "each",
            InvokerKind::Batch(_) => "batch",
        };
        f.debug_struct("Invoker")
            .field("shape", &shape)
            .field("transactional", &self.transactional)
            .finish_non_exhaustive()
    }
}

impl Invoker {
    /// A per-event handler: `handler(event, call)` is called once per decoded event.
    pub fn each<E, F, Fut>(handler: F) -> Self
    where
        E: Event,
        F: Fn(E, &mut Call<'_>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let call = move |call: &mut Call<'_>| -> Result<HandlerFuture, HandlerError> {
            let event = decode_guarded(|| decode::<E>(call.delivery()))?;
            catch_unwind(AssertUnwindSafe(|| {
                Box::pin(handler(event, call)) as HandlerFuture
            }))
            .map_err(extract_panicked)
        };
        Self {
            kind: InvokerKind::Each(Box::new(call)),
            transactional: false,
        }
    }

    /// A batch handler: `handler(batch, call)` is called once per claimed batch.
    pub fn batch<E, F, Fut>(handler: F) -> Self
    where
        E: Event,
        F: Fn(Batch<E>, &mut Call<'_>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<BatchOutcome, HandlerError>> + Send + 'static,
    {
        Self::batch_decoded(decode::<E>, handler)
    }

    /// A projection: `handler(batch, call)` is called once per batch of events of the set `S`.
    pub fn projection<S, F, Fut>(handler: F) -> Self
    where
        S: EventSet,
        F: Fn(Batch<S>, &mut Call<'_>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<BatchOutcome, HandlerError>> + Send + 'static,
    {
        Self::batch_decoded(
            |delivery: &Delivery| {
                S::decode(
                    &delivery.event_type,
                    delivery.event_version,
                    &delivery.payload,
                )
            },
            handler,
        )
    }

    fn batch_decoded<E, D, F, Fut>(decode: D, handler: F) -> Self
    where
        E: Send + 'static,
        D: Fn(&Delivery) -> Result<E, HandlerError> + Send + Sync + 'static,
        F: Fn(Batch<E>, &mut Call<'_>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<BatchOutcome, HandlerError>> + Send + 'static,
    {
        let call = move |call: &mut Call<'_>| -> BatchCall {
            let deliveries = call.deliveries();
            let mut events = Vec::with_capacity(deliveries.len());
            let mut contexts = Vec::with_capacity(deliveries.len());
            let mut accepted = Vec::with_capacity(deliveries.len());
            let mut rejected = Vec::new();
            for (index, delivery) in deliveries.iter().enumerate() {
                match decode_guarded(|| decode(delivery)) {
                    Ok(event) => {
                        events.push(event);
                        contexts.push(Ctx::from_delivery(delivery));
                        accepted.push(index);
                    }
                    Err(error) => rejected.push((index, error)),
                }
            }
            let future = (!events.is_empty()).then(|| {
                let batch = Batch::new(events, contexts);
                catch_unwind(AssertUnwindSafe(|| {
                    Box::pin(handler(batch, call)) as BatchFuture
                }))
                .unwrap_or_else(|panic| {
                    // Every event of the call shares the extractors: all of them fail.
                    let error = extract_panicked(panic);
                    Box::pin(async move { Err(error) }) as BatchFuture
                })
            });
            BatchCall {
                future,
                accepted,
                rejected,
            }
        };
        Self {
            kind: InvokerKind::Batch(Box::new(call)),
            transactional: false,
        }
    }

    /// Whether each call runs in a transaction that also completes its deliveries (the handler
    /// takes [`Tx`](crate::Tx)).
    #[must_use]
    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }
}

/// Decodes a delivery's payload as `E`. Every failure is permanent: retrying cannot fix a payload.
fn decode<E: Event>(delivery: &Delivery) -> Result<E, HandlerError> {
    decode_event(
        &delivery.event_type,
        delivery.event_version,
        &delivery.payload,
    )
    .map_err(|error| error.with_origin(Origin::Payload))
}

/// Runs a decoder, turning its panic (a `Deserialize` impl that panics) into a permanent failure.
fn decode_guarded<E>(decode: impl FnOnce() -> Result<E, HandlerError>) -> Result<E, HandlerError> {
    catch_unwind(AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        Err(HandlerError::permanent(format!(
            "decoding the payload panicked: {}",
            panic_message(&*panic)
        ))
        .with_origin(Origin::Payload))
    })
}

/// The permanent failure of a call whose extractors panicked before the handler could run.
fn extract_panicked(panic: Box<dyn Any + Send>) -> HandlerError {
    HandlerError::permanent(format!(
        "extracting the handler's arguments panicked: {}",
        panic_message(&*panic)
    ))
    .with_origin(Origin::Panic)
}

/// The message of a panic, when its payload is a string (as `panic!` and `assert!` make it).
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&'static str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "(a panic payload that is not a string)"
    }
}

/// What a per-event handler function may return: `Result<(), E>` for any `E` that converts into
/// [`HandlerError`].
#[diagnostic::on_unimplemented(
    message = "an event handler must return `Result<(), E>` where `E: Into<HandlerError>`, not `{Self}`",
    label = "unsupported return type",
    note = "return `Result<(), HandlerError>`, or any `Result<(), E>` whose error converts with `?`"
)]
pub trait IntoHandlerResult {
    /// Converts the return value.
    fn into_handler_result(self) -> Result<(), HandlerError>;
}

impl<E: Into<HandlerError>> IntoHandlerResult for Result<(), E> {
    fn into_handler_result(self) -> Result<(), HandlerError> {
        self.map_err(Into::into)
    }
}

/// What a batch handler or projection function may return: `Result<(), E>` (all succeeded or
/// all failed) or `Result<BatchOutcome, E>` (some failed), for any `E` that converts into
/// [`HandlerError`]. A projection cannot skip events, so any failure in a `BatchOutcome` fails its
/// whole batch.
#[diagnostic::on_unimplemented(
    message = "a batch handler or projection must return `Result<(), E>` or `Result<BatchOutcome, E>` where `E: Into<HandlerError>`, not `{Self}`",
    label = "unsupported return type",
    note = "return `Result<(), HandlerError>`, or `Result<BatchOutcome, HandlerError>` to fail single events of a batch handler"
)]
pub trait IntoBatchResult {
    /// Converts the return value.
    fn into_batch_result(self) -> Result<BatchOutcome, HandlerError>;
}

impl<E: Into<HandlerError>> IntoBatchResult for Result<(), E> {
    fn into_batch_result(self) -> Result<BatchOutcome, HandlerError> {
        self.map(|()| BatchOutcome::new()).map_err(Into::into)
    }
}

impl<E: Into<HandlerError>> IntoBatchResult for Result<BatchOutcome, E> {
    fn into_batch_result(self) -> Result<BatchOutcome, HandlerError> {
        self.map_err(Into::into)
    }
}
