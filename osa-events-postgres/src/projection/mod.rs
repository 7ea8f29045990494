//! Projections on PostgreSQL: [`ProjectionStore`] for [`PgStore`].
//!
//! - [`read`]: which events are safe to read, and in what order (the no-skip argument).
//! - [`leader`]: the advisory-lock leadership on its dedicated connection, and what poolers break.
//! - [`ops`]: status, lag, leader, reset.

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::PgStore;
use osa_events_core::Result;
use osa_events_core::store::{Leadership, ProjectionStatus, ProjectionStore, ResetTo};

mod leader;
pub(crate) mod ops;
mod read;

impl ProjectionStore for PgStore {
    /// Waits in PostgreSQL's lock queue, so it leads the moment the leader's session ends.
    fn try_lead<'a>(
        &'a self,
        name: &'static str,
        holder: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Leadership>>>> {
        Box::pin(async move {
            let options = self.pool().connect_options();
            let leadership = leader::PgLeadership::try_take(&options, name, holder, wait).await?;
            Ok(leadership.map(|leadership| Box::new(leadership) as Box<dyn Leadership>))
        })
    }

    fn status<'a>(
        &'a self,
        name: &'a str,
        event_types: &'a [&'a str],
    ) -> BoxFuture<'a, Result<ProjectionStatus>> {
        Box::pin(ops::status(self.pool(), name, event_types))
    }

    fn reset<'a>(&'a self, name: &'a str, to: ResetTo) -> BoxFuture<'a, Result<()>> {
        Box::pin(ops::reset_projection(self.pool(), name, to))
    }

    fn record_event_types<'a>(
        &'a self,
        name: &'a str,
        event_types: &'a [&'a str],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(ops::record_event_types(self.pool(), name, event_types))
    }

    fn acknowledge_event_types<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(ops::acknowledge_event_types(self.pool(), name))
    }
}
