//! The tables of the in-memory store and the operations on them, each the counterpart of one
//! statement of `PgStore`. Every operation takes the store's `now`, so it is plain synchronous
//! code over plain data, run under the store's lock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use osa_events::Due;
use osa_events::operations::{ActivityBucket, NodeRecord};
use osa_events::store::{ClaimRequest, Delivery, Failure, Fence, Subscription, SubscriptionId};
use tokio::time::Instant;
use uuid::Uuid;

use super::{DeliveryInfo, DeliveryStatus, Now, RawEvent};

mod lifecycle;
mod operations;
mod ordering;
mod projections;

use lifecycle::Lifecycle;

/// The event log, subscriptions and deliveries, as in the `osa_events` schema.
#[derive(Debug, Default)]
pub(super) struct Tables {
    /// By id; ids are handed out from 1 and never reused.
    subscriptions: BTreeMap<SubscriptionId, Subscription>,
    /// What operators do to each subscription (created, paused, retired, backfilled, last
    /// error), by id: one entry per subscription (see `lifecycle.rs`).
    lifecycles: BTreeMap<SubscriptionId, Lifecycle>,
    /// By position, from 1 in publish order; a pruned event leaves a gap, as in the table.
    events: BTreeMap<i64, LoggedEvent>,
    /// The last position handed out (the counterpart of the position sequence).
    last_position: i64,
    event_ids: HashSet<Uuid>,
    /// Open work and dead letters, by (subscription, position), like the primary key.
    deliveries: BTreeMap<(SubscriptionId, i64), Row>,
    /// The rows that are not dead, by (run_at, position) per subscription: the counterpart of the
    /// partial index `deliveries_claimable`, so a claim reads only what it takes, whatever the
    /// number of rows. Kept in step with every change of a row's status or `run_at`.
    claimable: HashMap<SubscriptionId, BTreeSet<(Instant, i64)>>,
    /// The ordering keys that have a head or waiting deliveries, by (subscription, key): the
    /// counterpart of the `ordering_keys` table (see `ordering.rs`).
    ordering_keys: HashMap<(SubscriptionId, String), ordering::KeyState>,
    /// Subscriptions whose work was made due by a write other than a publish (the next delivery
    /// of an ordering key), for the store to wake once the write is done.
    woken: BTreeSet<SubscriptionId>,
    /// How many publishes have logged events: the counterpart of the publishing transaction id.
    commits: u64,
    /// Projection checkpoints and leaders, by name (see `projections.rs`).
    projections: BTreeMap<String, projections::ProjectionRow>,
    /// Runtime instances, by id, with when each was last seen (see `operations/nodes.rs`).
    nodes: BTreeMap<Uuid, (NodeRecord, Instant)>,
    /// The activity history's buckets, by (kind, name, minute) like the table's key, so they
    /// are listed in the API's order (see `operations/activity.rs`).
    activity: BTreeMap<(&'static str, String, SystemTime), ActivityBucket>,
}

#[derive(Debug)]
struct LoggedEvent {
    raw: RawEvent,
    published_at: SystemTime,
    /// When its deliveries became due, if it was published delayed (`events.deliver_at`): a copy
    /// of the history gives it no earlier due time.
    deliver_at: Option<Instant>,
    /// The publish that logged it (all events of one publish share it), as PostgreSQL's
    /// `commit_seq`: publishes are atomic and in order here, so it grows with the position.
    commit: u64,
}

impl LoggedEvent {
    /// The event at `position`, as handed to a handler.
    fn delivery(&self, fence: Fence, attempt: u32, last_error: Option<String>) -> Delivery {
        Delivery {
            fence,
            attempt,
            last_error,
            event_id: self.raw.id,
            event_type: self.raw.event_type.clone(),
            event_version: self.raw.event_version,
            routing_key: self.raw.routing_key.clone(),
            payload: self.raw.payload.clone(),
            metadata: self.raw.metadata.clone().unwrap_or_else(|| "{}".to_owned()),
            published_at: self.published_at,
        }
    }
}

/// A delivery row. While claimed, `run_at` is the claim's expiry, so an expired claim is simply
/// due again, as in `PgStore`.
#[derive(Debug)]
struct Row {
    status: DeliveryStatus,
    attempts: u32,
    run_at: Instant,
    claim_token: Option<Uuid>,
    claimed_by: Option<String>,
    /// When the current claim was taken (extensions move `run_at`, not this).
    claimed_at: Option<Instant>,
    last_error: Option<String>,
    /// When its state last changed: created, claimed, failed, released, deferred or retried.
    updated_at: Instant,
    /// The event's ordering key, for an ordered subscription's delivery.
    ordering_key: Option<String>,
    /// Its place in its key; `None` for a dead letter that left its key (`ordered = "skip"`).
    key_seq: Option<u64>,
}

impl Row {
    /// A fresh delivery, pending and due at `run_at`, created at `now`, with `ordering_key`
    /// (it joins the key when inserted with [`Tables::insert_delivery`]).
    fn pending(run_at: Instant, now: Instant, ordering_key: Option<String>) -> Self {
        Self {
            status: DeliveryStatus::Pending,
            attempts: 0,
            run_at,
            claim_token: None,
            claimed_by: None,
            claimed_at: None,
            last_error: None,
            updated_at: now,
            ordering_key,
            key_seq: None,
        }
    }

