//! The operations API: what an operator sees and does, on every store.
//!
//! [`Operations`] is one trait that every store implements (PostgreSQL, in memory, and later
//! ones) and that the contract suite of `osa-events-testing` checks rule by rule. The
//! `osa-events` command-line tool and the dashboard are thin clients of it: they never write SQL
//! of their own, so what they do is exactly what the contract proves.
//!
//! | need | method |
//! | --- | --- |
//! | how is every handler doing | [`Operations::status`] |
//! | which deliveries, and one in full | [`Operations::deliveries`], [`Operations::delivery`] |
//! | dead letters back into work, or gone | [`Operations::retry_dead`], [`Operations::purge_dead`], [`Operations::cancel_pending`] |
//! | handle a stretch of the log again | [`Operations::replay`] |
//! | stop and restart a handler fleet-wide | [`Operations::pause`], [`Operations::resume`] |
//! | renamed or removed handlers | [`Operations::subscriptions`], [`Operations::retire`] |
//! | keep the log from growing forever | [`Operations::prune`] |
//! | who runs what | [`Operations::nodes`], [`Operations::record_node`] |
//! | throughput and failures over the last hour, per minute ([`activity`]) | [`Operations::activity`], [`Operations::record_activity`] |
//!
//! Every mutation returns how many deliveries or events it changed, runs in one transaction of
//! the store, and never touches a claimed delivery: a worker that holds a claim keeps it, and its
//! fenced completion or failure still lands. Handler names are the stored names (with a
//! [namespace](crate::RuntimeBuilder::namespace), `billing@on_order_placed`); an unknown one is
//! [`Error::UnknownHandler`](crate::Error::UnknownHandler), naming the known ones.

use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::Result;
use crate::projection::ProjectionStatus;
use crate::store::SubscriptionId;

pub mod activity;
mod failure;
mod nodes;
mod status;

pub use activity::{ACTIVITY_BUCKET, ACTIVITY_KEPT, ActivityBucket, ActivityDelta, ActivityKind};
pub use failure::failure_cause;
pub(crate) use failure::failure_message;
pub use nodes::{NodeRecord, NodeStatus};
pub use status::{Count, HandlerStatus, Liveness, Status};

/// The state of a delivery as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting to be claimed: due now, or scheduled later (a retry's backoff).
    Pending,
    /// Held by a worker until its claim expires (an expired claim is due again).
    Claimed,
    /// Out of retries, or failed permanently: kept with its last error until retried or purged.
    Dead,
    /// Held back behind an earlier delivery of its ordering key (an `ordered` handler's): due
    /// when every earlier one of its key has been completed (see the ordering guide, `osa_events::ordering`).
    Waiting,
}

impl DeliveryState {
    /// The name used in filters and output: `pending`, `claimed`, `dead` or `waiting`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Claimed => "claimed",
            Self::Dead => "dead",
            Self::Waiting => "waiting",
        }
    }
}

impl std::fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DeliveryState {
    type Err = crate::Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "pending" => Ok(Self::Pending),
            "claimed" => Ok(Self::Claimed),
            "dead" => Ok(Self::Dead),
            "waiting" => Ok(Self::Waiting),
            other => Err(crate::Error::Config(
                format!(
                    "unknown delivery state `{other}` (known: pending, claimed, dead, waiting)"
                )
                .into(),
            )),
        }
    }
}

/// Which deliveries an operation concerns. Every field narrows the selection; the default
/// selects every delivery the operation may touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// Only this handler's (its stored name).
    pub handler: Option<String>,
    /// Only deliveries of this event (its position in the log): with `handler`, one delivery.
    pub position: Option<i64>,
    /// Only events of this type.
    pub event_type: Option<String>,
    /// Only deliveries whose last error contains this text (case-sensitive).
    pub error_contains: Option<String>,
    /// Only deliveries that last changed (were published, claimed, failed or died) at or after
    /// this time. For a dead letter that is when it died.
    pub changed_after: Option<SystemTime>,
    /// Only deliveries that last changed before this time.
    pub changed_before: Option<SystemTime>,
    /// At most this many, in key order (handler, then position): the command-line tool works
    /// through a large selection in chunks of this size, one transaction each.
    pub limit: Option<u64>,
}

