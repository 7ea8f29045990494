//! The node's record: who this runtime instance is and what it runs, refreshed every heartbeat,
//! so status can tell live nodes, stopped handlers and orphans apart.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::pause;
use crate::Clock;
use crate::operations::NodeRecord;
use crate::store::Store;

/// This instance's record.
pub(crate) fn node_record(
    name: &str,
    namespace: Option<&str>,
    mut handlers: Vec<String>,
    mut projections: Vec<String>,
    heartbeat: Duration,
) -> NodeRecord {
    handlers.sort();
    projections.sort();
    NodeRecord {
        id: Uuid::new_v4(),
        name: name.to_owned(),
        namespace: namespace.map(str::to_owned),
        host: crate::runtime::host_name(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        handlers,
        projections,
        started_at: SystemTime::now(),
        heartbeat,
    }
}

/// Refreshes `record` every heartbeat until shutdown (the runtime removes it once stopped).
pub(crate) async fn keep_node_record(
    store: Arc<dyn Store>,
    record: NodeRecord,
    clock: Arc<dyn Clock>,
    stopping: CancellationToken,
) {
    while pause(&clock, record.heartbeat, &stopping).await {
        let Some(operations) = store.operations() else {
            return;
        };
        if let Err(error) = operations.record_node(&record).await {
            tracing::warn!(%error, node = %record.name, "cannot refresh this node's record; retrying at the next heartbeat");
        }
    }
}
