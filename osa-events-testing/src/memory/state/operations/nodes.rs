//! Who runs what: the nodes' records, the counterpart of the `nodes` table.

use osa_events::operations::{NodeRecord, NodeStatus};
use uuid::Uuid;

use crate::memory::state::Tables;
use crate::memory::time::Now;

impl Tables {
    /// Records `node` as seen now, and forgets the others not seen for longer than
    /// [`NodeRecord::STALE_AFTER`]. A node recorded again keeps its host, pid, version and start
    /// (they describe the process, which an id names), as `PgStore`'s upsert does.
    pub(in crate::memory) fn record_node(&mut self, node: &NodeRecord, now: Now) {
        let record = match self.nodes.get(&node.id) {
            Some((known, _)) => NodeRecord {
                host: known.host.clone(),
                pid: known.pid,
                version: known.version.clone(),
                started_at: known.started_at,
                ..node.clone()
            },
            None => node.clone(),
        };
        self.nodes.insert(node.id, (record, now.instant));
        self.nodes.retain(|id, (_, last_seen)| {
            *id == node.id || !stale(now.instant.saturating_duration_since(*last_seen))
        });
    }

    /// Forgets the node `id`.
    pub(in crate::memory) fn remove_node(&mut self, id: Uuid) {
        self.nodes.remove(&id);
    }

    /// The nodes seen within [`NodeRecord::STALE_AFTER`], by name (then id): alive while fewer than
    /// [`NodeRecord::MISSED_HEARTBEATS`] heartbeats have passed since they were last seen.
    pub(in crate::memory) fn node_statuses(&self, now: Now) -> Vec<NodeStatus> {
        let mut nodes: Vec<NodeStatus> = self
            .nodes
            .values()
            .filter_map(|(record, last_seen)| {
                let silent = now.instant.saturating_duration_since(*last_seen);
                (!stale(silent)).then(|| NodeStatus {
                    record: record.clone(),
                    last_seen: now.wall_of(*last_seen),
                    alive: silent
                        < record
                            .heartbeat
                            .saturating_mul(NodeRecord::MISSED_HEARTBEATS),
                })
            })
            .collect();
        nodes.sort_by(|a, b| (&a.record.name, a.record.id).cmp(&(&b.record.name, b.record.id)));
        nodes
    }
}

/// Whether a node silent for `silent` is forgotten.
fn stale(silent: std::time::Duration) -> bool {
    silent > NodeRecord::STALE_AFTER
}