impl Selector {
    /// Every delivery of `handler`.
    pub fn handler(handler: impl Into<String>) -> Self {
        Self {
            handler: Some(handler.into()),
            ..Self::default()
        }
    }

    /// The one delivery of the event at `position` to `handler`.
    pub fn one(handler: impl Into<String>, position: i64) -> Self {
        Self {
            position: Some(position),
            ..Self::handler(handler)
        }
    }
}

/// The key deliveries are listed in: subscription, then position. A page ends at a key; the next
/// page starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryKey {
    /// The subscription's id.
    pub subscription: SubscriptionId,
    /// The event's position.
    pub position: i64,
}

/// A page of [`Operations::deliveries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryQuery {
    /// Which deliveries (its `limit` is ignored: the page size is [`page_size`](Self::page_size)).
    pub selector: Selector,
    /// Only deliveries in this state.
    pub state: Option<DeliveryState>,
    /// Start after this key (the previous page's [`DeliveryPage::next`]).
    pub after: Option<DeliveryKey>,
    /// At most this many rows (1..=1000).
    pub page_size: u32,
}

impl DeliveryQuery {
    /// The largest [`page_size`](Self::page_size).
    pub const MAX_PAGE_SIZE: u32 = 1_000;

    /// The page size, if it is in `1..=MAX_PAGE_SIZE`: the check every store makes, with the same
    /// error.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) naming the range.
    pub fn checked_page_size(&self) -> Result<u32> {
        in_range("the page size", self.page_size, Self::MAX_PAGE_SIZE)
    }
}

impl Default for DeliveryQuery {
    fn default() -> Self {
        Self {
            selector: Selector::default(),
            state: None,
            after: None,
            page_size: 100,
        }
    }
}

/// One delivery as listed: its state and bookkeeping, without the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySummary {
    /// Its key (subscription, position).
    pub key: DeliveryKey,
    /// The handler's stored name.
    pub handler: String,
    /// Its state.
    pub state: DeliveryState,
    /// Attempts made so far (counting a claim in progress).
    pub attempts: u32,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// The worker holding the claim (claimed deliveries only).
    pub claimed_by: Option<String>,
    /// When it is next due: for a pending delivery when it may be claimed, for a claimed one
    /// when its claim expires, for a dead one when it died.
    pub run_at: SystemTime,
    /// When it last changed.
    pub updated_at: SystemTime,
    /// The event's id.
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: String,
    /// The routing key the event was published with.
    pub routing_key: Option<String>,
    /// When the event was published (store time).
    pub published_at: SystemTime,
}

/// A page of deliveries, in key order.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPage {
    /// The deliveries.
    pub deliveries: Vec<DeliverySummary>,
    /// Where the next page starts; `None` when this is the last page.
    pub next: Option<DeliveryKey>,
}

/// One delivery in full, with its event.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryDetail {
    /// What the listing shows.
    pub summary: DeliverySummary,
    /// The event's payload version.
    pub event_version: i32,
    /// The event's position in the log.
    pub position: i64,
    /// The payload, as JSON text.
    pub payload: String,
    /// The metadata, as JSON text.
    pub metadata: String,
}

/// Where a new handler starts: which of the events published before its subscription existed
/// it receives. Declared with `#[event_handler(start_from = ...)]` or
/// [`RuntimeBuilder::start_from`](crate::RuntimeBuilder::start_from); it takes effect only when
/// the subscription is created (a renamed handler is a new one), never for one that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StartFrom {
    /// Only events published from now on (the default).
    #[default]
    Now,
    /// The whole history of its event type (and routing key) still in the log, once each and in
    /// log order. The runtime copies it in bounded chunks while the handler runs, so what is
    /// published meanwhile is handled as usual, possibly before the history is through.
    Beginning,
    /// The history after this position in the log.
    AfterPosition(i64),
}

impl StartFrom {
    /// The position the history starts after, `None` for [`StartFrom::Now`].
    pub fn after_position(self) -> Option<i64> {
        match self {
            Self::Now => None,
            Self::Beginning => Some(0),
            Self::AfterPosition(position) => Some(position.max(0)),
        }
    }
}

