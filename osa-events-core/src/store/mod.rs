//! The backend seam: what a store implements so the runtime can run on it.
//!
//! The runtime talks to storage only through these traits, so the same workers run on `PgStore`
//! in production and on `InMemoryStore` (of `osa-events-testing`) in unit tests, and a new backend
//! needs no change to the runtime. A store is deliberately dumb: it claims, completes, fails,
//! extends and releases exactly what it is told. Policy (when to retry, how long to back off, when
//! to give up) lives in the worker, so every store behaves the same.
//!
//! Every write about a claimed delivery carries its [`Fence`]: the claim token handed out by
//! [`Store::claim`]. A write whose token no longer matches (the claim expired and another worker
//! took the delivery) changes nothing, and the store reports how many rows it did change.
//!
//! # Writing a backend
//!
//! A backend implements [`Store`], and offers capabilities through it, each checked by the
//! runtime at start-up (a handler that needs a capability the store lacks fails
//! [`RuntimeBuilder::build`](crate::RuntimeBuilder::build), naming the handler):
//!
//! | capability | method | what needs it |
//! | --- | --- | --- |
//! | claims, fenced writes, registration | the required methods of [`Store`] | every handler |
//! | transactions | [`Store::transactions`] → [`Transactions`], [`Transaction`] | handlers and projections taking `Tx` |
//! | leadership, ordered reads, checkpoints | [`Store::projections`] → [`ProjectionStore`], [`Leadership`] | `#[projection]`s |
//! | wake-ups | [`Store::wake_ups`] → [`WakeUps`], [`WakeSource`] | nothing: without them workers poll |
//! | per-key order | [`Store::orders_by_key`] | handlers with `ordered` |
//!
//! Publishing outside a handler is the backend's own API (for PostgreSQL, `osa_events::publish`
//! in the caller's sqlx transaction); inside one it is [`Transaction::publish`].
//!
//! Every backend must pass the contract suite of `osa-events-testing`: one rule per function in
//! `osa_events_testing::contract` (claims, fences, publishing, registration, projections,
//! transactions), all run by `osa_events_testing::store_contract_tests!`. A backend implements
//! `osa_events_testing::contract::StoreUnderTest` for its store (publishing, inspecting rows,
//! letting time pass: what the rules need beyond [`Store`]) and stamps the rules out in a test
//! module:
//!
//! ```ignore
//! mod contract {
//!     osa_events_testing::store_contract_tests!(MyStoreUnderTest::create().await);
//! }
//! ```
//!
//! Each rule becomes its own `#[tokio::test]`, so a store that breaks one sees its name. The
//! in-memory store, PostgreSQL and SQLite run every rule in this repository's CI.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::Result;
use crate::operations::{Operations, StartFrom};

mod jsonb;
mod transaction;

pub use crate::envelope::Envelopes;
pub use crate::projection::{
    Advance, Checkpoint, Leadership, OpenBatch, ProjectionStatus, ProjectionStore, ReadAhead,
    ResetTo, event_type_set,
};
pub use jsonb::jsonb_text;
pub use transaction::{Transaction, TransactionAny, Transactions};

/// The database id of a subscription (one per handler name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub i32);

/// What a handler subscribes to, as registered in the store at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The handler's unique, stable name.
    pub name: String,
    /// The event type it receives.
    pub event_type: String,
    /// Only events published with this routing key; `None` receives every key.
    pub routing_key: Option<String>,
    /// A JSON snapshot of the handler's configuration, for operators.
    pub config: serde_json::Value,
    /// The revision of what the subscription receives (its event type and routing key); 1
    /// unless re-pointed with [`RuntimeBuilder::repoint`](crate::RuntimeBuilder::repoint).
    pub revision: u32,
    /// Which earlier events a subscription created by this registration receives (ignored when
    /// it exists already).
    pub start_from: StartFrom,
    /// Whether the deliveries of one ordering key are due one at a time, in publish order, and
    /// what a dead head does (`None`: unordered). A registration stores it for the deliveries
    /// created from then on; deliveries created before keep the order they were created with.
    /// Only a store whose [`Store::orders_by_key`] is true accepts `Some`.
    pub ordered: Option<crate::Ordered>,
}

