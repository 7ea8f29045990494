//! The activity history as a running runtime keeps it: a handler's completed, retried and
//! dead-lettered deliveries and a projection's applied events reach `Operations::activity` at
//! the next node heartbeat, a flush the store refuses goes again at the one after with nothing
//! lost, and what was counted since the last heartbeat is flushed when the runtime stops. On the
//! in-memory store behind a wrapper that refuses `record_activity` on demand, with a fake clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use osa_events::operations::{
    ActivityBucket, ActivityDelta, ActivityKind, BackfillStep, DeliveryDetail, DeliveryPage,
    DeliveryQuery, NodeRecord, NodeStatus, Operations, Prune, PruneStep, Replay, ReplayStep,
    RetireMode, Retired, Selector, Status, SubscriptionInfo,
};
use osa_events::prelude::*;
use osa_events::store::{
    ClaimRequest, Delivery, Failure, Fence, ProjectionStore, Store, Subscription, SubscriptionId,
    WakeUps,
};
use osa_events::{CancellationToken, Outgoing, ProjectionStatus, Result, Runtime};
use osa_events_testing::contract::DeliveryStatus;
use osa_events_testing::{FakeClock, InMemoryStore};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// What `activity.handler` does with a job.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
enum Fate {
    Complete,
    /// Fails retryably (its retry is an hour away, past the test's end).
    Retry,
    /// Fails permanently: a dead letter.
    Die,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "activity.test.job")]
struct Job {
    fate: Fate,
}

#[event_handler(
    name = "activity.handler",
    batch = 10,
    retries = 5,
    backoff = "1h",
    max_backoff = "1h"
)]
async fn handler(job: Job) -> Result<(), HandlerError> {
    match job.fate {
        Fate::Complete => Ok(()),
        Fate::Retry => Err(HandlerError::retry("not yet")),
        Fate::Die => Err(HandlerError::permanent("never")),
    }
}

#[projection(name = "activity.projection", poll = "1s")]
async fn projection(_jobs: Batch<Job>) -> Result<(), HandlerError> {
    Ok(())
}

/// The in-memory store, whose `record_activity` fails while `refusing` is set; counts the calls.
#[derive(Clone)]
struct Refusing {
    inner: InMemoryStore,
    refusing: Arc<AtomicBool>,
    records: Arc<AtomicU32>,
}

impl Store for Refusing {
    fn register<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> BoxFuture<'a, Result<Vec<SubscriptionId>>> {
        self.inner.register(subscriptions)
    }

    fn claim<'a>(&'a self, request: ClaimRequest<'a>) -> BoxFuture<'a, Result<Vec<Delivery>>> {
        self.inner.claim(request)
    }

    fn complete<'a>(
        &'a self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        self.inner.complete(subscription, done)
    }

    fn fail<'a>(
        &'a self,
        subscription: SubscriptionId,
        failures: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>> {
        self.inner.fail(subscription, failures)
    }

    fn extend<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
        claim_timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<i64>>> {
        self.inner.extend(subscription, claims, claim_timeout)
    }

    fn release<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        self.inner.release(subscription, claims)
    }

    fn wake_ups(&self) -> Option<BoxFuture<'static, Result<WakeUps>>> {
        self.inner.wake_ups()
    }

    fn projections(&self) -> Option<Arc<dyn ProjectionStore>> {
        Store::projections(&self.inner)
    }

    fn operations(&self) -> Option<&dyn Operations> {
        Some(self)
    }
}

/// The in-memory store's operations, but for `record_activity` while refusing.
impl Operations for Refusing {
    fn record_activity<'a>(&'a self, deltas: &'a [ActivityDelta]) -> BoxFuture<'a, Result<()>> {
        self.records.fetch_add(1, Ordering::SeqCst);
        if self.refusing.load(Ordering::SeqCst) {
            return Box::pin(async {
                Err(osa_events::Error::Database(
                    std::io::Error::other("connection refused").into(),
                ))
            });
        }
        Operations::record_activity(&self.inner, deltas)
    }