/// A stretch of the log to deliver again to one handler: [`Operations::replay`].
///
/// Only events of the handler's event type are delivered (it can decode no other), and, when the
/// handler has a routing key, only events of that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The handler's stored name.
    pub handler: String,
    /// Events after this position.
    pub after_position: i64,
    /// Events up to and including this position (`None`: up to the head as the replay starts).
    pub through_position: Option<i64>,
    /// Only events published at or after this time.
    pub published_after: Option<SystemTime>,
    /// Only events published before this time.
    pub published_before: Option<SystemTime>,
    /// Only events of this type: must be the handler's own (a filter that can match nothing is
    /// refused, so a typo does not look like an empty stretch of the log).
    pub event_type: Option<String>,
    /// Only events published with this routing key.
    pub routing_key: Option<String>,
    /// How many events of the log one step reads (1..=100,000): one transaction each.
    pub chunk: u32,
}

/// The largest chunk of a replay or backfill step, and batch of a prune step.
pub const MAX_CHUNK: u32 = 100_000;

/// `value` if it is in `1..=max`, else [`Error::Config`](crate::Error::Config) naming `what`.
fn in_range(what: &str, value: u32, max: u32) -> Result<u32> {
    if (1..=max).contains(&value) {
        Ok(value)
    } else {
        Err(crate::Error::Config(
            format!("{what} must be in 1..={max}, found {value}").into(),
        ))
    }
}

/// `chunk` for [`Operations::backfill`], if it is in `1..=MAX_CHUNK`: the check every store
/// makes, with the same error.
///
/// # Errors
///
/// [`Error::Config`](crate::Error::Config) naming the range.
pub fn checked_backfill_chunk(chunk: u32) -> Result<u32> {
    in_range("the backfill chunk", chunk, MAX_CHUNK)
}

impl Replay {
    /// The chunk, if it is in `1..=MAX_CHUNK`: the check every store makes, with the same error.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) naming the range.
    pub fn checked_chunk(&self) -> Result<u32> {
        in_range("the replay chunk", self.chunk, MAX_CHUNK)
    }

    /// The whole log still kept, to `handler`, in chunks of 1,000.
    pub fn everything(handler: impl Into<String>) -> Self {
        Self {
            handler: handler.into(),
            after_position: 0,
            through_position: None,
            published_after: None,
            published_before: None,
            event_type: None,
            routing_key: None,
            chunk: 1_000,
        }
    }
}

/// What one step of a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStep {
    /// Deliveries created (pending, due now).
    pub delivered: u64,
    /// Matching events skipped because the handler still had an open delivery or a dead letter
    /// of them (retry those instead).
    pub skipped: u64,
    /// The last position this step read: the next step starts after it.
    pub through: i64,
    /// The position the replay ends at (resolved on the first step when not given).
    pub end: i64,
    /// Whether the replay is done.
    pub done: bool,
}

/// What one [`Operations::backfill`] step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillStep {
    /// Copied this many deliveries, through this position, of a history that ends at `end`.
    Copied {
        /// Deliveries created.
        delivered: u64,
        /// The last position read.
        through: i64,
        /// The position the history ends at.
        end: i64,
    },
    /// Nothing copied yet: transactions that may have published without seeing the new
    /// subscription are still running, or the handler has not worked off what was copied (at
    /// most two chunks are open at a time). Try again after a pause.
    Waiting,
    /// No backfill is pending: it finished, or none was asked for.
    Done,
}

/// A subscription as stored, with what operators need to decide about it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionInfo {
    /// Its id.
    pub id: SubscriptionId,
    /// The handler's stored name.
    pub name: String,
    /// Its event type.
    pub event_type: String,
    /// Its routing key.
    pub routing_key: Option<String>,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it was paused, if it is.
    pub paused_at: Option<SystemTime>,
    /// When it was retired, if it is.
    pub retired_at: Option<SystemTime>,
    /// Whether a live node runs it, or it looks renamed or removed.
    pub liveness: Liveness,
    /// Open (pending and claimed) deliveries.
    pub open: u64,
    /// Dead letters.
    pub dead: u64,
}

/// What [`Operations::retire`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retired {
    /// Pending and claimed deliveries deleted.
    pub open: u64,
    /// Dead letters deleted.
    pub dead: u64,
}

/// How [`Operations::retire`] may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetireMode {
    /// Only a subscription no live node runs ([`Liveness::Orphan`] or [`Liveness::Stopped`]).
    #[default]
    IfNotRunning,
    /// Also one a live node still runs: its claim loops then claim nothing.
    EvenIfRunning,
}