/// What registering a [`Subscription`] does to the stored one of the same name, from
/// [`Subscription::reconcile`]: the rule every [`Store::register`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconcile {
    /// Same event type and routing key at a lower revision: leave the stored row as it is (a
    /// newer deployment wrote it).
    Keep,
    /// Same event type and routing key at the same or a higher revision: store the new config
    /// snapshot and revision.
    Update,
    /// Another event type or routing key at a higher revision: re-point the subscription (event
    /// type, routing key, config and revision). Its open deliveries stay.
    Repoint,
}

impl Subscription {
    /// The revision as a store's `integer` column holds it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) naming the handler when it is 0 or above
    /// `i32::MAX`.
    pub fn stored_revision(&self) -> Result<i32> {
        i32::try_from(self.revision)
            .ok()
            .filter(|revision| *revision >= 1)
            .ok_or_else(|| {
                crate::Error::Config(
                    format!(
                        "handler `{}`: revision {} is out of range 1..={}",
                        self.name,
                        self.revision,
                        i32::MAX
                    )
                    .into(),
                )
            })
    }

    /// Logs, at WARN, that registering `self` re-points `stored` ([`Reconcile::Repoint`]): what
    /// every store says when it does.
    pub fn warn_repointed(&self, stored: &Subscription) {
        tracing::warn!(
            handler = %self.name,
            from_event_type = %stored.event_type,
            from_routing_key = ?stored.routing_key,
            from_revision = stored.revision,
            event_type = %self.event_type,
            routing_key = ?self.routing_key,
            revision = self.revision,
            "subscription re-pointed"
        );
    }

    /// Decides what registering `self` does to `stored`, the subscription of the same name
    /// already in the store.
    ///
    /// # Errors
    ///
    /// [`Error::SubscriptionConflict`](crate::Error::SubscriptionConflict) when `self` has another
    /// event type or routing key than `stored` without a higher revision.
    pub fn reconcile(&self, stored: &Subscription) -> Result<Reconcile> {
        let same = self.event_type == stored.event_type && self.routing_key == stored.routing_key;
        match (same, self.revision.cmp(&stored.revision)) {
            (true, std::cmp::Ordering::Less) => Ok(Reconcile::Keep),
            (true, _) => Ok(Reconcile::Update),
            (false, std::cmp::Ordering::Greater) => Ok(Reconcile::Repoint),
            (false, _) => Err(crate::Error::SubscriptionConflict(Box::new(
                crate::SubscriptionConflict {
                    handler: self.name.clone(),
                    stored_event_type: stored.event_type.clone(),
                    stored_routing_key: stored.routing_key.clone(),
                    stored_revision: stored.revision,
                    event_type: self.event_type.clone(),
                    routing_key: self.routing_key.clone(),
                    revision: self.revision,
                },
            ))),
        }
    }
}

/// A request to claim due deliveries of one subscription.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// Whose deliveries.
    pub subscription: SubscriptionId,
    /// At most this many.
    pub limit: u32,
    /// How long the claim lasts unless extended.
    pub claim_timeout: Duration,
    /// Who claims, recorded for operators (host, process, worker).
    pub worker: &'a str,
}

/// The proof of a claim: the delivery's position and the token its claim was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The event's position in the log (identifies the delivery within its subscription).
    pub position: i64,
    /// The claim token; a newer claim of the same delivery has another.
    pub token: Uuid,
}

