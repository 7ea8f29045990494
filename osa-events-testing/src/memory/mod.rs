//! [`InMemoryStore`]: the [`Store`] semantics of `PgStore`, in memory, on a [`Clock`].

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use osa_events::store::{
    ClaimRequest, Delivery, Failure, Fence, Store, Subscription, SubscriptionId, WakeSource,
    WakeUps,
};
use osa_events::{Clock, Event, Outgoing, Published, Result, SystemClock};
use tokio::sync::broadcast;
use tokio::time::Instant;
use uuid::Uuid;

mod operations;
mod projections;
mod raw;
mod state;
mod time;
mod transaction;

pub use raw::RawEvent;

use state::Tables;
use time::{Epoch, Now};

/// A [`Store`] in memory, with the semantics of `PgStore`, for unit tests of handlers and of the
/// runtime.
///
/// It keeps the same three tables in the same way, and passes the same contract suite
/// ([`contract`](crate::contract)):
///
/// - **Subscriptions** are registered by name; a name keeps its id across registrations, and its
///   event type and routing key unless re-pointed at a higher revision (the rule of
///   [`Subscription::reconcile`], as in `PgStore`).
/// - **Publishing** logs each event once per id (ids are idempotency keys), in publish order, and
///   at once creates one delivery per subscription of its event type whose routing-key filter is
///   unset or equal to its key. A subscription registered later does not receive earlier events.
///   A delayed event's deliveries ([`Outgoing::deliver_after`], [`Outgoing::deliver_at`]) are due
///   at its due time by the store's clock (a wall-clock time read through it), and wake no one.
/// - **Claims** take deliveries that are not dead and whose `run_at` has come, oldest `run_at`
///   first, then by position. Each claim hands out a fresh token, counts the attempt and moves
///   `run_at` to the claim's expiry, so an expired claim is simply due again.
/// - **Fenced writes** (complete, fail, extend, release) change only claimed deliveries whose token
///   still matches, and report how many they changed.
///
/// Time is the store's [`Clock`]: [`SystemClock`] for [`new`](Self::new), or a
/// [`FakeClock`](crate::FakeClock) with [`with_clock`](Self::with_clock), which makes claim expiry
/// and backoff move only when the test advances it. It plays the part of the database's `now()`;
/// give the runtime the same clock so both agree.
///
/// Publishing is immediate, like a publish in its own committed transaction, and sends a
/// wake-up hint ([`Store::wake_ups`]) to each subscription that got work.
///
/// It runs projections too ([`ProjectionStore`](osa_events::store::ProjectionStore)): checkpoints and
/// one leader per projection name, as `PgStore` keeps them, with
/// [`depose_projection_leader`](Self::depose_projection_leader) to end a leadership as a lost
/// database session would.
///
/// It offers the operations API ([`Store::operations`]) with `PgStore`'s semantics: status,
/// deliveries and dead letters, replay, backfill of handlers that start from their history,
/// pause, retirement, retention and the nodes' records, all on the store's clock. A paused or
/// retired subscription claims nothing, and a retired one receives nothing.
///
/// It offers transactions ([`Store::transactions`]), so handlers and projections that take a `Tx`
/// run here: what they publish through it (`tx.publish(..)`) takes effect with the completion (or
/// the checkpoint) when the call succeeds, and not at all when it fails or its claim was lost.
/// Their own SQL (`&mut *tx`) needs PostgreSQL.
///
/// Cloning is cheap: clones share the same data.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use osa_events::Event;
/// use osa_events::store::{ClaimRequest, Store, Subscription};
/// use osa_events_testing::{FakeClock, InMemoryStore};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize)]
/// #[event(name = "record.published")]
/// struct RecordPublished { srn: String }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), osa_events::Error> {
/// let clock = FakeClock::new();
/// let store = InMemoryStore::with_clock(clock.clone());
/// let ids = store.register(&[Subscription {
///     name: "index.vector".into(),
///     event_type: "record.published".into(),
///     routing_key: None,
///     config: serde_json::json!({}),
///     revision: 1,
///     start_from: Default::default(),
///     ordered: None,
/// }]).await?;
/// store.publish(&RecordPublished { srn: "srn:1".into() })?;
///
/// let request = ClaimRequest {
///     subscription: ids[0],
///     limit: 10,
///     claim_timeout: Duration::from_secs(60),
///     worker: "test",
/// };
/// assert_eq!(store.claim(request).await?[0].attempt, 1);
/// assert!(store.claim(request).await?.is_empty(), "held for a minute");
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(store.claim(request).await?[0].attempt, 2, "expired, claimed again");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct InMemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    tables: Mutex<Tables>,
    clock: Arc<dyn Clock>,
    /// One reading of both clocks, to turn the store clock's instants into wall-clock times.
    epoch: Epoch,
    wake: broadcast::Sender<SubscriptionId>,
    /// Notified whenever a projection's leadership ends, for those waiting to take it.
    leadership_freed: tokio::sync::Notify,
}

