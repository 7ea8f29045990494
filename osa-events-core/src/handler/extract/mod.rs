//! Extractors: the parameters a handler takes after its event.
//!
//! Each extractor is resolved in two steps. At start-up, [`FromEventArg::bind`] (or
//! [`FromBatchArg::bind`]) looks up what it needs once, so a missing resource fails
//! `run_all_handlers` before the first claim. Per call, `extract` builds the value cheaply from
//! what was bound and the [`Call`] at hand.

use crate::store::Delivery;
use crate::{Resources, Result};

mod batch;
mod ctx;
mod state;
mod tx;

pub use batch::{Batch, BatchOutcome};
pub use ctx::Ctx;
pub use state::State;
pub use tx::CallTx;
pub(crate) use tx::TxSlot;

/// What a handler call offers its extractors: the deliveries, and the call's transaction when the
/// handler takes a `Tx`.
#[derive(Debug)]
pub struct Call<'a> {
    deliveries: &'a [Delivery],
    tx: Option<CallTx>,
}

impl<'a> Call<'a> {
    pub(crate) fn new(deliveries: &'a [Delivery], tx: Option<CallTx>) -> Self {
        Self { deliveries, tx }
    }

    /// The delivery of a per-event call (the first one of a batch call).
    ///
    /// # Panics
    ///
    /// Never for calls made by the runtime: every call has at least one delivery.
    pub fn delivery(&self) -> &'a Delivery {
        self.deliveries
            .first()
            .expect("the runtime never makes a call without a delivery")
    }

    /// The deliveries of the call: one for a per-event handler, the batch's for a batch handler.
    pub fn deliveries(&self) -> &'a [Delivery] {
        self.deliveries
    }

    /// Takes the call's transaction; `None` once taken (a handler takes at most one `Tx`).
    pub fn take_tx(&mut self) -> Option<CallTx> {
        self.tx.take()
    }
}

/// A parameter of a per-event handler (`fn(event: E, ..)`), after the event.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a parameter of an event handler",
    label = "not an extractor",
    note = "a handler takes one event, as its first parameter; each further parameter must be an extractor: `State<T>`, `Ctx` or `Tx`"
)]
pub trait FromEventArg: Sized + Send + 'static {
    /// What is resolved once at start-up.
    type Bound: Send + Sync + 'static;

    /// Whether the call needs a store transaction (the `Tx` extractor): the runtime then opens
    /// one per call, and refuses to start the handler on a store without transactions.
    const TRANSACTIONAL: bool = false;

    /// Resolves the extractor for `handler` at start-up.
    ///
    /// # Errors
    ///
    /// When something the extractor needs is missing (e.g. a resource).
    fn bind(resources: &Resources, handler: &'static str) -> Result<Self::Bound>;

    /// Builds the value for one call.
    fn extract(bound: &Self::Bound, call: &mut Call<'_>) -> Self;
}

/// A parameter of a batch handler or a projection (`fn(events: Batch<E>, ..)`), after the batch.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a parameter of a batch handler or a projection",
    label = "not a batch extractor",
    note = "batch handlers and projections take `Batch<E>` first, then any of: `State<T>`, `Tx`; each event's context is in `Batch::iter_with_ctx`"
)]
pub trait FromBatchArg: Sized + Send + 'static {
    /// What is resolved once at start-up.
    type Bound: Send + Sync + 'static;

    /// Whether the call needs a store transaction (the `Tx` extractor): the runtime then opens
    /// one per call, and refuses to start the handler on a store without transactions.
    const TRANSACTIONAL: bool = false;

    /// Resolves the extractor for `handler` at start-up.
    ///
    /// # Errors
    ///
    /// When something the extractor needs is missing (e.g. a resource).
    fn bind(resources: &Resources, handler: &'static str) -> Result<Self::Bound>;

    /// Builds the value for one call.
    fn extract(bound: &Self::Bound, call: &mut Call<'_>) -> Self;
}