/// One claimed delivery, with its event.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Position and claim token.
    pub fence: Fence,
    /// Which attempt this claim is, counting this one (the first claim is attempt 1).
    pub attempt: u32,
    /// The error of the previous failed attempt, if any.
    pub last_error: Option<String>,
    /// The event's id.
    pub event_id: Uuid,
    /// The event's type name.
    pub event_type: String,
    /// The event's payload version.
    pub event_version: i32,
    /// The routing key it was published with.
    pub routing_key: Option<String>,
    /// The payload, as JSON text.
    pub payload: String,
    /// The metadata, as JSON text.
    pub metadata: String,
    /// When the event was published (database time).
    pub published_at: SystemTime,
}

/// A failed attempt to record: retry after a delay, or dead-letter.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Which claim failed.
    pub fence: Fence,
    /// What went wrong, for the dead-letter row and operators.
    pub error: String,
    /// `Some(delay)`: pending again after `delay`. `None`: dead.
    pub retry_in: Option<Duration>,
}

impl Failure {
    /// The error as a store keeps it: every NUL character (`'\0'`), which a PostgreSQL `text`
    /// column cannot hold, replaced by U+FFFD (`�`). Every store writes this, never
    /// [`error`](Self::error) itself, so a handler error that quotes a NUL byte cannot make the
    /// failure's write fail, and every store keeps the same text.
    pub fn stored_error(&self) -> Cow<'_, str> {
        storable_text(&self.error)
    }
}

