//! Projections on SQLite: [`ProjectionStore`] for [`SqliteStore`].
//!
//! - [`read`]: the next batch, in log order, and why position order is commit order here.
//! - [`lease`]: leadership across processes, a lease on the checkpoint's row, kept alive by a
//!   renewal task.
//! - [`leader`]: the [`Leadership`] on that lease: batches read without the write lock, committed
//!   with their checkpoint under it, fenced by the lease's token.
//! - [`ops`]: status, lag, leader, reset, and the recorded event types.
//!
//! A [`Checkpoint`](osa_events_core::store::Checkpoint) on SQLite is `{ commit_seq: position,
//! position }`: positions are handed out under the write lock, so they commit in order and a
//! position is its own commit number (see [`read`]).

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::SqliteStore;
use osa_events_core::Result;
use osa_events_core::store::{Leadership, ProjectionStatus, ProjectionStore, ResetTo};

mod leader;
mod lease;
pub(crate) mod ops;
mod read;

pub use ops::reset_projection;

impl ProjectionStore for SqliteStore {
    /// Polls the lease (a read, every 50 ms) while another leader holds it, and takes it once it is
    /// released or has expired: at once after a resign or a drop in any process, within the lease
    /// (10 s) after a process died.
    fn try_lead<'a>(
        &'a self,
        name: &'static str,
        holder: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Leadership>>>> {
        Box::pin(self.timed(async move {
            let lease = lease::Lease::try_take(self, name, holder, wait).await?;
            Ok(lease
                .map(|lease| Box::new(leader::SqliteLeadership::new(lease)) as Box<dyn Leadership>))
        }))
    }

    fn status<'a>(
        &'a self,
        name: &'a str,
        event_types: &'a [&'a str],
    ) -> BoxFuture<'a, Result<ProjectionStatus>> {
        Box::pin(self.timed(ops::status(self, name, event_types)))
    }

    fn reset<'a>(&'a self, name: &'a str, to: ResetTo) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.timed(ops::reset_projection(self.pool(), name, to)))
    }

    fn record_event_types<'a>(
        &'a self,
        name: &'a str,
        event_types: &'a [&'a str],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.timed(ops::record_event_types(self, name, event_types)))
    }

    fn acknowledge_event_types<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.timed(ops::acknowledge_event_types(self, name)))
    }
}
