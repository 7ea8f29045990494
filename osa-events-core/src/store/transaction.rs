//! [`Transaction`]: a store's transaction, as the runtime sees it: what a handler's or a
//! projection batch's [`Tx`](crate::Tx) writes through, and what commits its effects together
//! with the completion of its deliveries or its checkpoint.
//!
//! The runtime never knows the backend: it opens a transaction through [`Transactions::begin`],
//! hands it to the handler, and then completes the deliveries in it and commits it, or drops it
//! (which must roll it back). A backend keeps its own connection inside and gives typed access to
//! it through [`TransactionAny::as_any_mut`] (for PostgreSQL, `&mut *tx` is the transaction's
//! `PgConnection`).

use std::any::Any;

use futures_util::future::BoxFuture;

use super::{Fence, SubscriptionId};
use crate::{Outgoing, Published, Result};

/// A store's capability to open transactions, from [`Store::transactions`](super::Store::transactions).
///
/// The runtime checks it at start-up: a handler or projection that takes a `Tx` on a store
/// without one fails [`RuntimeBuilder::build`](crate::RuntimeBuilder::build), naming the handler.
pub trait Transactions: Send + Sync + 'static {
    /// Opens a transaction.
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimedOut`](crate::Error::PoolTimedOut) when no connection became free in
    /// time (the worker queues again at once, without failing the attempt), any other error when
    /// the store refused (the worker waits like after a failed claim).
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn Transaction>>>;

    /// How many transactions the store can hold open at once (for PostgreSQL, the pool's size),
    /// if it has a limit: the runtime warns at start-up when the handlers that take a `Tx` need
    /// more.
    fn capacity(&self) -> Option<u32> {
        None
    }
}

/// Typed access to a store's own transaction behind a [`Transaction`], for the backend that
/// opened it. Implemented for every `Send + 'static` type, so a backend writes none of it.
pub trait TransactionAny: Any + Send {
    /// The backend's own transaction, for typed access (`downcast_ref`).
    fn as_any(&self) -> &dyn Any;

    /// The backend's own transaction, for typed access (`downcast_mut`).
    fn as_any_mut(&mut self) -> &mut dyn Any;

    /// The backend's own transaction, by value: how a store takes back the transaction it opened
    /// (a projection's [`Leadership::commit`](crate::store::Leadership::commit)).
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<T: Any + Send> TransactionAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// One open transaction of a store. Dropping it without [`commit`](Self::commit) rolls it back:
/// nothing written through it, published in it or completed in it takes effect.
pub trait Transaction: TransactionAny {
    /// Completes (removes) the deliveries of `subscription` whose claims `done` still holds, as
    /// part of this transaction; returns how many it completed. The runtime commits only when
    /// every claim was still held, so a taken-over claim rolls back the handler's writes.
    fn complete<'a>(
        &'a mut self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>>;

    /// Publishes `events` as part of this transaction: they and their deliveries exist if and
    /// only if it commits. Events whose id exists already are skipped.
    fn publish<'a>(&'a mut self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<Published>>;

    /// Commits everything written through this transaction.
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
}