/// A retention pass: [`Operations::prune`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prune {
    /// Only events published longer ago than this.
    pub older_than: Duration,
    /// Also dead letters of those events (and then the events): off by default, since dead
    /// letters are kept until an operator decides.
    pub include_dead: bool,
    /// How many events of the log one step examines (1..=100,000): one short transaction each,
    /// so publishers are never held up.
    pub batch: u32,
}

impl Prune {
    /// The batch, if it is in `1..=MAX_CHUNK`: the check every store makes, with the same error.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) naming the range.
    pub fn checked_batch(&self) -> Result<u32> {
        in_range("the prune batch", self.batch, MAX_CHUNK)
    }

    /// The default [`batch`](Self::batch): 100 events per step. Every step's WAL is flushed
    /// ahead of the next publisher's commit, so larger steps lengthen publishers' slowest
    /// commits: at 1,000 a publisher's p99 latency rose 4.8× during a prune, at 100 1.8×
    /// (BENCHMARKS.md, "Operations").
    pub const DEFAULT_BATCH: u32 = 100;

    /// Events older than `older_than`, dead letters kept, in batches of
    /// [`DEFAULT_BATCH`](Self::DEFAULT_BATCH).
    pub fn older_than(older_than: Duration) -> Self {
        Self {
            older_than,
            include_dead: false,
            batch: Self::DEFAULT_BATCH,
        }
    }
}

/// Periodic retention, for [`RuntimeBuilder::retention`](crate::RuntimeBuilder::retention): a
/// [`Prune`] pass run to its end every `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// What each pass prunes.
    pub prune: Prune,
    /// How often a pass starts (after the previous one ended).
    pub every: Duration,
}

impl Retention {
    /// Events older than `older_than` (dead letters kept), pruned every `every`.
    pub fn older_than(older_than: Duration, every: Duration) -> Self {
        Self {
            prune: Prune::older_than(older_than),
            every,
        }
    }
}

/// What one step of a prune did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneStep {
    /// Events deleted.
    pub events: u64,
    /// Dead letters deleted with them ([`Prune::include_dead`] only).
    pub dead: u64,
    /// Events examined and kept: an open delivery or a dead letter still refers to them, or a
    /// projection has not passed them yet.
    pub kept: u64,
    /// The last position examined: the next step starts after it.
    pub through: i64,
    /// Whether the pass is done: it reached an event younger than the cutoff, or the head.
    pub done: bool,
    /// Another prune holds the retention lock: this step did nothing.
    pub busy: bool,
}

/// The operations every store offers; see the [module docs](self).
pub trait Operations: Send + Sync {
    /// Every handler's and projection's figures, and the nodes.
    fn status(&self) -> BoxFuture<'_, Result<Status>>;

    /// A page of deliveries matching `query`, in key order.
    fn deliveries<'a>(&'a self, query: &'a DeliveryQuery) -> BoxFuture<'a, Result<DeliveryPage>>;