    fn activity<'a>(&'a self, since: SystemTime) -> BoxFuture<'a, Result<Vec<ActivityBucket>>> {
        Operations::activity(&self.inner, since)
    }

    fn status(&self) -> BoxFuture<'_, Result<Status>> {
        Operations::status(&self.inner)
    }

    fn deliveries<'a>(&'a self, query: &'a DeliveryQuery) -> BoxFuture<'a, Result<DeliveryPage>> {
        Operations::deliveries(&self.inner, query)
    }

    fn delivery<'a>(
        &'a self,
        handler: &'a str,
        position: i64,
    ) -> BoxFuture<'a, Result<Option<DeliveryDetail>>> {
        Operations::delivery(&self.inner, handler, position)
    }

    fn retry_dead<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<u64>> {
        Operations::retry_dead(&self.inner, selector)
    }

    fn purge_dead<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<u64>> {
        Operations::purge_dead(&self.inner, selector)
    }

    fn cancel_pending<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<u64>> {
        Operations::cancel_pending(&self.inner, selector)
    }

    fn replay<'a>(
        &'a self,
        replay: &'a Replay,
        after: i64,
        end: Option<i64>,
    ) -> BoxFuture<'a, Result<ReplayStep>> {
        Operations::replay(&self.inner, replay, after, end)
    }

    fn pause<'a>(&'a self, handler: &'a str) -> BoxFuture<'a, Result<bool>> {
        Operations::pause(&self.inner, handler)
    }

    fn resume<'a>(&'a self, handler: &'a str) -> BoxFuture<'a, Result<bool>> {
        Operations::resume(&self.inner, handler)
    }

    fn backfill<'a>(&'a self, handler: &'a str, chunk: u32) -> BoxFuture<'a, Result<BackfillStep>> {
        Operations::backfill(&self.inner, handler, chunk)
    }

    fn subscriptions(&self) -> BoxFuture<'_, Result<Vec<SubscriptionInfo>>> {
        Operations::subscriptions(&self.inner)
    }

    fn retire<'a>(&'a self, handler: &'a str, mode: RetireMode) -> BoxFuture<'a, Result<Retired>> {
        Operations::retire(&self.inner, handler, mode)
    }

    fn prune<'a>(&'a self, prune: &'a Prune, after: i64) -> BoxFuture<'a, Result<PruneStep>> {
        Operations::prune(&self.inner, prune, after)
    }

    fn record_node<'a>(&'a self, node: &'a NodeRecord) -> BoxFuture<'a, Result<()>> {
        Operations::record_node(&self.inner, node)
    }

    fn remove_node(&self, id: Uuid) -> BoxFuture<'_, Result<()>> {
        Operations::remove_node(&self.inner, id)
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeStatus>>> {
        Operations::nodes(&self.inner)
    }

    fn projections(&self) -> BoxFuture<'_, Result<Vec<ProjectionStatus>>> {
        Operations::projections(&self.inner)
    }
}

/// Waits up to 10 s (real time) for `condition`.
async fn until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let started = std::time::Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Every bucket, as (kind, name, handled, failed, dead), summed over the minutes.
async fn totals(store: &InMemoryStore) -> Vec<(ActivityKind, String, u64, u64, u64)> {
    let mut totals: Vec<(ActivityKind, String, u64, u64, u64)> = Vec::new();
    for bucket in store.activity(SystemTime::UNIX_EPOCH).await.unwrap() {
        match totals.last_mut() {
            Some(total) if total.0 == bucket.kind && total.1 == bucket.name => {
                total.2 += bucket.handled;
                total.3 += bucket.failed;
                total.4 += bucket.dead;
            }
            _ => totals.push((
                bucket.kind,
                bucket.name,
                bucket.handled,
                bucket.failed,
                bucket.dead,
            )),
        }
    }
    totals
}

