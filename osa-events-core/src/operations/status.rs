//! What [`Operations::status`](super::Operations::status) reports.

use std::time::{Duration, SystemTime};

use super::nodes::NodeStatus;
use crate::projection::ProjectionStatus;
use crate::store::SubscriptionId;

/// A count that stops at a cap: counting a million open deliveries on every poll would make
/// status as costly as the work it watches, so each figure is exact up to
/// [`HandlerStatus::EXACT_UP_TO`] and "at least that" beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Count {
    /// Exactly this many.
    Exact(u64),
    /// This many or more (the cap was reached).
    AtLeast(u64),
}

impl Count {
    /// `counted` rows found by a count that stopped at `cap` (it read at most `cap` rows).
    pub fn capped(counted: u64, cap: u64) -> Self {
        if counted >= cap {
            Self::AtLeast(cap)
        } else {
            Self::Exact(counted)
        }
    }

    /// The figure itself (for [`Count::AtLeast`], the cap).
    pub fn value(self) -> u64 {
        match self {
            Self::Exact(n) | Self::AtLeast(n) => n,
        }
    }
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(n) => write!(f, "{n}"),
            Self::AtLeast(n) => write!(f, "≥{n}"),
        }
    }
}

/// Whether a subscription's handler is being run, from the nodes' records.
///
/// A subscription belongs to the namespace before the `@` of its stored name (none: the default
/// namespace), and so do nodes. A handler that no live node of its namespace runs, while live
/// nodes of that namespace exist, was renamed or removed: an orphan. When no node of its
/// namespace is alive, it is merely stopped (the whole fleet is down or being deployed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// This many live nodes run it.
    Running {
        /// How many.
        nodes: u32,
    },
    /// No live node of its namespace exists.
    Stopped,
    /// Live nodes of its namespace exist and none runs it: renamed or removed.
    Orphan,
}

impl Liveness {
    /// The liveness of the subscription stored as `name`, given the nodes seen.
    pub fn of(name: &str, nodes: &[NodeStatus]) -> Self {
        let namespace = namespace_of(name);
        let mut running = 0u32;
        let mut namespace_alive = false;
        for node in nodes.iter().filter(|node| node.alive) {
            if node.record.namespace.as_deref().unwrap_or("") != namespace {
                continue;
            }
            namespace_alive = true;
            if node.record.handlers.iter().any(|handler| handler == name) {
                running += 1;
            }
        }
        match (running, namespace_alive) {
            (0, true) => Self::Orphan,
            (0, false) => Self::Stopped,
            (nodes, _) => Self::Running { nodes },
        }
    }
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Running { nodes } => write!(f, "running on {nodes}"),
            Self::Stopped => f.write_str("stopped"),
            Self::Orphan => f.write_str("orphan"),
        }
    }
}

/// The namespace of a stored name: what precedes its `@`, or `""` for the default namespace.
pub(crate) fn namespace_of(stored_name: &str) -> &str {
    stored_name
        .split_once('@')
        .map_or("", |(namespace, _)| namespace)
}

/// One handler's figures.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HandlerStatus {
    /// The subscription's id.
    pub id: SubscriptionId,
    /// The handler's stored name.
    pub name: String,
    /// The event type it receives.
    pub event_type: String,
    /// Its routing key, if any.
    pub routing_key: Option<String>,
    /// Pending deliveries that are due now (claimable), including claims that expired.
    pub due: Count,
    /// Pending deliveries scheduled later (retries waiting out their backoff).
    pub scheduled: Count,
    /// Deliveries held by a live claim.
    pub claimed: Count,
    /// Dead letters.
    pub dead: Count,
    /// Deliveries of an ordered handler held back behind their ordering key's head: due only
    /// once every earlier delivery of their key has left.
    pub waiting: Count,
    /// How long the longest-waiting due delivery has been due: near zero while the handler
    /// keeps up.
    pub oldest_due: Option<Duration>,
    /// How long ago the oldest live claim was taken: a claim much older than the handler's
    /// usual run is a handler stuck while heartbeating.
    pub oldest_claim: Option<Duration>,
    /// The workers holding live claims (`host:pid/handler#slot`), sorted, at most 20.
    pub claimed_by: Vec<String>,
    /// How far behind the head of the log the next delivery to be claimed is, in positions.
    pub lag_events: u64,
    /// How long ago the event of the next delivery to be claimed was published.
    pub lag: Duration,
    /// When it was paused, if it is.
    pub paused_at: Option<SystemTime>,
    /// When it was retired, if it is.
    pub retired_at: Option<SystemTime>,
    /// The error of its latest failed attempt (retried or dead), and when.
    pub last_error: Option<(String, SystemTime)>,
    /// Whether a live node runs it.
    pub liveness: Liveness,
    /// While it receives its history ([`StartFrom`](super::StartFrom)): the last position copied
    /// and the position it copies up to (`None` until the copy begins).
    pub backfill: Option<(i64, Option<i64>)>,
    /// The options it was last registered with: the subscription's config snapshot
    /// ([`HandlerSpec::config_json`](crate::HandlerSpec::config_json)), one key per option
    /// (`batch`, `poll`, `retries`, …, durations as `"500ms"`), with the run-time overrides of
    /// [`RuntimeBuilder::configure`](crate::RuntimeBuilder::configure) and the environment
    /// applied: the options its claim loops run with. `Null` when the store keeps none.
    pub config: serde_json::Value,
}

impl HandlerStatus {
    /// Where counts stop being exact: at most this many rows are read per figure and handler.
    pub const EXACT_UP_TO: u64 = 1_000;

    /// A handler with nothing open, for stores to fill in.
    pub fn idle(
        id: SubscriptionId,
        name: &str,
        event_type: &str,
        routing_key: Option<&str>,
    ) -> Self {
        Self {
            id,
            name: name.to_owned(),
            event_type: event_type.to_owned(),
            routing_key: routing_key.map(str::to_owned),
            due: Count::Exact(0),
            scheduled: Count::Exact(0),
            claimed: Count::Exact(0),
            dead: Count::Exact(0),
            waiting: Count::Exact(0),
            oldest_due: None,
            oldest_claim: None,
            claimed_by: Vec::new(),
            lag_events: 0,
            lag: Duration::ZERO,
            paused_at: None,
            retired_at: None,
            last_error: None,
            liveness: Liveness::Stopped,
            backfill: None,
            config: serde_json::Value::Null,
        }
    }
}

/// Everything [`Operations::status`](super::Operations::status) reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Status {
    /// When it was taken (store time).
    pub at: SystemTime,
    /// The head of the log: the highest position published.
    pub head: i64,
    /// Every subscription, by name.
    pub handlers: Vec<HandlerStatus>,
    /// Every projection, by name.
    pub projections: Vec<ProjectionStatus>,
    /// The runtime instances seen recently.
    pub nodes: Vec<NodeStatus>,
}

impl Status {
    /// Assembles a status; stores fill in each part.
    pub fn new(
        at: SystemTime,
        head: i64,
        handlers: Vec<HandlerStatus>,
        projections: Vec<ProjectionStatus>,
        nodes: Vec<NodeStatus>,
    ) -> Self {
        Self {
            at,
            head,
            handlers,
            projections,
            nodes,
        }
    }

    /// The handler stored as `name`.
    pub fn handler(&self, name: &str) -> Option<&HandlerStatus> {
        self.handlers.iter().find(|handler| handler.name == name)
    }
}
