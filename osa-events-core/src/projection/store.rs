//! [`ProjectionStore`]: what a store does for projections, so the same runner drives them on
//! [`PgStore`](crate::PgStore) in production and on an in-memory store in unit tests.
//!
//! A projection needs three things from its store, each a rule of the contract suite of
//! `osa-events-testing`:
//!
//! - **Leadership.** [`ProjectionStore::try_lead`] makes at most one [`Leadership`] per projection
//!   name at a time, across every process sharing the store. It lasts until it is resigned, its
//!   holder is gone (for PostgreSQL: the session that holds the advisory lock ends), or the store
//!   deposes it; once lost, every call through it fails and writes nothing.
//! - **Order.** [`Leadership::next_batch`] reads the events of the projection's types after its
//!   checkpoint, in commit order: an event never comes before one whose effects its publishing
//!   transaction could see, and no event can ever appear before the checkpoint once the
//!   checkpoint has passed it (for PostgreSQL: `(commit seq, position)` up to the commit
//!   high-water mark, see `pg/read.rs`).
//! - **Atomic checkpoints.** [`Leadership::commit`] saves the batch's new checkpoint together
//!   with the batch's effects when they go through the batch's transaction (the one
//!   [`OpenBatch::transaction`] carries, the store's own), and only while the leadership holds. A batch that is not committed leaves the checkpoint where it was.

use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;

use super::ProjectionRegistration;
use crate::Result;
use crate::store::{Delivery, Transaction};

/// Where a projection stands: the sort key of the last event it read, `(0, 0)` before the first.
/// Events are read in `(commit_seq, position)` order, the log's commit order.
///
/// The last event read may be of a type the projection does not read: a batch that reaches the end
/// of what is settled moves the checkpoint there, so the next read does not scan those events
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Checkpoint {
    /// The commit number of the transaction that published the event: publishing transactions
    /// are numbered as they commit (the in-memory store numbers its publishes).
    pub commit_seq: u64,
    /// The event's position in the log.
    pub position: i64,
}

/// Where a [`ProjectionStore::reset`] rewinds a projection to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// Before the first event: the projection applies the whole log again.
    Beginning,
    /// Just after the event at this position in the log's commit order: the projection applies
    /// what follows it in that order (events of transactions that committed later, and the
    /// later events of the same transaction), which on PostgreSQL may include events at lower
    /// positions whose transactions committed after this one's.
    AfterPosition(i64),
    /// After the last event committed so far: the projection applies only what commits from now
    /// on (on PostgreSQL, "so far" is what the reset's transaction sees).
    End,
}

/// A projection's state, from [`ProjectionStore::status`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// The position of the last event read (0 before the first): the last applied one, or a later
    /// one of another type that the projection read past.
    pub position: i64,
    /// The commit number of the transaction of the event at [`position`](Self::position).
    pub commit_seq: u64,
    /// Events of its types not applied yet (committed ones only).
    pub lag: i64,
    /// How long ago the oldest of those events was published (store time); `None` when it has
    /// caught up.
    pub oldest_unapplied: Option<Duration>,
    /// The runtime instance that leads it (`host:pid` unless
    /// [`RuntimeBuilder::instance_name`](crate::RuntimeBuilder::instance_name) says otherwise),
    /// if one does.
    pub leader: Option<String>,
    /// The error of the last failed batch, cleared by the next successful one.
    pub last_error: Option<String>,
    /// When the checkpoint last changed (`UNIX_EPOCH` for a projection that never ran).
    pub updated_at: SystemTime,
}

impl ProjectionStatus {
    /// The status of a projection that has never run: at the beginning, led by nobody.
    pub fn never_ran(name: &str, lag: i64) -> Self {
        Self {
            name: name.to_owned(),
            position: 0,
            commit_seq: 0,
            lag,
            oldest_unapplied: None,
            leader: None,
            last_error: None,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }
}

/// The events of one batch, read by [`Leadership::next_batch`] and not yet committed.
#[derive(Debug)]
pub struct OpenBatch {
    /// The events after the checkpoint, in order, as deliveries with a nil claim token (there is
    /// no claim) and attempt 1 (the runner sets the attempt).
    pub events: Vec<Delivery>,
    /// The checkpoint before and after this batch.
    pub advance: Advance,
    /// The transaction the batch was read in, which its effects (through a `Tx`) and its
    /// checkpoint commit in: `Some` for a store with transactions, `None` for one without.
    pub transaction: Option<Box<dyn Transaction>>,
}

/// Events read by [`Leadership::read_ahead`].
#[derive(Debug)]
pub struct ReadAhead {
    /// The events after the cursor, in order, as in [`OpenBatch::events`].
    pub events: Vec<Delivery>,
    /// The cursor after them: their last event, or further when everything settled was read.
    pub to: Checkpoint,
}

/// A batch's move of the checkpoint, from [`OpenBatch::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advance {
    /// The checkpoint the batch was read after.
    pub from: Checkpoint,
    /// The checkpoint of its last event.
    pub to: Checkpoint,
}

