//! SQLite transactions as the core's store [`Transaction`]s: what a handler's or a projection
//! batch's `Tx` writes through, and what commits its effects with the delivery's completion.
//!
//! They begin with `BEGIN IMMEDIATE`: the handler holds SQLite's write lock for its whole call,
//! so nothing it reads can change under it before it writes, and its commit cannot fail for a
//! write made elsewhere meanwhile. Other writers wait for it (up to their busy timeout).

use futures_util::future::BoxFuture;
use osa_events_core::store::{Fence, SubscriptionId, Transaction, Transactions};
use osa_events_core::{Outgoing, Published, Result};
use sqlx::{Sqlite, SqliteConnection};

use crate::store::{SqliteStore, fenced};

/// An SQLite transaction, as [`SqliteStore::begin`] returns it.
pub type SqliteTransaction = sqlx::Transaction<'static, Sqlite>;

/// The store transaction of a `Tx` handler or a projection batch.
pub(crate) struct SqliteStoreTransaction {
    pub(crate) tx: SqliteTransaction,
    pub(crate) store: SqliteStore,
}

impl SqliteStoreTransaction {
    pub(crate) fn boxed(tx: SqliteTransaction, store: SqliteStore) -> Box<dyn Transaction> {
        Box::new(Self { tx, store })
    }

    /// The sqlx transaction inside a store transaction of this store, if it is one.
    pub(crate) fn unwrap(transaction: Box<dyn Transaction>) -> Option<SqliteTransaction> {
        transaction
            .into_any()
            .downcast::<SqliteStoreTransaction>()
            .ok()
            .map(|transaction| transaction.tx)
    }
}

impl Transaction for SqliteStoreTransaction {
    fn complete<'a>(
        &'a mut self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(fenced::complete(&mut *self.tx, subscription, done))
    }

    fn publish<'a>(&'a mut self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<Published>> {
        Box::pin(crate::publish_batch(&mut self.tx, events))
    }

    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let Self { tx, store } = *self;
            store.timed(async { Ok(tx.commit().await?) }).await
        })
    }
}

/// The SQLite connection of a handler's or a projection batch's transaction, for the handler's own
/// statements (`osa_events::Tx::sqlite` calls it); `None` when the transaction is another store's.
pub fn connection(transaction: &mut dyn Transaction) -> Option<&mut SqliteConnection> {
    let transaction = transaction
        .as_any_mut()
        .downcast_mut::<SqliteStoreTransaction>()?;
    Some(&mut *transaction.tx)
}

impl Transactions for SqliteStore {
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn Transaction>>> {
        Box::pin(async move {
            let tx = self.begin().await?;
            Ok(SqliteStoreTransaction::boxed(tx, self.clone()))
        })
    }

    fn capacity(&self) -> Option<u32> {
        Some(self.settings().max_connections)
    }
}