    /// Ends the claim fields (token, worker, time) and records the change at `now`.
    fn unclaim(&mut self, now: Instant) {
        self.claim_token = None;
        self.claimed_by = None;
        self.claimed_at = None;
        self.updated_at = now;
    }

    /// Whether a fenced write may touch this row: it is claimed, by this token.
    fn held_by(&self, token: Uuid) -> bool {
        self.status == DeliveryStatus::Claimed && self.claim_token == Some(token)
    }
}

/// `at + duration`, saturating at a moment no test reaches instead of overflowing.
pub(super) fn later(at: Instant, duration: Duration) -> Instant {
    const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
    at.checked_add(duration.min(FOREVER))
        .unwrap_or_else(|| at + Duration::from_secs(1))
}

/// Whether a row in `status` is in the claimable index: pending or claimed, not dead nor
/// waiting behind its ordering key.
fn claimable(status: DeliveryStatus) -> bool {
    matches!(status, DeliveryStatus::Pending | DeliveryStatus::Claimed)
}

/// Sets a row's status and `run_at`, keeping the claimable index in step.
fn reschedule(
    claimable_index: &mut HashMap<SubscriptionId, BTreeSet<(Instant, i64)>>,
    (subscription, position): (SubscriptionId, i64),
    row: &mut Row,
    status: DeliveryStatus,
    run_at: Instant,
) {
    let index = claimable_index.entry(subscription).or_default();
    if claimable(row.status) {
        index.remove(&(row.run_at, position));
    }
    row.status = status;
    row.run_at = run_at;
    if claimable(status) {
        index.insert((run_at, position));
    }
}

/// Whether `subscription` gets a delivery of `raw`: its event type, and its routing-key filter
/// unset or equal to the event's key.
fn receives(subscription: &Subscription, raw: &RawEvent) -> bool {
    subscription.event_type == raw.event_type
        && subscription
            .routing_key
            .as_ref()
            .is_none_or(|key| raw.routing_key.as_ref() == Some(key))
}

/// Whether the subscription `id` is retired (it then receives nothing).
fn retired(lifecycles: &BTreeMap<SubscriptionId, Lifecycle>, id: SubscriptionId) -> bool {
    lifecycles
        .get(&id)
        .is_some_and(|lifecycle| lifecycle.retired_at.is_some())
}

/// The row of `fence` if its claim is still held.
fn held(
    deliveries: &mut BTreeMap<(SubscriptionId, i64), Row>,
    subscription: SubscriptionId,
    fence: Fence,
) -> Option<&mut Row> {
    deliveries
        .get_mut(&(subscription, fence.position))
        .filter(|row| row.held_by(fence.token))
}

impl Tables {
    /// Appends the new events in order and fans each out to the subscriptions of its type whose
    /// routing-key filter is unset or equal to its key. Ids already logged, earlier or in this
    /// batch, are skipped. Returns how many events were new, how many deliveries they got, and
    /// the subscriptions that got work.
    ///
    /// A delayed event's deliveries are due at its due time (a time past: now), and wake no one.
    pub(super) fn publish(
        &mut self,
        events: &[RawEvent],
        at: Now,
    ) -> (u64, u64, BTreeSet<SubscriptionId>) {
        let now = at.instant;
        let mut published = 0;
        let mut deliveries = 0;
        let mut woken = BTreeSet::new();
        let commit = self.commits + 1;
        for raw in events {
            if !self.event_ids.insert(raw.id) {
                continue;
            }
            self.last_position += 1;
            let position = self.last_position;
            let deliver_at = match raw.due {
                Due::Now => None,
                Due::After(delay) => Some(later(now, delay)),
                Due::At(time) => Some(at.instant_of(time)),
            };
            let run_at = deliver_at.map_or(now, |deliver_at| deliver_at.max(now));
            self.events.insert(
                position,
                LoggedEvent {
                    raw: stored(raw),
                    published_at: at.wall(),
                    deliver_at,
                    commit,
                },
            );
            published += 1;
            let receiving: Vec<(SubscriptionId, bool)> = self
                .subscriptions
                .iter()
                .filter(|(id, subscription)| {
                    receives(subscription, raw) && !retired(&self.lifecycles, **id)
                })
                .map(|(id, subscription)| (*id, subscription.ordered.is_some()))
                .collect();
            for (id, ordered) in receiving {
                let ordering_key = raw.ordering_key.clone().filter(|_| ordered);
                self.insert_delivery((id, position), Row::pending(run_at, now, ordering_key));
                deliveries += 1;
                if run_at <= now {
                    woken.insert(id);
                }
            }
        }
        if published > 0 {
            self.commits = commit;
        }
        (published, deliveries, woken)
    }