fn publish(store: &InMemoryStore, fates: &[Fate]) {
    let batch: Vec<Outgoing> = fates
        .iter()
        .map(|&fate| Outgoing::new(&Job { fate }).unwrap())
        .collect();
    assert_eq!(store.publish_batch(&batch), fates.len() as u64);
}

/// The projection's checkpoint position.
async fn projected(store: &InMemoryStore) -> i64 {
    Operations::projections(store)
        .await
        .unwrap()
        .iter()
        .find(|status| status.name == "activity.projection")
        .map_or(0, |status| status.position)
}

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<()>>,
}

#[tokio::test]
async fn counts_reach_the_history_at_each_heartbeat_and_a_refused_flush_goes_again() {
    use Fate::{Complete, Die, Retry};
    let clock = FakeClock::new();
    let inner = InMemoryStore::with_clock(clock.clone());
    let store = Refusing {
        inner: inner.clone(),
        refusing: Arc::new(AtomicBool::new(false)),
        records: Arc::new(AtomicU32::new(0)),
    };
    let runtime = Runtime::builder(store.clone())
        .only(["activity.handler", "activity.projection"])
        .clock(clock.clone())
        .handle_signals(false)
        .build()
        .expect("the runtime builds");
    runtime.register().await.expect("the subscription");
    let running = Running {
        shutdown: runtime.shutdown_token(),
        task: tokio::spawn(runtime.run()),
    };
    let subscription = inner.subscription_id("activity.handler").unwrap();

    publish(
        &inner,
        &[
            Complete, Retry, Complete, Die, Complete, Retry, Complete, Complete,
        ],
    );
    until("every job handled once and projected", async || {
        let rows = inner.deliveries(subscription);
        let statuses: Vec<DeliveryStatus> = rows.iter().map(|row| row.status).collect();
        statuses
            == [
                DeliveryStatus::Pending,
                DeliveryStatus::Dead,
                DeliveryStatus::Pending,
            ]
            && projected(&inner).await == 8
    })
    .await;
    assert_eq!(
        totals(&inner).await,
        [],
        "nothing before the first heartbeat"
    );

    // The first heartbeat's flush is refused: its counts stay for the next.
    store.refusing.store(true, Ordering::SeqCst);
    clock.advance(Runtime::DEFAULT_NODE_HEARTBEAT);
    until("the first flush", async || {
        store.records.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(totals(&inner).await, [], "the flush was refused");

    store.refusing.store(false, Ordering::SeqCst);
    clock.advance(Runtime::DEFAULT_NODE_HEARTBEAT);
    let expected = vec![
        (
            ActivityKind::Handler,
            "activity.handler".to_owned(),
            5,
            2,
            1,
        ),
        (
            ActivityKind::Projection,
            "activity.projection".to_owned(),
            8,
            0,
            0,
        ),
    ];
    until("the second flush lands", async || {
        store.records.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(totals(&inner).await, expected, "nothing was lost");

    // A heartbeat with nothing counted records nothing.
    clock.advance(Runtime::DEFAULT_NODE_HEARTBEAT);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.records.load(Ordering::SeqCst), 2, "nothing to add");

    // What is counted after the last heartbeat goes with the runtime's stop.
    publish(&inner, &[Complete, Die]);
    clock.advance(Duration::from_secs(1)); // the projection's poll, well before a heartbeat
    until("the new jobs handled and projected", async || {
        inner.deliveries(subscription).len() == 4 && projected(&inner).await == 10
    })
    .await;
    running.shutdown.cancel();
    running
        .task
        .await
        .expect("the runtime did not panic")
        .expect("a graceful stop");
    assert_eq!(
        totals(&inner).await,
        [
            (
                ActivityKind::Handler,
                "activity.handler".to_owned(),
                6,
                2,
                2
            ),
            (
                ActivityKind::Projection,
                "activity.projection".to_owned(),
                10,
                0,
                0
            ),
        ],
        "flushed at the stop"
    );
}
