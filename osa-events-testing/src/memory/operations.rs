//! [`Operations`] for [`InMemoryStore`]: each method one call to the tables under the store's
//! lock (so each is atomic, as a transaction of `PgStore` is), at the store clock's now.

use std::time::SystemTime;

use futures_util::future::BoxFuture;
use osa_events::Result;
use osa_events::operations::{
    ActivityBucket, ActivityDelta, BackfillStep, DeliveryDetail, DeliveryPage, DeliveryQuery,
    Liveness, NodeRecord, NodeStatus, Operations, Prune, PruneStep, Replay, ReplayStep, RetireMode,
    Retired, Selector, Status, SubscriptionInfo,
};
use osa_events::store::ProjectionStore;
use osa_events::{Error, ProjectionStatus};
use uuid::Uuid;

use super::InMemoryStore;

/// The operations API with the semantics of `PgStore`'s, on the store's clock. Prune never
/// finds the retention lock taken (there is no other process), and a backfill never waits for
/// transactions in flight (publishes are atomic here).
impl Operations for InMemoryStore {
    fn status(&self) -> BoxFuture<'_, Result<Status>> {
        Box::pin(async move {
            let projections = Operations::projections(self).await?;
            let now = self.now_at();
            let tables = self.tables();
            let nodes = tables.node_statuses(now);
            let handlers = tables.handler_statuses(&nodes, now);
            let head = tables.head();
            Ok(Status::new(now.wall(), head, handlers, projections, nodes))
        })
    }

    fn deliveries<'a>(&'a self, query: &'a DeliveryQuery) -> BoxFuture<'a, Result<DeliveryPage>> {
        Box::pin(async move { self.tables().delivery_page(query, self.now_at()) })
    }

    fn delivery<'a>(
        &'a self,
        handler: &'a str,
        position: i64,
    ) -> BoxFuture<'a, Result<Option<DeliveryDetail>>> {
        Box::pin(async move {
            self.tables()
                .delivery_detail(handler, position, self.now_at())
        })
    }

    fn retry_dead<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let (retried, woken) = self.tables().retry_dead(selector, self.now_at())?;
            self.wake(woken);
            Ok(retried)
        })
    }

    fn purge_dead<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move { self.tables().purge_dead(selector, self.now_at()) })
    }

    fn cancel_pending<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move { self.tables().cancel_pending(selector, self.now_at()) })
    }

    fn replay<'a>(
        &'a self,
        replay: &'a Replay,
        after: i64,
        end: Option<i64>,
    ) -> BoxFuture<'a, Result<ReplayStep>> {
        Box::pin(async move {
            let (step, woken) = self.tables().replay(replay, after, end, self.now_at())?;
            self.wake(woken);
            Ok(step)
        })
    }

    fn pause<'a>(&'a self, handler: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let now = self.now();
            let mut tables = self.tables();
            let id = tables.resolve(handler)?;
            Ok(tables.pause(id, now))
        })
    }

    fn resume<'a>(&'a self, handler: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let (id, resumed) = {
                let mut tables = self.tables();
                let id = tables.resolve(handler)?;
                (id, tables.resume(id))
            };
            if resumed {
                self.wake([id]);
            }
            Ok(resumed)
        })
    }

    fn backfill<'a>(&'a self, handler: &'a str, chunk: u32) -> BoxFuture<'a, Result<BackfillStep>> {
        Box::pin(async move {
            let (step, woken) = self.tables().backfill(handler, chunk, self.now_at())?;
            self.wake(woken);
            Ok(step)
        })
    }

    fn subscriptions(&self) -> BoxFuture<'_, Result<Vec<SubscriptionInfo>>> {
        Box::pin(async move {
            let now = self.now_at();
            let tables = self.tables();
            let nodes = tables.node_statuses(now);
            Ok(tables.subscription_infos(&nodes, now))
        })
    }

    fn retire<'a>(&'a self, handler: &'a str, mode: RetireMode) -> BoxFuture<'a, Result<Retired>> {
        Box::pin(async move {
            let now = self.now_at();
            let mut tables = self.tables();
            let id = tables.resolve(handler)?;
            let nodes = tables.node_statuses(now);
            if let (Liveness::Running { nodes }, RetireMode::IfNotRunning) =
                (tables.liveness(id, &nodes), mode)
            {
                return Err(Error::Config(
                    format!(
                        "handler `{handler}` is running on {nodes} live node(s): retiring it \
                         would leave them claiming nothing; stop or redeploy them without it \
                         first, or retire it even if running (`RetireMode::EvenIfRunning`, \
                         `osa-events retire --even-if-running`)"
                    )
                    .into(),
                ));
            }
            Ok(tables.retire(id, now.instant))
        })
    }

    fn prune<'a>(&'a self, prune: &'a Prune, after: i64) -> BoxFuture<'a, Result<PruneStep>> {
        Box::pin(async move { self.tables().prune(prune, after, self.now_at()) })
    }

    fn record_node<'a>(&'a self, node: &'a NodeRecord) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.tables().record_node(node, self.now_at());
            Ok(())
        })
    }

    fn remove_node(&self, id: Uuid) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.tables().remove_node(id);
            Ok(())
        })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeStatus>>> {
        Box::pin(async move { Ok(self.tables().node_statuses(self.now_at())) })
    }

    fn record_activity<'a>(&'a self, deltas: &'a [ActivityDelta]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if !deltas.is_empty() {
                self.tables().record_activity(deltas, self.now_at());
            }
            Ok(())
        })
    }

    fn activity<'a>(&'a self, since: SystemTime) -> BoxFuture<'a, Result<Vec<ActivityBucket>>> {
        Box::pin(async move { Ok(self.tables().activity(since)) })
    }

    /// Every projection with a checkpoint, and those registered in this program without one.
    fn projections(&self) -> BoxFuture<'_, Result<Vec<ProjectionStatus>>> {
        Box::pin(async move {
            let now = self.now_at().wall();
            let mut statuses = self.tables().stored_projection_statuses(now);
            for registered in ProjectionStore::statuses(self).await? {
                if statuses.iter().all(|stored| stored.name != registered.name) {
                    statuses.push(registered);
                }
            }
            statuses.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(statuses)
        })
    }
}