    /// The delivery of the event at `position` to `handler`, with its event; `None` when there is
    /// none (completed, purged, or never delivered).
    fn delivery<'a>(
        &'a self,
        handler: &'a str,
        position: i64,
    ) -> BoxFuture<'a, Result<Option<DeliveryDetail>>>;

    /// Puts the selected dead letters back into work: pending, due now, attempts reset to 0 (the
    /// last error is kept for the handler to see), and the workers woken. Returns how many.
    ///
    /// For an ordered handler, a dead head of `ordered = "block"` is the head again; a dead
    /// letter that had left its key (`ordered = "skip"`) joins it again at the end, waiting if
    /// the key has a head.
    fn retry_dead<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<u64>>;

    /// Deletes the selected dead letters. Returns how many.
    fn purge_dead<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<u64>>;

    /// Deletes the selected pending deliveries, waiting ones included (never a claimed one).
    /// Returns how many. Deleting the head of an ordering key makes the next one due.
    fn cancel_pending<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<u64>>;

    /// One step of a replay: reads up to `replay.chunk` events of the log after `after` (the
    /// previous step's [`ReplayStep::through`], or `replay.after_position` for the first) and
    /// delivers the matching ones to the handler, due now, in log order. `end` is the previous
    /// step's [`ReplayStep::end`] (`None` for the first step).
    fn replay<'a>(
        &'a self,
        replay: &'a Replay,
        after: i64,
        end: Option<i64>,
    ) -> BoxFuture<'a, Result<ReplayStep>>;

    /// Pauses `handler` on every node: its claim loops claim nothing (batches already claimed
    /// finish), while publishing goes on and its deliveries accumulate. Returns whether it was
    /// running (false: it was paused already).
    fn pause<'a>(&'a self, handler: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Resumes a paused `handler`, and wakes its workers. Returns whether it was paused.
    fn resume<'a>(&'a self, handler: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// One step of the backfill of `handler`, a subscription created with a [`StartFrom`] other
    /// than [`StartFrom::Now`]: copies up to `chunk` events of its history (its event type and
    /// routing key, after the start position, up to the head when it was created) into its
    /// deliveries, pending and due at its creation, so each copied chunk is claimed in log order
    /// ahead of what was published since. No event is delivered twice or missed, also when
    /// publishing transactions straddle the subscription's creation. Each step is one short transaction, so publishers are never held up, and at
    /// most two chunks of copied deliveries are open at a time, so a long history does not flood
    /// the deliveries. The runtime calls it until [`BackfillStep::Done`]; steps of several nodes
    /// take turns.
    fn backfill<'a>(&'a self, handler: &'a str, chunk: u32) -> BoxFuture<'a, Result<BackfillStep>>;

    /// Every subscription, with its liveness and counts.
    fn subscriptions(&self) -> BoxFuture<'_, Result<Vec<SubscriptionInfo>>>;

    /// Retires `handler`: it receives no delivery from now on, its open deliveries and dead
    /// letters are deleted (the counts are returned), and claim loops still running it claim
    /// nothing. A handler of that name registered later starts afresh (as new, see
    /// [`StartFrom`]).
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) when a live node runs it and `mode` is
    /// [`RetireMode::IfNotRunning`].
    fn retire<'a>(&'a self, handler: &'a str, mode: RetireMode) -> BoxFuture<'a, Result<Retired>>;

    /// One step of a retention pass: examines up to `prune.batch` events after `after` (0 to
    /// begin) and deletes those older than `prune.older_than` that no open delivery or dead letter
    /// refers to and that every projection has passed. Takes the retention lock for the step, so
    /// concurrent passes (one per node) do not do the work twice: a step that finds it taken
    /// reports [`PruneStep::busy`].
    fn prune<'a>(&'a self, prune: &'a Prune, after: i64) -> BoxFuture<'a, Result<PruneStep>>;

    /// Records (or refreshes) a runtime instance, and forgets instances not seen for
    /// [`NodeRecord::STALE_AFTER`].
    fn record_node<'a>(&'a self, node: &'a NodeRecord) -> BoxFuture<'a, Result<()>>;

    /// Forgets a runtime instance (it stopped).
    fn remove_node(&self, id: Uuid) -> BoxFuture<'_, Result<()>>;

    /// The runtime instances seen within [`NodeRecord::STALE_AFTER`], and whether each is alive.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeStatus>>>;

    /// Adds each delta's counts to its bucket of the current minute (store time: the database's
    /// clock, not the caller's), creating the bucket if there is none, and deletes every bucket
    /// older than [`ACTIVITY_KEPT`], in one transaction. Deltas whose counts are all zero are
    /// skipped, and an empty slice returns at once without touching the store. Calls of several
    /// nodes into the same bucket add up: none loses another's counts. The runtime calls it on
    /// every node heartbeat; see [`activity`] for what the counts mean.
    fn record_activity<'a>(&'a self, deltas: &'a [ActivityDelta]) -> BoxFuture<'a, Result<()>>;

    /// Every bucket from the minute of `since` on (`since` truncated down to its minute), sorted
    /// by kind (handlers first), name and minute: what a chart of the last hour reads, with
    /// `since` an hour before the store's now ([`Status::at`]).
    fn activity<'a>(&'a self, since: SystemTime) -> BoxFuture<'a, Result<Vec<ActivityBucket>>>;

    /// The state of every projection the store has a checkpoint of (whichever program runs it),
    /// and of those registered in this program that have none yet, by name; empty on a store
    /// without projections.
    fn projections(&self) -> BoxFuture<'_, Result<Vec<ProjectionStatus>>>;
}
