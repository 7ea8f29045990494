//! Transactions of the [`InMemoryStore`]: what a handler's or a projection batch's `Tx` writes
//! through in tests. Its publishes and completions are buffered and take effect together, under
//! the store's one lock, when it commits; dropped, it leaves no trace (a rollback).

use futures_util::future::BoxFuture;
use osa_events::store::{Fence, SubscriptionId, Transaction, Transactions};
use osa_events::{Error, Outgoing, Published, Result};

use super::{InMemoryStore, RawEvent};
use crate::memory::state::Tables;

/// An open transaction of an [`InMemoryStore`].
pub(super) struct MemoryTransaction {
    store: InMemoryStore,
    publishes: Vec<RawEvent>,
    completions: Vec<(SubscriptionId, Vec<Fence>)>,
}

impl MemoryTransaction {
    pub(super) fn new(store: InMemoryStore) -> Self {
        Self {
            store,
            publishes: Vec::new(),
            completions: Vec::new(),
        }
    }

    /// The transaction inside `transaction`, if it is one of the in-memory store's.
    pub(super) fn unwrap(transaction: Box<dyn Transaction>) -> Option<MemoryTransaction> {
        transaction
            .into_any()
            .downcast::<MemoryTransaction>()
            .ok()
            .map(|transaction| *transaction)
    }

    /// Applies the buffered writes to `tables`, all or nothing: a completion whose claim was taken
    /// over since [`complete`](Transaction::complete) checked it fails the whole commit, as a
    /// PostgreSQL transaction holding the rows' locks could never see. Returns the subscriptions
    /// that got work.
    pub(super) fn apply(
        self,
        tables: &mut Tables,
        store: &InMemoryStore,
    ) -> Result<std::collections::BTreeSet<SubscriptionId>> {
        self.verify(tables)?;
        let now = store.now();
        for (subscription, fences) in &self.completions {
            tables.complete(*subscription, fences, now);
        }
        let (_, _, woken) = tables.publish(&self.publishes, store.now_at());
        Ok(woken)
    }
}

impl MemoryTransaction {
    /// Fails when a claim it completed (held when [`complete`](Transaction::complete) recorded
    /// it) was taken over since; changes nothing.
    pub(super) fn verify(&self, tables: &Tables) -> Result<()> {
        for (subscription, fences) in &self.completions {
            if tables.held_count(*subscription, fences) < fences.len() as u64 {
                return Err(Error::Config(
                    "in-memory transaction: a claim it completed was taken over before it \
                     committed; nothing was committed"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

impl Transaction for MemoryTransaction {
    /// Records for the commit the claims of `done` still held and not yet completed in this
    /// transaction, and counts them, as a fenced `delete` in a PostgreSQL transaction would: a
    /// claim that is not held completes nothing and, as there, does not stop the commit.
    fn complete<'a>(
        &'a mut self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let tables = self.store.tables();
            let mut held: Vec<Fence> = Vec::new();
            for fence in done {
                let completed_here = held.contains(fence)
                    || self.completions.iter().any(|(earlier, fences)| {
                        *earlier == subscription && fences.contains(fence)
                    });
                if !completed_here
                    && tables.held_count(subscription, std::slice::from_ref(fence)) == 1
                {
                    held.push(*fence);
                }
            }
            drop(tables);
            let count = held.len() as u64;
            self.completions.push((subscription, held));
            Ok(count)
        })
    }

    /// Buffers the events; the counts are what they would create if published now.
    fn publish<'a>(&'a mut self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<Published>> {
        Box::pin(async move {
            let (envelopes, raw) = RawEvent::stamped(events);
            let _entered = envelopes.span().enter();
            let raw: Vec<RawEvent> = raw
                .into_iter()
                .filter(|raw| self.publishes.iter().all(|earlier| earlier.id != raw.id))
                .collect();
            let (published, deliveries) = self.store.tables().would_publish(&raw);
            self.publishes.extend(raw);
            let published = Ok(Published::new(published, deliveries));
            envelopes.finish(&published);
            published
        })
    }

    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let store = self.store.clone();
            let woken = self.apply(&mut store.tables(), &store)?;
            store.wake(woken);
            Ok(())
        })
    }
}

/// Transactions that buffer their writes until they commit (see the module docs).
impl Transactions for InMemoryStore {
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn Transaction>>> {
        Box::pin(async move {
            Ok(Box::new(MemoryTransaction::new(self.clone())) as Box<dyn Transaction>)
        })
    }
}