/// `text` with every NUL character replaced by U+FFFD, for a `text` column (see
/// [`Failure::stored_error`]); borrowed when there is none.
pub fn storable_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Storage of events and deliveries. Implement it to add a backend; it must pass the contract
/// suite of `osa-events-testing`.
///
/// Every method about claimed deliveries takes [`Fence`]s and changes only the rows whose claim
/// token still matches, returning how many it changed.
pub trait Store: Send + Sync + 'static {
    /// Creates or updates the subscriptions (by name) and returns their ids, in the same order.
    ///
    /// A stored subscription keeps its event type and routing key unless the new one comes with
    /// a higher revision (then it is re-pointed, and the higher revision stored). The same event
    /// type and routing key register at any revision: at a lower one the stored row is left as it
    /// is. Anything else is a conflict: the store changes nothing, for any of `subscriptions`, and
    /// fails with [`Error::SubscriptionConflict`](crate::Error::SubscriptionConflict) naming the
    /// first one.
    fn register<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> BoxFuture<'a, Result<Vec<SubscriptionId>>>;

    /// Claims up to `limit` due deliveries: pending ones whose `run_at` has come, and claimed ones
    /// whose claim has expired, oldest `run_at` first, then by position. Each claimed delivery gets
    /// a fresh token, its attempt count goes up by one, and it stays claimed until
    /// `claim_timeout` from now (store time).
    fn claim<'a>(&'a self, request: ClaimRequest<'a>) -> BoxFuture<'a, Result<Vec<Delivery>>>;

    /// Completes (removes) the deliveries whose claims are still held.
    fn complete<'a>(
        &'a self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>>;

    /// Completes `done` and claims the next batch, in one round trip where the store can (one
    /// statement, one commit for PostgreSQL). Returns how many completions were written and the
    /// new claims. The default runs [`complete`](Self::complete) then [`claim`](Self::claim).
    fn complete_and_claim<'a>(
        &'a self,
        done: &'a [Fence],
        request: ClaimRequest<'a>,
    ) -> BoxFuture<'a, Result<(u64, Vec<Delivery>)>> {
        Box::pin(async move {
            let completed = self.complete(request.subscription, done).await?;
            let claimed = self.claim(request).await?;
            Ok((completed, claimed))
        })
    }

    /// Records failed attempts of deliveries whose claims are still held: pending again after
    /// `retry_in`, or dead with the error kept.
    fn fail<'a>(
        &'a self,
        subscription: SubscriptionId,
        failures: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>>;

    /// Extends held claims to `claim_timeout` from now; returns the positions still held.
    fn extend<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
        claim_timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<i64>>>;

    /// Gives held claims back unfinished: pending and due now, and the attempt is not counted.
    fn release<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>>;

    /// Gives held claims back unfinished, with the attempt not counted, due again after each
    /// failure's `retry_in` (due now when `None`) and with its `error` kept as the delivery's last
    /// error: for work this process cannot do yet (an event version newer than its code), which
    /// should neither use up the delivery's retries nor be claimed again at once.
    ///
    /// The default records the deferrals as retryable failures with [`fail`](Self::fail), which
    /// counts the attempts: stores should override it.
    fn defer<'a>(
        &'a self,
        subscription: SubscriptionId,
        deferred: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let retries: Vec<Failure> = deferred
                .iter()
                .map(|failure| Failure {
                    retry_in: Some(failure.retry_in.unwrap_or_default()),
                    ..failure.clone()
                })
                .collect();
            self.fail(subscription, &retries).await
        })
    }

    /// Whether the store keeps the deliveries of an ordered subscription (one whose
    /// [`Subscription::ordered`] is `Some`) due one ordering key at a time: only the oldest
    /// delivery of a key is due, the next one when it is completed or deleted (or, with
    /// [`Ordered::Skip`](crate::Ordered::Skip), dead). An ordered handler on a store that does not
    /// fails [`RuntimeBuilder::build`](crate::RuntimeBuilder::build). The default is `false`.
    fn orders_by_key(&self) -> bool {
        false
    }

    /// A source of wake-ups: a hint that a subscription may have new work. `None` when the store
    /// has none; workers then rely on polling alone. Hints may be lost; polling is the safety net.
    fn wake_ups(&self) -> Option<BoxFuture<'static, Result<WakeUps>>> {
        None
    }

    /// The same store's projection side, if it runs projections (see
    /// [`ProjectionStore`]); the runtime refuses to start projections on a
    /// store without one.
    fn projections(&self) -> Option<std::sync::Arc<dyn ProjectionStore>> {
        None
    }

    /// The store's transactions, if it offers them: handlers and projections that take a
    /// `Tx` need them, and the runtime refuses to start those on a store without.
    fn transactions(&self) -> Option<&dyn Transactions> {
        None
    }

    /// Whether [`register`](Self::register) applies a new subscription's
    /// [`start_from`](Subscription::start_from) itself (a JetStream consumer's deliver policy), so
    /// that no backfill through the operations API is needed. `false` by default: the runtime then
    /// copies the history with [`Operations::backfill`].
    fn applies_start_from(&self) -> bool {
        false
    }

    /// Why the store has no transactions, for the start-up error of a handler or projection that
    /// takes a `Tx` on it (see [`transactions`](Self::transactions)).
    fn no_transactions_reason(&self) -> &'static str {
        "this store offers no transactions (`Store::transactions` is `None`)"
    }

    /// The store's [operations API](crate::operations): status, dead letters, replay, pause,
    /// retirement, retention and nodes. Every store of this repository offers it; the runtime
    /// needs it for the nodes' records, backfills and periodic retention, and skips those on a
    /// store without.
    fn operations(&self) -> Option<&dyn Operations> {
        None
    }
}

/// A stream of wake-up hints, see [`Store::wake_ups`].
pub struct WakeUps {
    inner: Box<dyn WakeSource>,
}

impl std::fmt::Debug for WakeUps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeUps").finish_non_exhaustive()
    }
}

/// What a store implements to deliver wake-up hints.
pub trait WakeSource: Send + 'static {
    /// Waits for the next hint. `Ok(Some(id))`: `id` may have work. `Ok(None)`: hints may have
    /// been lost (e.g. a reconnect), so every subscription should look. `Err`: the source failed
    /// for now; the caller retries after a pause.
    fn next(&mut self) -> BoxFuture<'_, Result<Option<SubscriptionId>>>;
}

impl WakeUps {
    /// Wraps a store's hint source.
    pub fn new(source: impl WakeSource) -> Self {
        Self {
            inner: Box::new(source),
        }
    }

    /// Waits for the next hint (see [`WakeSource::next`]).
    pub async fn next(&mut self) -> Result<Option<SubscriptionId>> {
        self.inner.next().await
    }
}
