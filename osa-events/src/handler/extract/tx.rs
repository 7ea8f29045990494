//! [`Tx`]: the handler's database writes and the delivery's completion in one transaction.

use std::fmt;
use std::ops::{Deref, DerefMut};

use sqlx::{PgConnection, Postgres, Transaction};
use tokio::sync::oneshot;

use super::{Call, FromBatchArg, FromEventArg};
use crate::{Resources, Result};

type PgTransaction = Transaction<'static, Postgres>;

/// A PostgreSQL transaction that also carries the fenced completion of the call's deliveries.
///
/// A handler that takes `Tx` writes through it (`&mut *tx` is a `&mut PgConnection`, an sqlx
/// executor). When the handler returns `Ok`, the runtime deletes the deliveries in the same
/// transaction, checking their claim tokens, and commits: the handler's writes and the completion
/// happen together, exactly once. If the claim was lost meanwhile (it expired and another worker
/// took the delivery), the token check fails and everything is rolled back. If the handler returns
/// an error or panics, the transaction is rolled back and the failure recorded as usual. A batch
/// handler that returns a [`BatchOutcome`](crate::BatchOutcome) failing some events commits all it
/// wrote, also for those events, with the completions of the others: write nothing for an event
/// you fail (it runs again when retried), or make the write idempotent.
///
/// Don't commit or roll back yourself, and don't keep the `Tx` beyond the handler's return: the
/// runtime needs it back to complete the delivery (a handler that keeps it fails its attempt).
/// Needs [`PgStore`](crate::PgStore): the runtime refuses to start a handler that takes `Tx` on
/// another store.
///
/// # Examples
///
/// ```no_run
/// use osa_events::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize)]
/// # #[event(name = "order.placed")]
/// # struct OrderPlaced { customer: String, total_cents: i64 }
///
/// #[event_handler(name = "totals.by_customer")]
/// async fn add_to_totals(order: OrderPlaced, mut tx: Tx) -> Result<(), HandlerError> {
///     sqlx::query("insert into totals (customer, cents) values ($1, $2) \
///                  on conflict (customer) do update set cents = totals.cents + excluded.cents")
///         .bind(&order.customer)
///         .bind(order.total_cents)
///         .execute(&mut *tx)
///         .await?;
///     Ok(()) // committed together with the completion: counted once, even across retries
/// }
/// ```
pub struct Tx {
    tx: Option<PgTransaction>,
    back: Option<oneshot::Sender<PgTransaction>>,
}

/// The runtime's side of a [`Tx`]: where the transaction comes back when the handler drops it.
#[derive(Debug)]
pub(crate) struct TxSlot {
    back: oneshot::Receiver<PgTransaction>,
}

impl TxSlot {
    /// A `Tx` for the handler, and the slot its transaction returns to.
    pub(crate) fn new(tx: PgTransaction) -> (Tx, TxSlot) {
        let (sender, receiver) = oneshot::channel();
        let handle = Tx {
            tx: Some(tx),
            back: Some(sender),
        };
        (handle, TxSlot { back: receiver })
    }

    /// The transaction, if the handler has let go of its `Tx` (it has, once its future completed,
    /// unless it moved the `Tx` somewhere that outlives the call).
    pub(crate) fn take_back(mut self) -> Option<PgTransaction> {
        self.back.try_recv().ok()
    }
}

impl Tx {
    /// A `Tx` with no transaction: what a second `Tx` parameter of one handler gets.
    fn absent() -> Self {
        Self {
            tx: None,
            back: None,
        }
    }

    fn connection(&self) -> &PgTransaction {
        self.tx
            .as_ref()
            .expect("this `Tx` has no transaction: a handler can take only one `Tx` parameter")
    }
}

impl Deref for Tx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.connection()
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.tx
            .as_mut()
            .expect("this `Tx` has no transaction: a handler can take only one `Tx` parameter")
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let (Some(tx), Some(back)) = (self.tx.take(), self.back.take()) {
            // The runtime may have given up on the call (timeout, shutdown): then the send fails
            // and dropping the transaction rolls it back, which is what we want.
            let _ = back.send(tx);
        }
    }
}

impl fmt::Debug for Tx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tx")
            .field("open", &self.tx.is_some())
            .finish()
    }
}

impl FromEventArg for Tx {
    type Bound = ();
    const TRANSACTIONAL: bool = true;

    fn bind(_resources: &Resources, _handler: &'static str) -> Result<()> {
        Ok(())
    }

    fn extract(_bound: &(), call: &mut Call<'_>) -> Self {
        call.take_tx().unwrap_or_else(Tx::absent)
    }
}

impl FromBatchArg for Tx {
    type Bound = ();
    const TRANSACTIONAL: bool = true;

    fn bind(_resources: &Resources, _handler: &'static str) -> Result<()> {
        Ok(())
    }

    fn extract(_bound: &(), call: &mut Call<'_>) -> Self {
        call.take_tx().unwrap_or_else(Tx::absent)
    }
}
