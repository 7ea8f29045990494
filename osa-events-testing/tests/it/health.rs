//! The runtime's health, as a probe reads it, and the claim loops' metrics: on the in-memory store
//! behind a wrapper that fails, hangs or panics in `claim` on demand, with a fake clock.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use osa_events::health::{Health, HealthReport, RunState};
use osa_events::operations::Operations;
use osa_events::prelude::*;
use osa_events::store::{
    ClaimRequest, Delivery, Failure, Fence, ProjectionStore, Store, Subscription, SubscriptionId,
    WakeUps,
};
use osa_events::{CancellationToken, Runtime};
use osa_events_testing::{FakeClock, InMemoryStore};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::panics::take_one;

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "health.test.ping")]
struct Ping {
    n: u32,
}

/// Two claim loops, polling every second.
#[event_handler(name = "health.pair", concurrency = 2, poll = "1s")]
async fn pair(_ping: Ping) -> Result<(), HandlerError> {
    Ok(())
}

/// One claim loop with a short claim timeout, so a hung claim is stuck after the least slack.
#[event_handler(name = "health.single", poll = "1s", claim_timeout = "5s")]
async fn single(_ping: Ping) -> Result<(), HandlerError> {
    Ok(())
}

/// What the projection applied.
#[derive(Default)]
struct Applied(Mutex<Vec<u32>>);

#[projection(name = "health.projection", poll = "1s")]
async fn project(pings: Batch<Ping>, applied: State<Applied>) -> Result<(), HandlerError> {
    applied
        .0
        .lock()
        .unwrap()
        .extend(pings.iter().map(|ping| ping.n));
    Ok(())
}

/// An in-memory store whose claims fail, hang or panic on demand: a database that goes away and
/// comes back, one that stops answering, and a store with a bug.
#[derive(Clone, Default)]
struct Flaky {
    inner: InMemoryStore,
    failing: Arc<AtomicBool>,
    hanging: Arc<AtomicBool>,
    panics_left: Arc<AtomicU32>,
}

impl Flaky {
    fn new(clock: &FakeClock) -> Self {
        Self {
            inner: InMemoryStore::with_clock(clock.clone()),
            ..Self::default()
        }
    }
}

impl Store for Flaky {
    fn register<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> BoxFuture<'a, osa_events::Result<Vec<SubscriptionId>>> {
        self.inner.register(subscriptions)
    }

    fn claim<'a>(
        &'a self,
        request: ClaimRequest<'a>,
    ) -> BoxFuture<'a, osa_events::Result<Vec<Delivery>>> {
        assert!(!take_one(&self.panics_left), "the store's claim broke");
        if self.hanging.load(Ordering::SeqCst) {
            // Until the test lets go, so the runtime can still stop.
            let hanging = Arc::clone(&self.hanging);
            return Box::pin(async move {
                while hanging.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                self.inner.claim(request).await
            });
        }
        if self.failing.load(Ordering::SeqCst) {
            return Box::pin(async {
                Err(osa_events::Error::Database(
                    std::io::Error::other("connection refused").into(),
                ))
            });
        }
        self.inner.claim(request)
    }

    fn complete<'a>(
        &'a self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, osa_events::Result<u64>> {
        self.inner.complete(subscription, done)
    }

    fn fail<'a>(
        &'a self,
        subscription: SubscriptionId,
        failures: &'a [Failure],
    ) -> BoxFuture<'a, osa_events::Result<u64>> {
        self.inner.fail(subscription, failures)
    }

    fn extend<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
        claim_timeout: Duration,
    ) -> BoxFuture<'a, osa_events::Result<Vec<i64>>> {
        self.inner.extend(subscription, claims, claim_timeout)
    }

    fn release<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
    ) -> BoxFuture<'a, osa_events::Result<u64>> {
        self.inner.release(subscription, claims)
    }

    fn wake_ups(&self) -> Option<BoxFuture<'static, osa_events::Result<WakeUps>>> {
        self.inner.wake_ups()
    }

    fn projections(&self) -> Option<Arc<dyn ProjectionStore>> {
        Store::projections(&self.inner)
    }

    fn operations(&self) -> Option<&dyn Operations> {
        self.inner.operations()
    }
}

/// A runtime of `only` on `store` under `clock`, running in a task.
struct Running {
    health: Health,
    shutdown: CancellationToken,
    task: JoinHandle<osa_events::Result<()>>,
}

