//! [`Tx`]: the handler's writes and the delivery's completion in one store transaction.

use std::fmt;

use osa_events_core::extract::{Call, CallTx, FromBatchArg, FromEventArg};
use osa_events_core::store::Transaction;
use osa_events_core::{Event, Outgoing, Published, PublishedEvent, Resources, Result};

/// A store transaction that also carries the fenced completion of the call's deliveries.
///
/// When the handler returns `Ok`, the runtime completes the deliveries in the same transaction,
/// checking their claim tokens, and commits: the handler's writes and the completion happen
/// together, exactly once. If the claim was lost meanwhile (it expired and another worker took the
/// delivery), the token check fails and everything is rolled back. If the handler returns an error
/// or panics, the transaction is rolled back and the failure recorded as usual. A batch handler
/// that returns a [`BatchOutcome`](crate::BatchOutcome) failing some events commits all it wrote,
/// also for those events, with the completions of the others: write nothing for an event you fail
/// (it runs again when retried), or make the write idempotent.
///
/// What a handler can write through it:
///
/// - **Events**, on every store: [`publish`](Self::publish), [`publish_routed`](Self::publish_routed)
///   and [`publish_batch`](Self::publish_batch) publish follow-up events that exist if and only if
///   the handler's call commits. This runs in the in-memory store of `osa-events-testing` too, so
///   `Harness` tests such handlers.
/// - **Your own tables**, on PostgreSQL: `&mut *tx` is a `&mut PgConnection`, an sqlx executor.
///   On a store that is not PostgreSQL (the in-memory store in tests) it panics, and the call
///   fails as a panicking handler does; test such handlers against PostgreSQL.
///
/// Don't commit or roll back yourself, and don't keep the `Tx` beyond the handler's return: the
/// runtime needs it back to complete the delivery (a handler that keeps it fails its attempt).
/// The runtime refuses to start a handler that takes `Tx` on a store without transactions.
///
/// # Examples
///
/// ```no_run
/// use osa_events::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize)]
/// # #[event(name = "order.placed")]
/// # struct OrderPlaced { customer: String, total_cents: i64 }
/// # #[derive(Event, Serialize, Deserialize)]
/// # #[event(name = "order.counted")]
/// # struct OrderCounted { customer: String }
///
/// #[event_handler(name = "totals.by_customer")]
/// async fn add_to_totals(order: OrderPlaced, mut tx: Tx) -> Result<(), HandlerError> {
///     sqlx::query("insert into totals (customer, cents) values ($1, $2) \
///                  on conflict (customer) do update set cents = totals.cents + excluded.cents")
///         .bind(&order.customer)
///         .bind(order.total_cents)
///         .execute(&mut *tx)
///         .await?;
///     tx.publish(&OrderCounted { customer: order.customer }).await?;
///     Ok(()) // committed together with the completion: counted once, even across retries
/// }
/// ```
pub struct Tx {
    call: CallTx,
}

impl Tx {
    /// The store transaction itself, for a backend's own typed access.
    ///
    /// # Panics
    ///
    /// When this is a second `Tx` parameter of one handler (only the first has the transaction).
    pub fn transaction(&mut self) -> &mut dyn Transaction {
        self.call.transaction()
    }

    /// Publishes `event` with no routing key in this transaction: it and its deliveries exist if
    /// and only if the call commits.
    ///
    /// # Errors
    ///
    /// As for [`Outgoing::new`] (nothing is written), or the store's error.
    pub async fn publish<E: Event>(&mut self, event: &E) -> Result<PublishedEvent> {
        self.publish_one(Outgoing::new(event)?).await
    }

    /// Publishes `event` with a routing key in this transaction (see [`publish`](Self::publish)).
    ///
    /// # Errors
    ///
    /// As for [`publish`](Self::publish).
    pub async fn publish_routed<E: Event>(
        &mut self,
        routing_key: &str,
        event: &E,
    ) -> Result<PublishedEvent> {
        self.publish_one(Outgoing::new(event)?.with_routing_key(routing_key))
            .await
    }

