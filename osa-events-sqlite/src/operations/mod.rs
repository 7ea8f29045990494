//! SCAFFOLD (replaced by the operations helper before landing): the operations API on SQLite.

use futures_util::future::BoxFuture;
use osa_events_core::operations::*;
use osa_events_core::store::ProjectionStatus;
use osa_events_core::{Error, Result};
use uuid::Uuid;

use crate::SqliteStore;

fn scaffold<T>() -> BoxFuture<'static, Result<T>> {
    Box::pin(async { Err(Error::Config("SCAFFOLD: not written yet".into())) })
}

impl Operations for SqliteStore {
    fn status(&self) -> BoxFuture<'_, Result<Status>> {
        scaffold()
    }
    fn deliveries<'a>(&'a self, _query: &'a DeliveryQuery) -> BoxFuture<'a, Result<DeliveryPage>> {
        scaffold()
    }
    fn delivery<'a>(
        &'a self,
        _handler: &'a str,
        _position: i64,
    ) -> BoxFuture<'a, Result<Option<DeliveryDetail>>> {
        scaffold()
    }
    fn retry_dead<'a>(&'a self, _selector: &'a Selector) -> BoxFuture<'a, Result<u64>> {
        scaffold()
    }
    fn purge_dead<'a>(&'a self, _selector: &'a Selector) -> BoxFuture<'a, Result<u64>> {
        scaffold()
    }
    fn cancel_pending<'a>(&'a self, _selector: &'a Selector) -> BoxFuture<'a, Result<u64>> {
        scaffold()
    }
    fn replay<'a>(
        &'a self,
        _replay: &'a Replay,
        _after: i64,
        _end: Option<i64>,
    ) -> BoxFuture<'a, Result<ReplayStep>> {
        scaffold()
    }
    fn pause<'a>(&'a self, _handler: &'a str) -> BoxFuture<'a, Result<bool>> {
        scaffold()
    }
    fn resume<'a>(&'a self, _handler: &'a str) -> BoxFuture<'a, Result<bool>> {
        scaffold()
    }
    fn backfill<'a>(
        &'a self,
        _handler: &'a str,
        _chunk: u32,
    ) -> BoxFuture<'a, Result<BackfillStep>> {
        scaffold()
    }
    fn subscriptions(&self) -> BoxFuture<'_, Result<Vec<SubscriptionInfo>>> {
        scaffold()
    }
    fn retire<'a>(
        &'a self,
        _handler: &'a str,
        _mode: RetireMode,
    ) -> BoxFuture<'a, Result<Retired>> {
        scaffold()
    }
    fn prune<'a>(&'a self, _prune: &'a Prune, _after: i64) -> BoxFuture<'a, Result<PruneStep>> {
        scaffold()
    }
    fn record_node<'a>(&'a self, _node: &'a NodeRecord) -> BoxFuture<'a, Result<()>> {
        scaffold()
    }
    fn remove_node(&self, _id: Uuid) -> BoxFuture<'_, Result<()>> {
        scaffold()
    }
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeStatus>>> {
        scaffold()
    }
    fn projections(&self) -> BoxFuture<'_, Result<Vec<ProjectionStatus>>> {
        scaffold()
    }
}
