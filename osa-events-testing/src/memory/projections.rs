//! [`ProjectionStore`] for [`InMemoryStore`]: projections in unit tests, on a fake clock.

use std::time::Duration;

use futures_util::future::BoxFuture;
use osa_events::store::{Advance, Leadership, OpenBatch, ProjectionStore, Transaction};
use osa_events::{Error, ProjectionStatus, ResetTo, Result};
use uuid::Uuid;

use super::InMemoryStore;
use super::transaction::MemoryTransaction;

/// Leadership as in `PgStore`, with a token in place of the advisory lock: one leader per name
/// until it resigns, is dropped (a session that ends) or is deposed
/// ([`depose_projection_leader`](InMemoryStore::depose_projection_leader)). Checkpoints move only
/// by a leader's commit or a reset, and a reset made while a batch is applied stands. Each batch
/// comes with an in-memory transaction: what a projection taking a `Tx` publishes through it
/// commits with the checkpoint.
impl ProjectionStore for InMemoryStore {
    /// Waits on the store's clock, and takes over the moment the leadership ends.
    fn try_lead<'a>(
        &'a self,
        name: &'static str,
        holder: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Leadership>>>> {
        Box::pin(async move {
            let deadline = self.now() + wait;
            loop {
                // Listen before looking, so a leadership that ends in between is not missed.
                let freed = self.shared.leadership_freed.notified();
                let mut freed = std::pin::pin!(freed);
                freed.as_mut().enable();
                let now = self.now();
                if let Some(token) = self.tables().try_lead(name, holder, self.wall_time(now)) {
                    return Ok(Some(Box::new(MemoryLeadership {
                        store: self.clone(),
                        name,
                        token,
                        resets: 0,
                    }) as Box<dyn Leadership>));
                }
                if now >= deadline {
                    return Ok(None);
                }
                tokio::select! {
                    () = freed => {}
                    () = self.shared.clock.sleep(deadline - now) => return Ok(None),
                }
            }
        })
    }

    fn status<'a>(
        &'a self,
        name: &'a str,
        event_types: &'a [&'a str],
    ) -> BoxFuture<'a, Result<ProjectionStatus>> {
        Box::pin(async move {
            let now = self.wall_time(self.now());
            Ok(self.tables().projection_status(name, event_types, now))
        })
    }

    fn reset<'a>(&'a self, name: &'a str, to: ResetTo) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let now = self.wall_time(self.now());
            self.tables().reset_projection(name, to, now)
        })
    }

    fn record_event_types<'a>(
        &'a self,
        name: &'a str,
        event_types: &'a [&'a str],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let now = self.wall_time(self.now());
            self.tables().record_event_types(name, event_types, now)
        })
    }

    fn acknowledge_event_types<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.tables().acknowledge_event_types(name);
            Ok(())
        })
    }
}

impl InMemoryStore {
    /// The state of every projection registered in this program, sorted by name, as
    /// [`PgStore::projection_status`](osa_events::PgStore::projection_status) reports it.
    ///
    /// # Errors
    ///
    /// Never, in memory; the signature is the store-independent one.
    pub async fn projection_status(&self) -> Result<Vec<ProjectionStatus>> {
        self.statuses().await
    }

    /// Ends the leadership of projection `name`, as PostgreSQL ending the leader's session would:
    /// the old leader's next call fails and writes nothing, and another runtime can take over.
    /// Returns whether anyone led it.
    pub fn depose_projection_leader(&self, name: &str) -> bool {
        let deposed = self.tables().depose_projection_leader(name);
        self.shared.leadership_freed.notify_waiters();
        deposed
    }
}

/// A leadership of the in-memory store: the projection's name and the token that proves it.
struct MemoryLeadership {
    store: InMemoryStore,
    name: &'static str,
    token: Uuid,
    /// The resets the checkpoint had seen when the last batch was read.
    resets: u64,
}

impl Leadership for MemoryLeadership {
    fn next_batch<'a>(
        &'a mut self,
        event_types: &'static [&'static str],
        limit: u32,
    ) -> BoxFuture<'a, Result<OpenBatch>> {
        Box::pin(async move {
            let (events, advance, resets) =
                self.store
                    .tables()
                    .projection_batch(self.name, self.token, event_types, limit)?;
            self.resets = resets;
            Ok(OpenBatch {
                events,
                advance,
                transaction: Some(Box::new(MemoryTransaction::new(self.store.clone()))),
            })
        })
    }

    fn commit<'a>(
        &'a mut self,
        advance: Advance,
        transaction: Option<Box<dyn Transaction>>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let transaction = match transaction {
                None => None,
                Some(transaction) => {
                    Some(MemoryTransaction::unwrap(transaction).ok_or_else(|| {
                        Error::Config(
                        format!(
                            "projection `{}`: the batch's transaction is not the in-memory store's",
                            self.name
                        )
                        .into(),
                    )
                    })?)
                }
            };
            let now = self.store.wall_time(self.store.now());
            let mut tables = self.store.tables();
            // Nothing changes unless all of it can: the transaction's writes are checked, then
            // the leadership (a deposed leader's effects are dropped with it), then both applied.
            if let Some(transaction) = &transaction {
                transaction.verify(&tables)?;
            }
            tables.commit_projection(self.name, self.token, advance, self.resets, now)?;
            let woken = match transaction {
                Some(transaction) => transaction.apply(&mut tables, &self.store)?,
                None => Default::default(),
            };
            drop(tables);
            self.store.wake(woken);
            Ok(())
        })
    }

    fn record_failure<'a>(&'a mut self, error: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.store
                .tables()
                .record_projection_failure(self.name, self.token, error)
        })
    }

    fn resign(self: Box<Self>) -> BoxFuture<'static, ()> {
        drop(self);
        Box::pin(std::future::ready(()))
    }
}

/// A leadership dropped without resigning ends like a PostgreSQL session whose process died.
impl Drop for MemoryLeadership {
    fn drop(&mut self) {
        self.store.tables().resign_projection(self.name, self.token);
        self.store.shared.leadership_freed.notify_waiters();
    }
}