impl Running {
    fn start(store: impl Store, clock: &FakeClock, only: &[&str], instance: &str) -> Self {
        let runtime = Runtime::builder(store)
            .resources(Resources::new().with(Applied::default()))
            .only(only.iter().copied())
            .clock(clock.clone())
            .instance_name(instance)
            .handle_signals(false)
            .build()
            .expect("the runtime builds");
        let health = runtime.health();
        let shutdown = runtime.shutdown_token();
        let task = tokio::spawn(runtime.run());
        Self {
            health,
            shutdown,
            task,
        }
    }

    /// Waits up to 10 s (real time) until the report satisfies `condition`; returns that report.
    async fn until(&self, what: &str, condition: impl Fn(&HealthReport) -> bool) -> HealthReport {
        let started = std::time::Instant::now();
        loop {
            let report = self.health.report();
            if condition(&report) {
                return report;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{what}: not within 10 s; the last report: {report:#?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn stop(self) -> Health {
        self.shutdown.cancel();
        self.task
            .await
            .expect("the runtime did not panic")
            .expect("a graceful stop");
        self.health
    }
}

fn ready(report: &HealthReport) -> bool {
    report.ready
}

#[tokio::test]
async fn before_run_the_runtime_is_neither_live_nor_ready() {
    let runtime = Runtime::builder(InMemoryStore::new())
        .only(["health.pair"])
        .handle_signals(false)
        .build()
        .unwrap();
    let report = runtime.health().report();
    assert_eq!(report.state, RunState::NotStarted);
    assert!(!report.live && !report.ready, "{report:#?}");
    assert_eq!(
        report.reasons,
        ["the runtime has not started (`Runtime::run` not called)"]
    );
    let handler = &report.handlers[0];
    assert_eq!(handler.name, "health.pair");
    assert_eq!((handler.loops_expected, handler.loops_alive), (2, 0));
    assert_eq!(handler.last_claim_at, None);
}

#[tokio::test]
async fn the_runtime_is_ready_once_every_handler_claimed() {
    let clock = FakeClock::new();
    let running = Running::start(
        InMemoryStore::with_clock(clock.clone()),
        &clock,
        &["health.pair"],
        "node",
    );
    let report = running.until("ready", ready).await;
    assert_eq!(report.state, RunState::Running);
    assert!(report.live && report.reasons.is_empty(), "{report:#?}");
    let handler = &report.handlers[0];
    assert_eq!((handler.loops_expected, handler.loops_alive), (2, 2));
    assert_eq!((handler.loops_stuck, handler.restarts), (0, 0));
    assert!(handler.last_claim_at.is_some());
    assert_eq!(handler.claim_failures, 0);
    assert_eq!(handler.last_claim_error, None);
    running.stop().await;
}

#[tokio::test]
async fn failing_claims_make_it_unready_with_the_error_until_the_store_recovers() {
    let clock = FakeClock::new();
    let store = Flaky::new(&clock);
    let running = Running::start(store.clone(), &clock, &["health.single"], "node");
    running.until("ready", ready).await;

    store.failing.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(1)); // the idle loop's poll: it claims again, and fails
    let report = running
        .until("a failed claim", |r| r.handlers[0].claim_failures == 1)
        .await;
    assert!(report.live, "a store that fails is no reason to restart");
    assert!(!report.ready);
    assert_eq!(
        report.reasons,
        ["handler `health.single`: its last claim failed: database error: connection refused"]
    );
    assert_eq!(
        report.handlers[0].last_claim_error.as_deref(),
        Some("database error: connection refused")
    );

    clock.advance(Duration::from_millis(100)); // the pause after a first failure
    let report = running
        .until("a second failed claim", |r| {
            r.handlers[0].claim_failures == 2
        })
        .await;
    assert_eq!(
        report.reasons,
        ["handler `health.single`: its last 2 claims failed: database error: connection refused"]
    );

    store.failing.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_millis(200)); // the pause after a second failure
    let report = running.until("ready again", ready).await;
    let handler = &report.handlers[0];
    assert_eq!(handler.claim_failures, 0);
    assert_eq!(
        handler.last_claim_error.as_deref(),
        Some("database error: connection refused"),
        "the last error is kept after recovery"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_loop_that_died_is_not_live_until_its_restart() {
    let clock = FakeClock::new();
    let store = Flaky::new(&clock);
    store.panics_left.store(1, Ordering::SeqCst);
    let running = Running::start(store.clone(), &clock, &["health.single"], "node");
    let report = running
        .until("the loop died", |r| {
            r.state == RunState::Running && r.handlers[0].loops_alive == 0
        })
        .await;
    assert!(!report.live && !report.ready, "{report:#?}");
    assert!(
        report.reasons.contains(
            &"handler `health.single`: 0 of 1 claim loops alive (a loop died and waits for its restart)"
                .to_owned()
        ),
        "{:?}",
        report.reasons
    );
    assert_eq!(report.handlers[0].restarts, 0);

    clock.advance(Duration::from_millis(100)); // the restart pause after a first death
    let report = running.until("restarted and ready", ready).await;
    assert_eq!(report.handlers[0].loops_alive, 1);
    assert_eq!(report.handlers[0].restarts, 1);
    running.stop().await;
}

#[tokio::test]
async fn a_claim_that_hangs_past_its_limit_makes_the_loop_stuck() {
    let clock = FakeClock::new();
    let store = Flaky::new(&clock);
    let running = Running::start(store.clone(), &clock, &["health.single"], "node");
    running.until("ready", ready).await;

    store.hanging.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(1)); // the next claim begins, and never returns
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The slack: twice the claim timeout of 5 s, but at least a minute.
    clock.advance(Duration::from_secs(60));
    let report = running.health.report();
    assert!(report.live, "at its limit, not past it: {report:#?}");
    clock.advance(Duration::from_millis(1));
    let report = running.health.report();
    assert!(!report.live && !report.ready);
    assert_eq!(report.handlers[0].loops_stuck, 1);
    assert_eq!(
        report.reasons,
        [
            "handler `health.single`: claim loop 0 is stuck in a claim round trip for 1m (its limit is 1m)"
        ]
    );
    store.hanging.store(false, Ordering::SeqCst);
    running
        .until("live again once the claim returned", |r| r.live)
        .await;
    running.stop().await;
}

#[tokio::test]
async fn after_shutdown_the_runtime_is_neither_live_nor_ready() {
    let clock = FakeClock::new();
    let running = Running::start(
        InMemoryStore::with_clock(clock.clone()),
        &clock,
        &["health.pair"],
        "node",
    );
    running.until("ready", ready).await;
    let health = running.stop().await;
    let report = health.report();
    assert_eq!(report.state, RunState::Stopped);
    assert!(!report.live && !report.ready);
    assert_eq!(report.reasons, ["the runtime has stopped"]);
    assert_eq!(report.handlers[0].loops_alive, 0);
}

#[tokio::test]
async fn the_last_successful_claim_moves_with_each_claim() {
    let clock = FakeClock::new();
    let running = Running::start(Flaky::new(&clock), &clock, &["health.single"], "node");
    let first = running.until("ready", ready).await.handlers[0]
        .last_claim_at
        .unwrap();
    let at = |report: &HealthReport| report.handlers[0].last_claim_at.unwrap();

    clock.advance(Duration::from_secs(1)); // the idle loop's poll
    let second = at(&running.until("claimed again", |r| at(r) != first).await);
    assert_eq!(
        second.duration_since(first).unwrap(),
        Duration::from_secs(1),
        "the claim times are the runtime clock's"
    );
    let now = SystemTime::now();
    let skew = now.duration_since(second).unwrap_or_else(|e| e.duration());
    assert!(
        skew < Duration::from_secs(60),
        "a wall-clock time: {second:?} vs {now:?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_projection_shows_which_process_leads_it() {
    let clock = FakeClock::new();
    let store = InMemoryStore::with_clock(clock.clone());
    let a = Running::start(store.clone(), &clock, &["health.projection"], "node-a");
    let leader = a
        .until("node-a leads and is ready", |r| {
            r.ready && r.projections[0].leader
        })
        .await;
    let projection = &leader.projections[0];
    assert_eq!(projection.name, "health.projection");
    assert!(projection.alive && projection.last_batch_at.is_some());
    assert_eq!(
        (projection.store_failures, projection.batch_failures),
        (0, 0)
    );

    let b = Running::start(store.clone(), &clock, &["health.projection"], "node-b");
    let report = b
        .until("node-b runs", |r| r.state == RunState::Running)
        .await;
    assert!(!report.ready, "the store has not answered node-b yet");
    assert_eq!(
        report.reasons,
        ["projection `health.projection`: the store has not answered it yet"]
    );
    // A follower's attempt waits up to 5 s for the leadership.
    tokio::time::sleep(Duration::from_millis(20)).await;
    clock.advance(Duration::from_secs(5));
    let follower = b.until("node-b follows, ready", ready).await;
    assert!(!follower.projections[0].leader);
    assert_eq!(follower.projections[0].last_batch_at, None);
    assert!(a.health.report().projections[0].leader);

    a.stop().await;
    clock.advance(Duration::from_secs(5));
    b.until("node-b takes over", |r| r.projections[0].leader)
        .await;
    b.stop().await;
}

/// What a snapshot of the debugging recorder holds: each metric's value since the previous
/// snapshot (taking one resets counters and gauges to 0).
struct Recorded(Vec<(CompositeKey, DebugValue)>);

impl Recorded {
    fn take(snapshotter: &Snapshotter) -> Self {
        Self(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| (key, value))
                .collect(),
        )
    }

    /// `name{handler="health.single"}` of `kind`, if it was recorded.
    fn value(&self, kind: MetricKind, name: &str) -> Option<&DebugValue> {
        self.0
            .iter()
            .find(|(key, _)| {
                key.kind() == kind
                    && key.key().name() == name
                    && key
                        .key()
                        .labels()
                        .any(|label| label.key() == "handler" && label.value() == "health.single")
            })
            .map(|(_, value)| value)
    }

    fn loops(&self) -> Option<f64> {
        match self.value(MetricKind::Gauge, "osa_events_claim_loops")? {
            DebugValue::Gauge(value) => Some(value.into_inner()),
            other => panic!("not a gauge: {other:?}"),
        }
    }

    fn count(&self, name: &str) -> Option<u64> {
        match self.value(MetricKind::Counter, name)? {
            DebugValue::Counter(value) => Some(*value),
            other => panic!("not a counter: {other:?}"),
        }
    }
}

#[tokio::test]
async fn claim_loop_metrics_count_loops_alive_restarts_and_failed_claims() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // This thread's recorder: the test runs on a current-thread runtime, so the runtime's tasks
    // record here, and tests running in parallel record elsewhere.
    let _local = metrics::set_default_local_recorder(&recorder);
    let restarts = "osa_events_claim_loop_restarts_total";
    let errors = "osa_events_claim_errors_total";

    let clock = FakeClock::new();
    let store = Flaky::new(&clock);
    store.panics_left.store(1, Ordering::SeqCst);
    let running = Running::start(store.clone(), &clock, &["health.single"], "node");
    let died = |r: &HealthReport| r.state == RunState::Running && r.handlers[0].loops_alive == 0;
    running.until("the loop died", died).await;
    let recorded = Recorded::take(&snapshotter);
    assert_eq!(
        recorded.loops(),
        Some(0.0),
        "1 when started, 0 when it died"
    );
    assert_eq!(recorded.count(restarts), Some(0));

    clock.advance(Duration::from_millis(100)); // the restart pause
    running.until("restarted and ready", ready).await;
    let recorded = Recorded::take(&snapshotter);
    assert_eq!(recorded.loops(), Some(1.0));
    assert_eq!(recorded.count(restarts), Some(1));
    assert_eq!(recorded.count(errors), Some(0));

    store.failing.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(1)); // the idle loop's poll
    running
        .until("a failed claim", |r| r.handlers[0].claim_failures == 1)
        .await;
    clock.advance(Duration::from_millis(100)); // the pause after a first failure
    running
        .until("two failed claims", |r| r.handlers[0].claim_failures == 2)
        .await;
    let recorded = Recorded::take(&snapshotter);
    assert_eq!(recorded.count(errors), Some(2));
    assert_eq!(recorded.loops(), Some(0.0), "reset by the last snapshot");

    store.failing.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_millis(200)); // the pause after a second failure
    running.until("ready again", ready).await;
    clock.advance(Duration::from_secs(5)); // the gauge's refresh
    tokio::time::sleep(Duration::from_millis(20)).await;
    let recorded = Recorded::take(&snapshotter);
    assert_eq!(recorded.loops(), Some(1.0), "set again by its refresh");

    // Alive again after a second death, then stopped: the gauge goes to 0 at shutdown.
    store.panics_left.store(1, Ordering::SeqCst);
    clock.advance(Duration::from_secs(1)); // the idle loop's poll
    running.until("the loop died again", died).await;
    clock.advance(Duration::from_millis(200)); // the restart pause after a second death
    running.until("restarted again", ready).await;
    running.stop().await;
    let recorded = Recorded::take(&snapshotter);
    assert_eq!(
        recorded.loops(),
        Some(0.0),
        "no loop is alive after shutdown"
    );
    assert_eq!(recorded.count(restarts), Some(1));
}