    /// What publishing `events` now would create: the events whose id is not logged (nor earlier
    /// in `events`), and one delivery per matching subscription of each.
    pub(super) fn would_publish(&self, events: &[RawEvent]) -> (u64, u64) {
        let mut seen = std::collections::HashSet::new();
        let (mut published, mut deliveries) = (0, 0);
        for raw in events {
            if self.event_ids.contains(&raw.id) || !seen.insert(raw.id) {
                continue;
            }
            published += 1;
            deliveries += self
                .subscriptions
                .iter()
                .filter(|(id, subscription)| {
                    receives(subscription, raw) && !retired(&self.lifecycles, **id)
                })
                .count() as u64;
        }
        (published, deliveries)
    }

    /// How many of `fences` still hold their claims (the check of [`complete`](Self::complete),
    /// without the removal).
    pub(super) fn held_count(&self, subscription: SubscriptionId, fences: &[Fence]) -> u64 {
        fences
            .iter()
            .filter(|fence| {
                self.deliveries
                    .get(&(subscription, fence.position))
                    .is_some_and(|row| row.held_by(fence.token))
            })
            .count() as u64
    }

    /// Claims up to `limit` rows that are not dead and due (`run_at <= now`), by `(run_at,
    /// position)`: a fresh token each, the attempt counted, `run_at` moved to the claim's expiry.
    /// A paused or retired subscription claims nothing.
    pub(super) fn claim(&mut self, request: ClaimRequest<'_>, now: Instant) -> Vec<Delivery> {
        let subscription = request.subscription;
        if self
            .lifecycles
            .get(&subscription)
            .is_some_and(Lifecycle::holds_claims)
        {
            return Vec::new();
        }
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let due: Vec<(Instant, i64)> = self
            .claimable
            .get(&subscription)
            .map(|index| {
                index
                    .iter()
                    .take_while(|(run_at, _)| *run_at <= now)
                    .take(limit)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();

        let expires = later(now, request.claim_timeout);
        due.into_iter()
            .map(|(_, position)| {
                let row = self
                    .deliveries
                    .get_mut(&(subscription, position))
                    .expect("a row just found");
                let token = Uuid::new_v4();
                reschedule(
                    &mut self.claimable,
                    (subscription, position),
                    row,
                    DeliveryStatus::Claimed,
                    expires,
                );
                row.attempts = row.attempts.saturating_add(1);
                row.claim_token = Some(token);
                row.claimed_by = Some(request.worker.to_owned());
                row.claimed_at = Some(now);
                row.updated_at = now;
                let logged = &self.events[&position];
                logged.delivery(
                    Fence { position, token },
                    row.attempts,
                    row.last_error.clone(),
                )
            })
            .collect()
    }

    /// Removes the rows still held by these fences (the next delivery of an ordering key is due
    /// at `now`).
    pub(super) fn complete(
        &mut self,
        subscription: SubscriptionId,
        done: &[Fence],
        now: Instant,
    ) -> u64 {
        let mut completed = 0;
        for fence in done {
            let key = (subscription, fence.position);
            if self
                .deliveries
                .get(&key)
                .is_some_and(|row| row.held_by(fence.token))
                && self.remove_delivery(key, now).is_some()
            {
                completed += 1;
            }
        }
        completed
    }

    /// Pending at `now + retry_in`, or dead at `now`; the error is kept either way. When any was
    /// written, the subscription keeps the last error given as its latest, as `fail_deliveries`
    /// does.
    pub(super) fn fail(
        &mut self,
        subscription: SubscriptionId,
        failures: &[Failure],
        now: Instant,
    ) -> u64 {
        let mut failed = 0;
        for failure in failures {
            let Some(row) = held(&mut self.deliveries, subscription, failure.fence) else {
                continue;
            };
            let (status, run_at) = match failure.retry_in {
                Some(delay) => (DeliveryStatus::Pending, later(now, delay)),
                None => (DeliveryStatus::Dead, now),
            };
            let key = (subscription, failure.fence.position);
            reschedule(&mut self.claimable, key, row, status, run_at);
            row.last_error = Some(failure.stored_error().into_owned());
            row.unclaim(now);
            if status == DeliveryStatus::Dead {
                self.died(key, now);
            }
            failed += 1;
        }
        if failed > 0
            && let Some(last) = failures.last()
            && let Some(lifecycle) = self.lifecycles.get_mut(&subscription)
        {
            lifecycle.last_error = Some((last.stored_error().into_owned(), now));
        }
        failed
    }

    /// Moves the expiry of held claims to `now + claim_timeout`; returns the positions held.
    pub(super) fn extend(
        &mut self,
        subscription: SubscriptionId,
        claims: &[Fence],
        claim_timeout: Duration,
        now: Instant,
    ) -> Vec<i64> {
        let mut still_held = Vec::new();
        for fence in claims {
            if let Some(row) = held(&mut self.deliveries, subscription, *fence) {
                let key = (subscription, fence.position);
                let expires = later(now, claim_timeout);
                reschedule(
                    &mut self.claimable,
                    key,
                    row,
                    DeliveryStatus::Claimed,
                    expires,
                );
                still_held.push(fence.position);
            }
        }
        still_held
    }

    /// Pending and due now, with the attempt given back.
    pub(super) fn release(
        &mut self,
        subscription: SubscriptionId,
        claims: &[Fence],
        now: Instant,
    ) -> u64 {
        let mut released = 0;
        for fence in claims {
            if let Some(row) = held(&mut self.deliveries, subscription, *fence) {
                let key = (subscription, fence.position);
                reschedule(&mut self.claimable, key, row, DeliveryStatus::Pending, now);
                row.attempts = row.attempts.saturating_sub(1);
                row.unclaim(now);
                released += 1;
            }
        }
        released
    }

    /// Gives held claims back: pending after each delay, with the reason kept and the attempt
    /// given back.
    pub(super) fn defer(
        &mut self,
        subscription: SubscriptionId,
        deferred: &[Failure],
        now: Instant,
    ) -> u64 {
        let mut done = 0;
        for failure in deferred {
            let Some(row) = held(&mut self.deliveries, subscription, failure.fence) else {
                continue;
            };
            let run_at = later(now, failure.retry_in.unwrap_or_default());
            let key = (subscription, failure.fence.position);
            reschedule(
                &mut self.claimable,
                key,
                row,
                DeliveryStatus::Pending,
                run_at,
            );
            row.attempts = row.attempts.saturating_sub(1);
            row.last_error = Some(failure.stored_error().into_owned());
            row.unclaim(now);
            done += 1;
        }
        done
    }

    /// The subscriptions made due by writes since the last call (see [`Tables::woken`]).
    pub(super) fn take_woken(&mut self) -> BTreeSet<SubscriptionId> {
        std::mem::take(&mut self.woken)
    }

    /// Every row of `subscription`, by position.
    pub(super) fn deliveries(&self, subscription: SubscriptionId) -> Vec<DeliveryInfo> {
        self.rows_of(subscription)
            .map(|(position, row)| {
                let logged = &self.events[&position];
                DeliveryInfo {
                    subscription,
                    position,
                    event_id: logged.raw.id,
                    event_type: logged.raw.event_type.clone(),
                    status: row.status,
                    attempts: row.attempts,
                    run_at: row.run_at,
                    claimed_by: row.claimed_by.clone(),
                    last_error: row.last_error.clone(),
                }
            })
            .collect()
    }

    /// The id of the subscription named `name`.
    pub(super) fn subscription_id(&self, name: &str) -> Option<SubscriptionId> {
        self.subscriptions
            .iter()
            .find(|(_, subscription)| subscription.name == name)
            .map(|(id, _)| *id)
    }

    /// Every event still logged, in publish order.
    pub(super) fn events(&self) -> Vec<RawEvent> {
        self.events
            .values()
            .map(|logged| logged.raw.clone())
            .collect()
    }

    /// Whether the subscription `id` is retired.
    fn is_retired(&self, id: SubscriptionId) -> bool {
        retired(&self.lifecycles, id)
    }

    fn rows_of(&self, subscription: SubscriptionId) -> impl Iterator<Item = (i64, &Row)> {
        self.deliveries
            .range((subscription, i64::MIN)..=(subscription, i64::MAX))
            .map(|(&(_, position), row)| (position, row))
    }
}

/// `raw` as PostgreSQL stores it: payload and metadata normalised as `jsonb` returns them (keys
/// ordered, the last of duplicate keys kept, numbers as `numeric` prints them). Text that is not
/// JSON, which PostgreSQL would refuse, is kept as written.
fn stored(raw: &RawEvent) -> RawEvent {
    let mut stored = raw.clone();
    if let Some(payload) = osa_events::store::jsonb_text(&raw.payload) {
        stored.payload = payload;
    }
    if let Some(metadata) = raw
        .metadata
        .as_deref()
        .and_then(osa_events::store::jsonb_text)
    {
        stored.metadata = Some(metadata);
    }
    stored
}
