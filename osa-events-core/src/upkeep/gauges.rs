//! Sampling the metrics gauges ([`crate::metrics::gauges`]) every
//! [`RuntimeBuilder::metrics_interval`](crate::RuntimeBuilder::metrics_interval), on one node of
//! the fleet.
//!
//! Which node: the live one (see [`NodeStatus::alive`]) whose instance name sorts first, ties
//! broken by node id, read from the nodes' records ([`Operations::nodes`]) before each sample.
//! Every node runs this task, but only that one queries the status, so N nodes do not multiply
//! the status queries. Nodes may briefly disagree while one starts or stops; both then sample,
//! which only sets the same gauge values twice.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::pause;
use crate::operations::{NodeStatus, Operations};
use crate::store::Store;
use crate::{Clock, Result};

/// Samples every `every`, the first time one interval after start (when the records of nodes
/// started together are all there), until shutdown. A failed sample is logged at WARN and
/// tried again at the next interval.
pub(crate) async fn sample_gauges(
    store: Arc<dyn Store>,
    node: Uuid,
    every: Duration,
    clock: Arc<dyn Clock>,
    stopping: CancellationToken,
) {
    let mut sampling = false;
    while pause(&clock, every, &stopping).await {
        let Some(operations) = store.operations() else {
            return;
        };
        match sample(operations, node).await {
            Ok(now) => {
                if now != sampling {
                    tracing::debug!(
                        sampling = now,
                        "metrics gauges: this node {} the sampling node",
                        if now { "became" } else { "is no longer" }
                    );
                }
                sampling = now;
            }
            Err(error) => tracing::warn!(
                %error,
                retry_in = ?every,
                "cannot sample the metrics gauges; trying again at the next interval"
            ),
        }
    }
}

/// Samples the gauges if `node` is the sampling node; whether it is.
async fn sample(operations: &dyn Operations, node: Uuid) -> Result<bool> {
    let nodes = operations.nodes().await?;
    if sampling_node(&nodes) != Some(node) {
        return Ok(false);
    }
    let status = operations.status().await?;
    crate::metrics::gauges::record(&status);
    Ok(true)
}

/// The node that samples: the live one whose name sorts first (then by id); none when no node
/// is live.
fn sampling_node(nodes: &[NodeStatus]) -> Option<Uuid> {
    nodes
        .iter()
        .filter(|node| node.alive)
        .map(|node| (&node.record.name, node.record.id))
        .min()
        .map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::operations::NodeRecord;

    fn node(name: &str, alive: bool) -> NodeStatus {
        NodeStatus {
            record: NodeRecord {
                id: Uuid::new_v4(),
                name: name.to_owned(),
                namespace: None,
                host: "host".to_owned(),
                pid: 1,
                version: "0".to_owned(),
                handlers: Vec::new(),
                projections: Vec::new(),
                started_at: SystemTime::now(),
                heartbeat: Duration::from_secs(10),
            },
            last_seen: SystemTime::now(),
            alive,
        }
    }

    #[test]
    fn the_live_node_whose_name_sorts_first_samples() {
        let nodes = [node("b", true), node("a", false), node("c", true)];
        assert_eq!(sampling_node(&nodes), Some(nodes[0].record.id));
    }

    #[test]
    fn nodes_of_one_name_are_told_apart_by_id() {
        let nodes = [node("a", true), node("a", true)];
        let first = nodes.iter().map(|n| n.record.id).min();
        assert_eq!(sampling_node(&nodes), first);
    }

    #[test]
    fn no_node_samples_when_none_is_live() {
        assert_eq!(sampling_node(&[node("a", false)]), None);
        assert_eq!(sampling_node(&[]), None);
    }
}