/// Storage of projection checkpoints and leadership. Implement it, next to [`Store`](crate::store::Store),
/// for a store that runs projections; it must pass the projection rules of the contract suite of
/// `osa-events-testing`.
pub trait ProjectionStore: Send + Sync + 'static {
    /// Tries to become the leader of projection `name` as `holder` (a runtime instance name,
    /// shown in [`ProjectionStatus::leader`]), creating its checkpoint at the beginning if it has
    /// none. While another leadership of `name` holds, waits up to `wait` for it to end (taking
    /// over as soon as it does), then returns `Ok(None)`; `Duration::ZERO` does not wait.
    fn try_lead<'a>(
        &'a self,
        name: &'static str,
        holder: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Leadership>>>>;

    /// The state of projection `name`, which reads `event_types`.
    fn status<'a>(
        &'a self,
        name: &'a str,
        event_types: &'a [&'a str],
    ) -> BoxFuture<'a, Result<ProjectionStatus>>;

    /// Rewinds projection `name` to `to`. A batch being applied meanwhile does not overwrite the
    /// reset: the projection continues from the new point.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) when `AfterPosition` names no event.
    fn reset<'a>(&'a self, name: &'a str, to: ResetTo) -> BoxFuture<'a, Result<()>>;

    /// Records that projection `name` reads `event_types`, at start-up. A projection whose
    /// checkpoint was built from another set is refused: events of a type added since then,
    /// published before the checkpoint, were never applied and never would be. A projection still
    /// at the beginning takes the new set as it is; a [`reset`](Self::reset) or
    /// [`acknowledge_event_types`](Self::acknowledge_event_types) makes the next call record the
    /// new set.
    ///
    /// # Errors
    ///
    /// [`Error::ProjectionEventTypesChanged`](crate::Error::ProjectionEventTypesChanged) naming
    /// both sets and the two ways on.
    fn record_event_types<'a>(
        &'a self,
        name: &'a str,
        event_types: &'a [&'a str],
    ) -> BoxFuture<'a, Result<()>>;

    /// Accepts a change of projection `name`'s event types without rewinding it: it applies the
    /// events of added types from its checkpoint on (the earlier ones stay unapplied), and the
    /// next [`record_event_types`](Self::record_event_types) records the new set.
    fn acknowledge_event_types<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>>;

    /// The state of every projection registered in this program, sorted by name.
    fn statuses(&self) -> BoxFuture<'_, Result<Vec<ProjectionStatus>>> {
        Box::pin(async move {
            let mut registrations: Vec<&ProjectionRegistration> =
                inventory::iter::<ProjectionRegistration>
                    .into_iter()
                    .collect();
            registrations.sort_by_key(|registration| registration.spec.name());
            let mut statuses = Vec::with_capacity(registrations.len());
            for registration in registrations {
                let spec = registration.spec;
                statuses.push(self.status(spec.name(), spec.event_types()).await?);
            }
            Ok(statuses)
        })
    }
}

/// The leadership of one projection, from [`ProjectionStore::try_lead`]. Dropping it gives it up,
/// like [`resign`](Self::resign) without waiting.
///
/// Every method fails, writing nothing, once the leadership is lost; the runner then resigns and
/// tries to lead again later.
pub trait Leadership: Send {
    /// Confirms the leadership and reads up to `limit` events of `event_types` after the
    /// checkpoint, in order.
    fn next_batch<'a>(
        &'a mut self,
        event_types: &'static [&'static str],
        limit: u32,
    ) -> BoxFuture<'a, Result<OpenBatch>>;

    /// Moves the checkpoint as `advance` says and commits `transaction` (the batch's, with its
    /// effects), if the leadership still holds. If the checkpoint was reset since the batch was
    /// read, the reset stands.
    fn commit<'a>(
        &'a mut self,
        advance: Advance,
        transaction: Option<Box<dyn Transaction>>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Reads up to `limit` events of `event_types` after `after`, in order, without a transaction
    /// and without locking or moving the checkpoint: for a reader that runs ahead of its commits
    /// (the JetStream relay reads the next batch while the last one's acknowledgements come in).
    /// `after` is the `to` of a batch read before; the result's [`ReadAhead::to`] is the cursor
    /// after this read, as [`OpenBatch::advance`]'s `to` would be. Commit with
    /// [`commit_ahead`](Self::commit_ahead).
    ///
    /// `Ok(None)` when the store does not read ahead (the default): use
    /// [`next_batch`](Self::next_batch).
    fn read_ahead<'a>(
        &'a mut self,
        event_types: &'static [&'static str],
        after: Checkpoint,
        limit: u32,
    ) -> BoxFuture<'a, Result<Option<ReadAhead>>> {
        let _ = (event_types, after, limit);
        Box::pin(async { Ok(None) })
    }

    /// Moves the checkpoint as `advance` says, in a transaction of its own, if the leadership
    /// holds and the checkpoint is still at `advance.from`: for batches read with
    /// [`read_ahead`](Self::read_ahead). `Ok(false)` when it is not (a reset moved it): nothing
    /// was written, and the reader should read again from the checkpoint with
    /// [`next_batch`](Self::next_batch).
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`](crate::Error::NotLeader) when the leadership is lost;
    /// [`Error::Config`](crate::Error::Config) from a store that does not read ahead (the
    /// default).
    fn commit_ahead(&mut self, advance: Advance) -> BoxFuture<'_, Result<bool>> {
        let _ = advance;
        Box::pin(async {
            Err(crate::Error::Config(
                "this store does not read projections ahead (`Leadership::read_ahead` is `None`)"
                    .into(),
            ))
        })
    }

    /// Records why the last batch failed, for [`ProjectionStatus::last_error`]; the checkpoint
    /// does not move.
    fn record_failure<'a>(&'a mut self, error: &'a str) -> BoxFuture<'a, Result<()>>;

    /// Gives the leadership up, so another process can take it at once.
    fn resign(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The sorted, de-duplicated set of `event_types`, as a store records it with a checkpoint (see
/// [`ProjectionStore::record_event_types`]).
pub fn event_type_set(event_types: &[&str]) -> Vec<String> {
    let mut set: Vec<String> = event_types.iter().map(|t| (*t).to_owned()).collect();
    set.sort();
    set.dedup();
    set
}
