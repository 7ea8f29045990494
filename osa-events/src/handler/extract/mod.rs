//! Extractors: the parameters a handler takes after its event.
//!
//! Each extractor is resolved in two steps. At start-up, [`FromEventArg::bind`] (or
//! [`FromBatchArg::bind`]) looks up what it needs once, so a missing resource fails
//! `run_all_handlers` before the first claim. Per call, `extract` builds the value cheaply from
//! what was bound and the delivery at hand.

use crate::store::Delivery;
use crate::{Resources, Result};

mod batch;
mod ctx;
mod state;

pub use batch::Batch;
pub use ctx::Ctx;
pub use state::State;

/// A parameter of a per-event handler (`fn(event: E, ..)`), after the event.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a parameter of an event handler",
    label = "not an extractor",
    note = "a handler takes its event first, then any of: `State<T>`, `Ctx`"
)]
pub trait FromEventArg: Sized + Send + 'static {
    /// What is resolved once at start-up.
    type Bound: Send + Sync + 'static;

    /// Resolves the extractor for `handler` at start-up.
    ///
    /// # Errors
    ///
    /// When something the extractor needs is missing (e.g. a resource).
    fn bind(resources: &Resources, handler: &'static str) -> Result<Self::Bound>;

    /// Builds the value for one call.
    fn extract(bound: &Self::Bound, delivery: &Delivery) -> Self;
}

/// A parameter of a batch handler (`fn(events: Batch<E>, ..)`), after the batch.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a parameter of a batch handler",
    label = "not a batch extractor",
    note = "a batch handler takes `Batch<E>` first, then any of: `State<T>`; each event's context is in `Batch::iter_with_ctx`"
)]
pub trait FromBatchArg: Sized + Send + 'static {
    /// What is resolved once at start-up.
    type Bound: Send + Sync + 'static;

    /// Resolves the extractor for `handler` at start-up.
    ///
    /// # Errors
    ///
    /// When something the extractor needs is missing (e.g. a resource).
    fn bind(resources: &Resources, handler: &'static str) -> Result<Self::Bound>;

    /// Builds the value for one call.
    fn extract(bound: &Self::Bound) -> Self;
}