/// The state of a delivery, as in the `status` column of `PgStore`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for its `run_at`, or due.
    Pending,
    /// Claimed by a worker. It stays `Claimed` after its claim expires, until claimed again or
    /// written to, exactly as in `PgStore`.
    Claimed,
    /// A dead letter: never claimed again; its last error is kept.
    Dead,
    /// Held back behind an earlier delivery of its ordering key (an ordered subscription's):
    /// pending once every earlier one of its key has left.
    Waiting,
}

/// One delivery row, for tests to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryInfo {
    /// Whose delivery.
    pub subscription: SubscriptionId,
    /// The event's position in the log.
    pub position: i64,
    /// The event's id.
    pub event_id: Uuid,
    /// The event's type name.
    pub event_type: String,
    /// Pending, claimed or dead.
    pub status: DeliveryStatus,
    /// Attempts so far, counted at claim.
    pub attempts: u32,
    /// When it is next due: its backoff for a pending row, its claim's expiry for a claimed one.
    pub run_at: Instant,
    /// The worker of the current or last claim, while claimed.
    pub claimed_by: Option<String>,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
}

impl InMemoryStore {
    /// An empty store on the [`SystemClock`] (tokio's time, so it follows
    /// [`tokio::time::pause`](https://docs.rs/tokio/1/tokio/time/fn.pause.html) too).
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }

    /// An empty store whose notion of now is `clock`, typically a [`FakeClock`](crate::FakeClock).
    pub fn with_clock(clock: impl Clock) -> Self {
        let epoch = Epoch::at(clock.now());
        Self {
            shared: Arc::new(Shared {
                tables: Mutex::new(Tables::default()),
                clock: Arc::new(clock),
                epoch,
                wake: broadcast::Sender::new(1024),
                leadership_freed: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Publishes `event` with no routing key and returns its id, like [`osa_events::publish`].
    ///
    /// # Errors
    ///
    /// As for [`RawEvent::new`]: the event cannot be serialized, its payload is too large, or it
    /// holds a NUL character.
    /// Nothing is published then.
    pub fn publish<E: Event>(&self, event: &E) -> Result<Uuid> {
        let outgoing = Outgoing::new(event)?;
        self.publish_batch(std::slice::from_ref(&outgoing));
        Ok(outgoing.id())
    }

    /// Publishes `event` with a routing key and returns its id, like
    /// [`osa_events::publish_routed`].
    ///
    /// # Errors
    ///
    /// As for [`RawEvent::new`]: the event cannot be serialized, its payload is too large, or it
    /// holds a NUL character.
    /// Nothing is published then.
    pub fn publish_routed<E: Event>(&self, routing_key: &str, event: &E) -> Result<Uuid> {
        let outgoing = Outgoing::new(event)?.with_routing_key(routing_key);
        self.publish_batch(std::slice::from_ref(&outgoing));
        Ok(outgoing.id())
    }

    /// Publishes a batch at once, like [`osa_events::publish_batch`] in its own transaction, and
    /// returns how many events were new (ids already logged are skipped). Wakes each subscription
    /// that got work once.
    ///
    /// # Examples
    ///
    /// ```
    /// use osa_events::{Event, Outgoing};
    /// use osa_events_testing::InMemoryStore;
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Event, Serialize, Deserialize)]
    /// # #[event(name = "record.published")]
    /// # struct RecordPublished { srn: String }
    ///
    /// let store = InMemoryStore::new();
    /// let batch = (0..3)
    ///     .map(|i| Outgoing::new(&RecordPublished { srn: format!("srn:{i}") }))
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// assert_eq!(store.publish_batch(&batch), 3);
    /// assert_eq!(store.publish_batch(&batch), 0, "ids are idempotency keys");
    /// # Ok::<(), osa_events::Error>(())
    /// ```
    pub fn publish_batch(&self, events: &[Outgoing]) -> u64 {
        let (envelopes, raw) = RawEvent::stamped(events);
        let _entered = envelopes.span().enter();
        let published = self.publish_logged(&raw);
        envelopes.finish(&Ok(published));
        published.events
    }

    /// Publishes a batch of [`RawEvent`]s at once, as [`publish_batch`](Self::publish_batch)
    /// does, and returns how many were new. Their metadata is stored as it is: nothing is
    /// stamped on it.
    pub fn publish_raw(&self, events: &[RawEvent]) -> u64 {
        self.publish_logged(events).events
    }

    fn publish_logged(&self, events: &[RawEvent]) -> Published {
        let (published, deliveries, woken) = self.tables().publish(events, self.now_at());
        self.wake(woken);
        Published::new(published, deliveries)
    }

    /// Sends a wake-up hint to each of `subscriptions`.
    fn wake(&self, subscriptions: impl IntoIterator<Item = SubscriptionId>) {
        for subscription in subscriptions {
            // No receiver: nobody is listening, which is fine.
            let _ = self.shared.wake.send(subscription);
        }
    }

    /// Every delivery of `subscription` (pending, claimed and dead), by position. Completed
    /// deliveries are gone.
    pub fn deliveries(&self, subscription: SubscriptionId) -> Vec<DeliveryInfo> {
        self.tables().deliveries(subscription)
    }

    /// The dead letters of `subscription`, by position.
    pub fn dead_letters(&self, subscription: SubscriptionId) -> Vec<DeliveryInfo> {
        let mut deliveries = self.deliveries(subscription);
        deliveries.retain(|delivery| delivery.status == DeliveryStatus::Dead);
        deliveries
    }

    /// How many deliveries of `subscription` are in `status`, or in any status for `None`.
    pub fn count(&self, subscription: SubscriptionId, status: Option<DeliveryStatus>) -> usize {
        self.deliveries(subscription)
            .iter()
            .filter(|delivery| status.is_none_or(|status| delivery.status == status))
            .count()
    }

    /// Every event logged so far, in publish order (an event's position is its index plus one),
    /// as stored: payloads and metadata normalised as `jsonb` returns them (see
    /// [`RawEvent::payload`]).
    pub fn events(&self) -> Vec<RawEvent> {
        self.tables().events()
    }

    /// The id of the subscription registered as `name`.
    pub fn subscription_id(&self, name: &str) -> Option<SubscriptionId> {
        self.tables().subscription_id(name)
    }

    fn now(&self) -> Instant {
        self.shared.clock.now()
    }

    /// The wall-clock time of the store clock's `instant` (for `Delivery::published_at`).
    fn wall_time(&self, instant: Instant) -> SystemTime {
        self.shared.epoch.wall(instant)
    }

    /// The store's now, with its wall-clock mapping, for the operations.
    fn now_at(&self) -> Now {
        Now::new(self.now(), self.shared.epoch)
    }

    fn tables(&self) -> TablesGuard<'_> {
        // The tables are only changed by code that does not panic midway; a test that panicked
        // while another thread held the lock should not make every later call panic too.
        TablesGuard {
            tables: self
                .shared
                .tables
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            wake: &self.shared.wake,
        }
    }
}

