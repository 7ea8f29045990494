//! The [`Leadership`] of one projection on SQLite: batches read without the write lock, committed
//! with their checkpoint under it, fenced by the lease's token.
//!
//! A batch is read in a read transaction ([`read`]), so an idle poll and the projection's own work
//! never hold SQLite's write lock: other writers (publishers, claims, other processes) run while
//! the projection applies a batch. Its transaction is a deferred store transaction (see
//! `tx.rs`): what the projection publishes through its `Tx` is checked at once and written at the
//! commit; a projection that runs its own statements (`Tx::sqlite`) opens the transaction, and
//! holds the write lock, from its first statement to the commit.
//!
//! The commit takes the write lock (`BEGIN IMMEDIATE`, or the transaction the projection opened)
//! and, in that transaction, checks the checkpoint's row before it writes anything of its own:
//!
//! - **The lease's token is still this leadership's**, else another leader took the projection
//!   over (or it was deposed): the transaction rolls back with the batch's effects, the call fails
//!   with [`Error::NotLeader`], and so does every later one.
//! - **The checkpoint is where the batch was read, and was not reset since** (the row counts its
//!   resets: a rebuild from the beginning during the first batch leaves the position at 0), else
//!   the reset stands and the batch's effects roll back, as they were made before the reset (which
//!   may have cleared the read model, in the same transaction: see
//!   [`reset_projection`](super::ops::reset_projection)). The call succeeds, and the projection
//!   reads from the new point.
//!
//! The commit then moves the checkpoint, clears the last error, renews the lease and commits, all
//! in one transaction.

use futures_util::future::BoxFuture;

use super::lease::{self, Lease};
use super::read;
use crate::tx::{SqliteStoreTransaction, SqliteTransaction};
use osa_events_core::store::{Advance, Leadership, OpenBatch, Transaction};
use osa_events_core::{Error, Result};

/// Moves the checkpoint of `?1` held by token `?2` to `?3`, clears the last error and renews the
/// lease for `?4` seconds.
const SAVE_SQL: &str = r#"
update checkpoints
set position = ?3, last_error = null, failed_at = null, updated_at = unixepoch('subsec'),
    lease_until = unixepoch('subsec') + ?4
where name = ?1 and lease_token = ?2
"#;

/// Records the last batch's failure of `?1`, if token `?2` still leads it.
const RECORD_FAILURE_SQL: &str = r#"
update checkpoints set last_error = ?3, failed_at = unixepoch('subsec')
where name = ?1 and lease_token = ?2
"#;

/// The leadership of one projection: its lease.
#[derive(Debug)]
pub(super) struct SqliteLeadership {
    lease: Lease,
    /// The checkpoint's resets when the last batch was read.
    resets: i64,
}

impl SqliteLeadership {
    pub(super) fn new(lease: Lease) -> Self {
        Self { lease, resets: 0 }
    }

    fn not_leader(&self) -> Error {
        Error::NotLeader {
            projection: self.lease.name.to_owned(),
        }
    }

    /// Fails once the lease is known lost.
    fn held(&self) -> Result<()> {
        if self.lease.is_lost() {
            return Err(self.not_leader());
        }
        Ok(())
    }

    /// The token was found gone: the lease is lost for good.
    fn deposed(&self) -> Error {
        self.lease.lose();
        self.not_leader()
    }

    async fn read_batch(&mut self, event_types: &[&str], limit: u32) -> Result<OpenBatch> {
        let store = self.lease.store.clone();
        // A read transaction: the lease, the checkpoint, the events and the head in one snapshot.
        let mut tx = store.pool().begin().await?;
        let standing = read::standing(&mut tx, self.lease.name, &self.lease.token).await?;
        let Some(standing) = standing.filter(|standing| standing.held) else {
            return Err(self.deposed());
        };
        self.resets = standing.resets;
        let from = standing.checkpoint;
        let read = read::events_after(&mut tx, event_types, from, limit).await?;
        tx.rollback().await?;
        let idle = read.events.is_empty() && read.to == from;
        Ok(OpenBatch {
            events: read.events,
            advance: Advance { from, to: read.to },
            // Nothing to apply or to move: no transaction, and nothing to commit.
            transaction: (!idle).then(|| SqliteStoreTransaction::deferred(store.clone())),
        })
    }

    /// Saves `advance` in `tx` (under the write lock) and commits it, as the [module docs](self)
    /// say.
    async fn save(&self, mut tx: SqliteTransaction, advance: Advance) -> Result<()> {
        let name = self.lease.name;
        let standing = read::standing(&mut tx, name, &self.lease.token).await?;
        let Some(standing) = standing.filter(|standing| standing.held) else {
            return Err(self.deposed());
        };
        if standing.checkpoint != advance.from || standing.resets != self.resets {
            tx.rollback().await?;
            tracing::info!(
                projection = name,
                read_after = advance.from.position,
                reset_to = standing.checkpoint.position,
                "the projection was reset while it applied a batch: the batch's effects are \
                 rolled back and it continues from the reset"
            );
            return Ok(());
        }
        let saved = sqlx::query(SAVE_SQL)
            .bind(name)
            .bind(&self.lease.token)
            .bind(advance.to.position)
            .bind(lease::LEASE.as_secs_f64())
            .execute(&mut *tx)
            .await?;
        if saved.rows_affected() == 0 {
            return Err(self.deposed());
        }
        tx.commit().await?;
        Ok(())
    }
}

impl Leadership for SqliteLeadership {
    fn next_batch<'a>(
        &'a mut self,
        event_types: &'static [&'static str],
        limit: u32,
    ) -> BoxFuture<'a, Result<OpenBatch>> {
        Box::pin(async move {
            self.held()?;
            let store = self.lease.store.clone();
            store.timed(self.read_batch(event_types, limit)).await
        })
    }

    fn commit<'a>(
        &'a mut self,
        advance: Advance,
        transaction: Option<Box<dyn Transaction>>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.held()?;
            if transaction.is_none() && advance.from == advance.to {
                // An idle poll's batch: nothing was read and nothing moves.
                return Ok(());
            }
            let store = self.lease.store.clone();
            store
                .timed(async {
                    let tx = match transaction {
                        None => store.begin().await?,
                        Some(transaction) => SqliteStoreTransaction::unwrap(transaction)
                            .await?
                            .ok_or_else(|| {
                                Error::Config(
                                    format!(
                                        "projection `{}`: the batch's transaction is not the \
                                         SQLite store's",
                                        self.lease.name
                                    )
                                    .into(),
                                )
                            })?,
                    };
                    self.save(tx, advance).await
                })
                .await
        })
    }

    fn record_failure<'a>(&'a mut self, error: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.held()?;
            let store = self.lease.store.clone();
            let recorded = store
                .timed(async {
                    Ok(sqlx::query(RECORD_FAILURE_SQL)
                        .bind(self.lease.name)
                        .bind(&self.lease.token)
                        .bind(error)
                        .execute(store.pool())
                        .await?)
                })
                .await?;
            if recorded.rows_affected() == 0 {
                return Err(self.deposed());
            }
            Ok(())
        })
    }

    /// Releases the lease, so another process takes the projection at its next look (50 ms).
    fn resign(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(self.lease.release())
    }
}
