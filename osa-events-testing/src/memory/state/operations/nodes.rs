//! Who runs what: the nodes' records, the counterpart of the `nodes` table.

use osa_events::operations::{NodeRecord, NodeStatus};
use uuid::Uuid;

use crate::memory::state::Tables;
use crate::memory::time::Now;

impl Tables {
    /// Records `node` as seen now, and forgets the nodes not seen for
    /// [`NodeRecord::STALE_AFTER`].
    pub(in crate::memory) fn record_node(&mut self, node: &NodeRecord, now: Now) {
        self.nodes.insert(node.id, (node.clone(), now.instant));
        self.nodes.retain(|_, (_, last_seen)| {
            now.instant.saturating_duration_since(*last_seen) < NodeRecord::STALE_AFTER
        });
    }

    /// Forgets the node `id`.
    pub(in crate::memory) fn remove_node(&mut self, id: Uuid) {
        self.nodes.remove(&id);
    }

    /// The nodes seen within [`NodeRecord::STALE_AFTER`], by name: alive while fewer than
    /// [`NodeRecord::MISSED_HEARTBEATS`] heartbeats have passed since they were last seen.
    pub(in crate::memory) fn node_statuses(&self, now: Now) -> Vec<NodeStatus> {
        let mut nodes: Vec<NodeStatus> = self
            .nodes
            .values()
            .filter_map(|(record, last_seen)| {
                let silent = now.instant.saturating_duration_since(*last_seen);
                (silent < NodeRecord::STALE_AFTER).then(|| NodeStatus {
                    record: record.clone(),
                    last_seen: now.wall_of(*last_seen),
                    alive: silent
                        < record
                            .heartbeat
                            .saturating_mul(NodeRecord::MISSED_HEARTBEATS),
                })
            })
            .collect();
        nodes.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        nodes
    }
}