    /// Publishes `events` in this transaction, in one round trip where the store can; events whose
    /// id exists already are skipped.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn publish_batch(&mut self, events: &[Outgoing]) -> Result<Published> {
        self.call.transaction().publish(events).await
    }

    async fn publish_one(&mut self, outgoing: Outgoing) -> Result<PublishedEvent> {
        let published = self.publish_batch(std::slice::from_ref(&outgoing)).await?;
        Ok(published.of_one(outgoing.id()))
    }
}

#[cfg(feature = "postgres")]
impl std::ops::Deref for Tx {
    type Target = sqlx::PgConnection;

    fn deref(&self) -> &sqlx::PgConnection {
        osa_events_postgres::connection_ref(self.call.transaction_ref()).expect(NOT_POSTGRES)
    }
}

#[cfg(feature = "postgres")]
impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut sqlx::PgConnection {
        osa_events_postgres::connection(self.call.transaction()).expect(NOT_POSTGRES)
    }
}

#[cfg(feature = "sqlite")]
impl Tx {
    /// The SQLite connection of this transaction, for the handler's own statements on a
    /// [`SqliteStore`](crate::SqliteStore): `sqlx::query(..).execute(tx.sqlite().await?)`.
    ///
    /// A handler's transaction on SQLite is deferred until here: what it published and completed
    /// so far is written when this is first called, and from then on the transaction holds
    /// SQLite's write lock until it commits (other writers wait for it, up to their busy timeout).
    /// A handler that only publishes through [`publish`](Self::publish) never holds it while it
    /// runs. The [handler guide](crate::guide) says why.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) when the handler runs on another store (the
    /// in-memory store in tests?); [`Error::Busy`](crate::Error::Busy) when the write lock stayed
    /// taken for the busy timeout; [`Error::Database`](crate::Error::Database) when what it
    /// published or completed so far no longer holds (nothing is written; the attempt fails).
    pub async fn sqlite(&mut self) -> Result<&mut sqlx::SqliteConnection> {
        osa_events_sqlite::connection(self.call.transaction())
            .await?
            .ok_or_else(|| osa_events_core::Error::Config(NOT_SQLITE.into()))
    }
}

#[cfg(feature = "sqlite")]
const NOT_SQLITE: &str = "`tx.sqlite()` is an SQLite connection, and this handler runs on a store \
    that is not SQLite: write through `tx.publish(..)`, which every store has, or run this handler on \
    a SqliteStore";

#[cfg(feature = "postgres")]
const NOT_POSTGRES: &str = "`&mut *tx` is a PostgreSQL connection, and this handler runs on a store \
    that is not PostgreSQL (the in-memory store in tests?): write through `tx.publish(..)`, which \
    every store has, or test this handler against PostgreSQL";

impl fmt::Debug for Tx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tx").field("call", &self.call).finish()
    }
}

impl Tx {
    /// The call's transaction; a second `Tx` parameter of one handler gets none.
    fn from_call(call: &mut Call<'_>) -> Self {
        Tx {
            call: call.take_tx().unwrap_or_else(CallTx::absent),
        }
    }
}

impl FromEventArg for Tx {
    type Bound = ();
    const TRANSACTIONAL: bool = true;

    fn bind(_resources: &Resources, _handler: &'static str) -> Result<()> {
        Ok(())
    }

    fn extract(_bound: &(), call: &mut Call<'_>) -> Self {
        Tx::from_call(call)
    }
}

impl FromBatchArg for Tx {
    type Bound = ();
    const TRANSACTIONAL: bool = true;

    fn bind(_resources: &Resources, _handler: &'static str) -> Result<()> {
        Ok(())
    }

    fn extract(_bound: &(), call: &mut Call<'_>) -> Self {
        Tx::from_call(call)
    }
}