/// The tables under the store's lock. When it is released, the subscriptions that a write made
/// work due for without a publish (the next delivery of an ordering key, after its head left)
/// are woken, as `PgStore`'s triggers notify: every write path is covered, whichever it was.
struct TablesGuard<'a> {
    tables: MutexGuard<'a, Tables>,
    wake: &'a broadcast::Sender<SubscriptionId>,
}

impl std::ops::Deref for TablesGuard<'_> {
    type Target = Tables;

    fn deref(&self) -> &Tables {
        &self.tables
    }
}

impl std::ops::DerefMut for TablesGuard<'_> {
    fn deref_mut(&mut self) -> &mut Tables {
        &mut self.tables
    }
}

impl Drop for TablesGuard<'_> {
    fn drop(&mut self) {
        for subscription in self.tables.take_woken() {
            // No receiver: nobody is listening, which is fine.
            let _ = self.wake.send(subscription);
        }
    }
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryStore")
            .field("clock", &self.shared.clock)
            .field("tables", &*self.tables())
            .finish()
    }
}

impl Store for InMemoryStore {
    fn register<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> BoxFuture<'a, Result<Vec<SubscriptionId>>> {
        Box::pin(async move {
            let now = self.now();
            self.tables().register(subscriptions, now)
        })
    }

    fn claim<'a>(&'a self, request: ClaimRequest<'a>) -> BoxFuture<'a, Result<Vec<Delivery>>> {
        Box::pin(async move {
            let now = self.now();
            Ok(self.tables().claim(request, now))
        })
    }

    fn complete<'a>(
        &'a self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let now = self.now();
            Ok(self.tables().complete(subscription, done, now))
        })
    }

    /// Both under one lock, completion first: what this call completes is never claimed by it.
    fn complete_and_claim<'a>(
        &'a self,
        done: &'a [Fence],
        request: ClaimRequest<'a>,
    ) -> BoxFuture<'a, Result<(u64, Vec<Delivery>)>> {
        Box::pin(async move {
            let now = self.now();
            let mut tables = self.tables();
            let completed = tables.complete(request.subscription, done, now);
            Ok((completed, tables.claim(request, now)))
        })
    }

    fn fail<'a>(
        &'a self,
        subscription: SubscriptionId,
        failures: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let now = self.now();
            Ok(self.tables().fail(subscription, failures, now))
        })
    }

    fn extend<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
        claim_timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<i64>>> {
        Box::pin(async move {
            let now = self.now();
            Ok(self
                .tables()
                .extend(subscription, claims, claim_timeout, now))
        })
    }

    fn release<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let now = self.now();
            Ok(self.tables().release(subscription, claims, now))
        })
    }

    fn defer<'a>(
        &'a self,
        subscription: SubscriptionId,
        deferred: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let now = self.now();
            Ok(self.tables().defer(subscription, deferred, now))
        })
    }

    fn projections(&self) -> Option<Arc<dyn osa_events::store::ProjectionStore>> {
        Some(Arc::new(self.clone()))
    }

    /// Transactions that buffer their publishes and completions and apply them together when
    /// they commit; a dropped one leaves no trace.
    fn transactions(&self) -> Option<&dyn osa_events::store::Transactions> {
        Some(self)
    }

    /// As `PgStore`'s triggers do (see `state/ordering.rs`).
    fn orders_by_key(&self) -> bool {
        true
    }

    /// Status, dead letters, replay, pause, retirement, retention and nodes, over these tables
    /// (see `operations.rs`).
    fn operations(&self) -> Option<&dyn osa_events::operations::Operations> {
        Some(self)
    }

    /// Hints from [`publish`](InMemoryStore::publish) and its siblings, one per subscription
    /// that got work, delivered at once. Listening starts when this is called, so a publish right
    /// after the call is not missed. A listener that falls more than 1024 hints behind gets
    /// `Ok(None)` ("look everywhere") instead of the hints it missed.
    fn wake_ups(&self) -> Option<BoxFuture<'static, Result<WakeUps>>> {
        let source = BroadcastWakeSource {
            hints: self.shared.wake.subscribe(),
        };
        Some(Box::pin(std::future::ready(Ok(WakeUps::new(source)))))
    }
}

/// Wake-ups of an in-memory store: a broadcast of subscription ids.
struct BroadcastWakeSource {
    hints: broadcast::Receiver<SubscriptionId>,
}

impl WakeSource for BroadcastWakeSource {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<SubscriptionId>>> {
        Box::pin(async move {
            match self.hints.recv().await {
                Ok(subscription) => Ok(Some(subscription)),
                Err(broadcast::error::RecvError::Lagged(_)) => Ok(None),
                // Every store handle is gone: no hint will ever come again.
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        })
    }
}

#[cfg(test)]
mod tests;
