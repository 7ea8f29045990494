//! PostgreSQL transactions as the core's store [`Transaction`]s: what a handler's or a projection
//! batch's `Tx` writes through, and what commits its effects with the delivery's completion.

use futures_util::future::BoxFuture;
use osa_events_core::store::{Fence, SubscriptionId, Transaction, Transactions};
use osa_events_core::{Outgoing, Published, Result};
use sqlx::{PgConnection, Postgres};

use crate::store::{PgStore, PgUnnamed, fenced};

/// A PostgreSQL transaction of the pool (`sqlx::Transaction<'static, Postgres>`).
pub type PgTransaction = sqlx::Transaction<'static, Postgres>;

/// A [`PgTransaction`] lent to the runtime: completions and publishes run in it, through unnamed
/// statements behind a transaction-mode pooler (see [`PgStore::through_transaction_pooler`]).
pub(crate) struct PgStoreTransaction {
    tx: PgTransaction,
    transaction_pooler: bool,
}

impl PgStoreTransaction {
    /// Wraps `tx`; `transaction_pooler` as the store was built.
    pub(crate) fn boxed(tx: PgTransaction, transaction_pooler: bool) -> Box<dyn Transaction> {
        Box::new(Self {
            tx,
            transaction_pooler,
        })
    }

    /// The PostgreSQL transaction inside `transaction`, if it is one of this crate's.
    pub(crate) fn unwrap(transaction: Box<dyn Transaction>) -> Option<PgTransaction> {
        transaction
            .into_any()
            .downcast::<PgStoreTransaction>()
            .ok()
            .map(|transaction| transaction.tx)
    }
}

impl Transaction for PgStoreTransaction {
    fn complete<'a>(
        &'a mut self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        let conn = PgUnnamed::when(self.transaction_pooler, &mut self.tx);
        Box::pin(fenced::complete(conn, subscription, done))
    }

    fn publish<'a>(&'a mut self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<Published>> {
        let conn = PgUnnamed::when(self.transaction_pooler, &mut self.tx);
        Box::pin(crate::publish_batch(conn, events))
    }

    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move { Ok(self.tx.commit().await?) })
    }
}

/// The PostgreSQL connection of a store transaction, if the store is PostgreSQL: what `&mut *tx`
/// of a handler's `Tx` is.
pub fn connection(transaction: &mut dyn Transaction) -> Option<&mut PgConnection> {
    let transaction = transaction
        .as_any_mut()
        .downcast_mut::<PgStoreTransaction>()?;
    Some(&mut *transaction.tx)
}

/// The PostgreSQL connection of a store transaction, shared (see [`connection`]).
pub fn connection_ref(transaction: &dyn Transaction) -> Option<&PgConnection> {
    let transaction = transaction.as_any().downcast_ref::<PgStoreTransaction>()?;
    Some(&*transaction.tx)
}

impl Transactions for PgStore {
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn Transaction>>> {
        Box::pin(async move {
            let tx = self.pool().begin().await?;
            Ok(PgStoreTransaction::boxed(tx, self.transaction_pooler))
        })
    }

    /// The pool's maximum size.
    fn capacity(&self) -> Option<u32> {
        Some(self.pool().options().get_max_connections())
    }
}
