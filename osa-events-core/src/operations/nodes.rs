//! Who runs what: the record each runtime instance keeps of itself.

use std::time::{Duration, SystemTime};

use uuid::Uuid;

/// A runtime instance as it records itself, at start and on every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// Unique per run of a runtime.
    pub id: Uuid,
    /// Its instance name (`host:pid` unless
    /// [`RuntimeBuilder::instance_name`](crate::RuntimeBuilder::instance_name) says otherwise).
    pub name: String,
    /// Its [namespace](crate::RuntimeBuilder::namespace), `None` for the default one.
    pub namespace: Option<String>,
    /// The machine's host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// The version of osa-events it runs.
    pub version: String,
    /// The stored names of the handlers it runs, sorted.
    pub handlers: Vec<String>,
    /// The stored names of the projections it runs, sorted.
    pub projections: Vec<String>,
    /// When it started (its clock).
    pub started_at: SystemTime,
    /// How often it refreshes this record: it counts as alive until three of these pass without
    /// one.
    pub heartbeat: Duration,
}

impl NodeRecord {
    /// How long a node's record is kept after its last heartbeat (then the next heartbeat of any
    /// node removes it).
    pub const STALE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

    /// How many missed heartbeats make a node count as gone.
    pub const MISSED_HEARTBEATS: u32 = 3;
}

/// A node as [`Operations::nodes`](super::Operations::nodes) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// What it recorded.
    pub record: NodeRecord,
    /// Its last heartbeat (store time).
    pub last_seen: SystemTime,
    /// Whether it heartbeat within [`NodeRecord::MISSED_HEARTBEATS`] intervals.
    pub alive: bool,
}
