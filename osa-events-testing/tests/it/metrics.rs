//! The metrics the runtime records through the `metrics` facade, captured by a
//! `DebuggingRecorder` installed for one test only (`metrics::set_default_local_recorder`: these
//! tests run on a current-thread runtime, so every task the runtime spawns records on the test's
//! thread, into the test's recorder, whatever the other tests do).
//!
//! The counters and histograms of the claim loops run under the harness (the runtime's own claim
//! loop code, on a fake clock); released claims, the gauge sampler and its leader rule under a
//! real `Runtime`.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use osa_events::prelude::*;
use osa_events::store::{ClaimRequest, Store};
use osa_events::{CancellationToken, Clock, Runtime};
use osa_events_testing::{FakeClock, Harness, InMemoryStore};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::tx::NoTransactions;

const EVENTS: &str = "osa_events_handler_events_total";
const DURATION: &str = "osa_events_handler_duration_seconds";
const BATCH_SIZE: &str = "osa_events_batch_size";
const LATENCY: &str = "osa_events_end_to_end_latency_seconds";
const DELIVERIES: &str = "osa_events_handler_deliveries";
const OLDEST_DUE: &str = "osa_events_handler_oldest_due_age_seconds";
const LAG_EVENTS: &str = "osa_events_handler_lag_events";
const LAG_SECONDS: &str = "osa_events_handler_lag_seconds";
const PROJECTION_LAG_EVENTS: &str = "osa_events_projection_lag_events";
const PROJECTION_LAG_SECONDS: &str = "osa_events_projection_lag_seconds";
const GAUGES: [&str; 6] = [
    DELIVERIES,
    OLDEST_DUE,
    LAG_EVENTS,
    LAG_SECONDS,
    PROJECTION_LAG_EVENTS,
    PROJECTION_LAG_SECONDS,
];
const OUTCOMES: [&str; 6] = [
    "completed",
    "retried",
    "dead_lettered",
    "released",
    "deferred",
    "lost",
];

/// A job of `metrics.each`: fails its first `fails` attempts (retryably), or every attempt
/// permanently.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "metrics.test.job")]
struct Job {
    fails: u32,
    permanent: bool,
}

impl Job {
    fn failing(fails: u32) -> Self {
        Self {
            fails,
            permanent: false,
        }
    }
}

#[event_handler(name = "metrics.each", batch = 10, retries = 1, backoff = "1s")]
async fn each(job: Job, ctx: Ctx) -> Result<(), HandlerError> {
    if job.permanent {
        return Err(HandlerError::permanent("this job can never succeed"));
    }
    if ctx.attempt() <= job.fails {
        return Err(HandlerError::retry(format!(
            "attempt {} of a job that fails {} times",
            ctx.attempt(),
            job.fails
        )));
    }
    Ok(())
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "metrics.test.item")]
struct Item {
    n: u32,
}

/// Takes three seconds of fake time per batch.
#[event_handler(name = "metrics.batch", batch = 10)]
async fn batch(_items: Batch<Item>, clock: State<FakeClock>) -> Result<(), HandlerError> {
    clock.sleep(Duration::from_secs(3)).await;
    Ok(())
}

/// What an older build knows of `metrics.test.shipped`: version 1.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "metrics.test.shipped")]
struct ShippedV1 {
    id: u64,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "metrics.test.shipped", version = 2)]
struct ShippedV2 {
    id: u64,
    carrier: String,
}

/// Completes the job that fails 0 times, asks to retry the one that fails once later, fails the
/// one that fails twice fatally; the rest of its claim is never called.
#[event_handler(name = "metrics.flow", batch = 10)]
async fn flow(job: Job) -> Result<(), HandlerError> {
    match job.fails {
        1 => Err(HandlerError::retry_after(
            Duration::from_secs(10),
            "rate limited",
        )),
        2 => Err(HandlerError::fatal("the schema is wrong")),
        _ => Ok(()),
    }
}

#[event_handler(name = "metrics.old")]
async fn old(_shipped: ShippedV1) -> Result<(), HandlerError> {
    Ok(())
}

/// Lets another worker take the claim over while it runs.
struct TakeOver {
    clock: FakeClock,
    store: OnceLock<InMemoryStore>,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "metrics.test.transfer")]
struct Transfer {
    cents: u64,
}

/// Its claim expires and is taken over before its transaction commits.
#[event_handler(name = "metrics.tx", claim_timeout = "30s")]
async fn tx(_transfer: Transfer, _tx: Tx, take_over: State<TakeOver>) -> Result<(), HandlerError> {
    let store = take_over
        .store
        .get()
        .expect("set once the harness is built");
    // No await between the expiry and the claim: the heartbeat cannot run in between.
    take_over.clock.advance(Duration::from_secs(31));
    let request = ClaimRequest {
        subscription: store.subscription_id("metrics.tx").expect("registered"),
        limit: 1,
        claim_timeout: Duration::from_secs(600),
        worker: "another worker",
    };
    let taken = store.claim(request).await.expect("claim");
    assert_eq!(taken.len(), 1, "another worker takes the claim over");
    Ok(())
}

/// Tells the test it started, then never finishes.
#[event_handler(name = "metrics.hang")]
async fn hang(_item: Item, started: State<Notify>) -> Result<(), HandlerError> {
    started.notify_one();
    std::future::pending::<()>().await;
    Ok(())
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "metrics.test.unhandled")]
struct Unhandled {
    n: u32,
}

/// Registered, never run: its deliveries wait, and the gauges show them.
#[event_handler(name = "metrics.idle")]
async fn idle(_event: Unhandled) -> Result<(), HandlerError> {
    Ok(())
}

/// Never run either: its lag grows with every `Unhandled`.
#[projection(name = "metrics.projection")]
async fn project(_events: Batch<Unhandled>) -> Result<(), HandlerError> {
    Ok(())
}

/// A metric's labels, sorted.
type Labels = Vec<(String, String)>;

/// One snapshot of a test's recorder: every metric by name and labels.
struct Captured(Vec<(String, Labels, DebugValue)>);

impl Captured {
    /// Takes the snapshot (which resets the recorder's counters and histograms).
    fn take(snapshotter: &Snapshotter) -> Self {
        Self(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| {
                    let key = key.key();
                    let mut labels: Labels = key
                        .labels()
                        .map(|label| (label.key().to_owned(), label.value().to_owned()))
                        .collect();
                    labels.sort();
                    (key.name().to_owned(), labels, value)
                })
                .collect(),
        )
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        let mut wanted: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        wanted.sort();
        self.0
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, value)| value)
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.value(name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            other => panic!(
                "no counter {name}{labels:?}: {other:?}; captured: {:#?}",
                self.0
            ),
        }
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.value(name, labels) {
            Some(DebugValue::Gauge(n)) => n.into_inner(),
            other => panic!(
                "no gauge {name}{labels:?}: {other:?}; captured: {:#?}",
                self.0
            ),
        }
    }

    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.value(name, labels) {
            Some(DebugValue::Histogram(values)) => values.iter().map(|v| v.into_inner()).collect(),
            other => panic!(
                "no histogram {name}{labels:?}: {other:?}; captured: {:#?}",
                self.0
            ),
        }
    }

    /// The outcome counters of `handler`, in the order of [`OUTCOMES`].
    fn outcomes(&self, handler: &str) -> [u64; 6] {
        OUTCOMES.map(|outcome| self.counter(EVENTS, &[("handler", handler), ("outcome", outcome)]))
    }

    /// The values of label `label` of metric `name`.
    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.0
            .iter()
            .filter(|(n, _, _)| n == name)
            .flat_map(|(_, labels, _)| labels.iter().filter(|(k, _)| k == label))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Whether any sampled gauge was captured.
    fn has_gauges(&self) -> bool {
        self.0.iter().any(|(n, _, _)| GAUGES.contains(&n.as_str()))
    }
}

async fn harness(only: &str, clock: FakeClock, resources: Resources) -> Harness {
    Harness::builder()
        .clock(clock)
        .resources(resources)
        .only([only])
        .build()
        .await
        .expect("the harness builds")
}

#[tokio::test]
async fn completed_retried_and_dead_lettered_deliveries_are_counted_per_batch() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let mut harness = harness("metrics.each", FakeClock::new(), Resources::new()).await;
    harness.publish(&Job::failing(0)); // completed
    harness.publish(&Job::failing(1)); // retried, then completed
    harness.publish(&Job::failing(5)); // retried, then dead (retries = 1)
    harness.publish(&Job {
        fails: 0,
        permanent: true,
    }); // dead at once
    harness.drain().await;
    harness.assert_handled("metrics.each", 2);

    let captured = Captured::take(&snapshotter);
    //                                         completed retried dead released deferred lost
    assert_eq!(captured.outcomes("metrics.each"), [2, 2, 2, 0, 0, 0]);
    let handler = [("handler", "metrics.each")];
    assert_eq!(
        captured.histogram(DURATION, &handler).len(),
        6,
        "one per call"
    );
    let latencies = captured.histogram(LATENCY, &handler);
    assert_eq!(latencies.len(), 6, "one per event and call");
    assert!(
        latencies.iter().all(|s| (0.0..60.0).contains(s)),
        "{latencies:?}"
    );
    let sizes = captured.histogram(BATCH_SIZE, &handler);
    assert_eq!(sizes[0], 4.0, "the first claim took all four: {sizes:?}");
    assert_eq!(
        sizes.iter().sum::<f64>(),
        6.0,
        "every attempt was claimed in a batch"
    );
    assert_eq!(
        captured.label_values(EVENTS, "handler"),
        BTreeSet::from(["metrics.each".to_owned()]),
        "only the handler that ran"
    );
}

#[tokio::test]
async fn a_batch_call_is_timed_once_and_each_of_its_events_gets_a_latency() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let clock = FakeClock::new();
    let resources = Resources::new().with(clock.clone());
    let mut harness = harness("metrics.batch", clock, resources).await;
    for n in 0..3 {
        harness.publish(&Item { n });
    }
    assert_eq!(harness.step("metrics.batch").await.len(), 3);

    let captured = Captured::take(&snapshotter);
    let handler = [("handler", "metrics.batch")];
    assert_eq!(captured.histogram(BATCH_SIZE, &handler), [3.0]);
    assert_eq!(
        captured.histogram(DURATION, &handler),
        [3.0],
        "one call of three seconds (fake time)"
    );
    assert_eq!(captured.histogram(LATENCY, &handler).len(), 3);
    assert_eq!(captured.outcomes("metrics.batch"), [3, 0, 0, 0, 0, 0]);
}

#[tokio::test]
async fn an_event_newer_than_the_handler_counts_as_deferred() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let mut harness = harness("metrics.old", FakeClock::new(), Resources::new()).await;
    harness.publish(&ShippedV2 {
        id: 1,
        carrier: "post".into(),
    });
    assert_eq!(harness.step("metrics.old").await.len(), 1);

    let captured = Captured::take(&snapshotter);
    assert_eq!(captured.outcomes("metrics.old"), [0, 0, 0, 0, 1, 0]);
}

#[tokio::test]
async fn retry_after_counts_as_deferred_and_a_fatal_error_as_released() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let mut harness = harness("metrics.flow", FakeClock::new(), Resources::new()).await;
    for fails in 0..4 {
        harness.publish(&Job::failing(fails));
    }
    assert_eq!(harness.step("metrics.flow").await.len(), 4);

    let captured = Captured::take(&snapshotter);
    // completed, retried, dead_lettered, released, deferred, lost
    assert_eq!(captured.outcomes("metrics.flow"), [1, 0, 0, 2, 1, 0]);
}

#[tokio::test]
async fn a_tx_handler_whose_claim_was_taken_over_counts_as_lost() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let clock = FakeClock::new();
    let take_over = Arc::new(TakeOver {
        clock: clock.clone(),
        store: OnceLock::new(),
    });
    let resources = Resources::new().with_arc(Arc::clone(&take_over));
    let mut harness = harness("metrics.tx", clock, resources).await;
    take_over
        .store
        .set(harness.store().clone())
        .expect("set once");
    harness.publish(&Transfer { cents: 100 });
    assert_eq!(harness.step("metrics.tx").await.len(), 1);

    let captured = Captured::take(&snapshotter);
    assert_eq!(captured.outcomes("metrics.tx"), [0, 0, 0, 0, 0, 1]);
    assert_eq!(
        captured.histogram(DURATION, &[("handler", "metrics.tx")]),
        [31.0],
        "the call, timed on the runtime's clock"
    );
}

#[tokio::test]
async fn claims_released_at_shutdown_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let store = InMemoryStore::new();
    let started = Arc::new(Notify::new());
    let runtime = Runtime::builder(store.clone())
        .resources(Resources::new().with_arc(Arc::clone(&started)))
        .only(["metrics.hang"])
        .handle_signals(false)
        .grace_period(Duration::from_millis(20))
        .build()
        .expect("the runtime builds");
    runtime.register().await.expect("registered");
    store.publish(&Item { n: 1 }).expect("published");
    let shutdown = runtime.shutdown_token();
    let running = tokio::spawn(runtime.run());
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the handler starts");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the runtime stops")
        .expect("no panic")
        .expect("a graceful stop");

    let captured = Captured::take(&snapshotter);
    assert_eq!(captured.outcomes("metrics.hang"), [0, 0, 0, 1, 0, 0]);
    assert_eq!(
        captured.histogram(DURATION, &[("handler", "metrics.hang")]),
        [] as [f64; 0],
        "a call stopped at shutdown did not end"
    );
}

/// A runtime named `instance` on `store` and `clock`, running `handler` and sampling every
/// second.
fn sampling_runtime(
    store: impl Store,
    clock: &FakeClock,
    handler: &str,
    instance: &str,
) -> (Runtime, CancellationToken) {
    let runtime = Runtime::builder(store)
        .clock(clock.clone())
        .resources(Resources::new().with(clock.clone()))
        .only([handler])
        .instance_name(instance)
        .handle_signals(false)
        .metrics_interval(Duration::from_secs(1))
        .build()
        .expect("the runtime builds");
    let shutdown = runtime.shutdown_token();
    (runtime, shutdown)
}

/// Registers `metrics.idle`, which no runtime of these tests runs, and publishes three events
/// for it (and for `metrics.projection`).
async fn idle_work(store: &InMemoryStore) {
    Runtime::builder(store.clone())
        .only(["metrics.idle"])
        .build()
        .expect("the runtime builds")
        .register()
        .await
        .expect("registered");
    for n in 0..3 {
        store.publish(&Unhandled { n }).expect("published");
    }
}

/// Lets every task on this thread run until it waits again.
async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn the_gauges_show_what_the_status_reports_for_every_handler_and_projection() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let clock = FakeClock::new();
    let store = InMemoryStore::with_clock(clock.clone());
    idle_work(&store).await;
    let (runtime, shutdown) = sampling_runtime(store.clone(), &clock, "metrics.batch", "solo");
    let running = tokio::spawn(runtime.run());
    settle().await;
    clock.advance(Duration::from_secs(5)); // the idle handler's deliveries wait
    settle().await;

    let mut captured = Captured::take(&snapshotter);
    for _ in 0..100 {
        if captured.has_gauges() {
            break;
        }
        clock.advance(Duration::from_secs(1));
        settle().await;
        captured = Captured::take(&snapshotter);
    }
    assert!(captured.has_gauges(), "sampled: {:#?}", captured.0);
    // The fake clock has not moved since the sample: the status is what the sampler saw.
    let operations = store
        .operations()
        .expect("the in-memory store has operations");
    let status = operations.status().await.expect("status");

    let idle = status.handler("metrics.idle").expect("registered");
    assert_eq!(idle.due.value(), 3);
    assert!(
        idle.oldest_due
            .is_some_and(|age| age >= Duration::from_secs(5))
    );
    assert_eq!(status.handlers.len(), 2, "metrics.idle and metrics.batch");
    for handler in &status.handlers {
        let name = [("handler", handler.name.as_str())];
        let state = |state| [("handler", handler.name.as_str()), ("state", state)];
        assert_eq!(
            captured.gauge(DELIVERIES, &state("due")),
            handler.due.value() as f64
        );
        assert_eq!(
            captured.gauge(DELIVERIES, &state("scheduled")),
            handler.scheduled.value() as f64
        );
        assert_eq!(
            captured.gauge(DELIVERIES, &state("claimed")),
            handler.claimed.value() as f64
        );
        assert_eq!(
            captured.gauge(DELIVERIES, &state("dead")),
            handler.dead.value() as f64
        );
        assert_eq!(
            captured.gauge(OLDEST_DUE, &name),
            handler.oldest_due.unwrap_or_default().as_secs_f64()
        );
        assert_eq!(captured.gauge(LAG_EVENTS, &name), handler.lag_events as f64);
        assert_eq!(
            captured.gauge(LAG_SECONDS, &name),
            handler.lag.as_secs_f64()
        );
    }
    let projection = status
        .projections
        .iter()
        .find(|projection| projection.name == "metrics.projection")
        .expect("a projection of this program");
    assert_eq!(projection.lag, 3);
    for projection in &status.projections {
        let name = [("projection", projection.name.as_str())];
        assert_eq!(
            captured.gauge(PROJECTION_LAG_EVENTS, &name),
            projection.lag as f64
        );
        assert_eq!(
            captured.gauge(PROJECTION_LAG_SECONDS, &name),
            projection
                .oldest_unapplied
                .unwrap_or_default()
                .as_secs_f64()
        );
    }
    assert!(
        captured.gauge(
            PROJECTION_LAG_SECONDS,
            &[("projection", "metrics.projection")]
        ) >= 5.0,
        "its oldest event waits since before the clock moved"
    );

    shutdown.cancel();
    running.await.expect("no panic").expect("a graceful stop");
}

#[tokio::test]
async fn only_the_node_whose_name_sorts_first_samples_the_gauges() {
    let clock = FakeClock::new();
    let store = InMemoryStore::with_clock(clock.clone());
    idle_work(&store).await;
    // Each node on its own thread and runtime, with its own recorder.
    let node = |instance: &'static str| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let (runtime, shutdown) =
            sampling_runtime(store.clone(), &clock, "metrics.batch", instance);
        let thread = std::thread::spawn(move || {
            let _recording = ::metrics::set_default_local_recorder(&recorder);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(runtime.run())
        });
        (snapshotter, shutdown, thread)
    };
    let (b, stop_b, thread_b) = node("node-b");
    let (a, stop_a, thread_a) = node("node-a");
    let operations = store.operations().expect("operations");
    while operations.nodes().await.expect("nodes").len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Three samples by node-a (each seen as soon as it lands).
    let mut samples = 0;
    for _ in 0..1_000 {
        clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(10)).await;
        if Captured::take(&a).has_gauges() {
            samples += 1;
            if samples == 3 {
                break;
            }
        }
    }
    assert_eq!(samples, 3, "node-a samples");
    let at_b = Captured::take(&b);
    assert!(!at_b.has_gauges(), "node-b never sampled: {:#?}", at_b.0);

    stop_a.cancel();
    stop_b.cancel();
    for thread in [thread_a, thread_b] {
        thread.join().expect("no panic").expect("a graceful stop");
    }
}

#[tokio::test]
async fn a_store_without_operations_samples_nothing_and_still_counts() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let clock = FakeClock::new();
    let store = InMemoryStore::with_clock(clock.clone());
    let (runtime, shutdown) = sampling_runtime(
        NoTransactions(store.clone()),
        &clock,
        "metrics.each",
        "no-operations",
    );
    runtime.register().await.expect("registered");
    store.publish(&Job::failing(0)).expect("published");
    let running = tokio::spawn(runtime.run());
    for _ in 0..30 {
        clock.advance(Duration::from_secs(1));
        settle().await;
    }
    shutdown.cancel();
    running.await.expect("no panic").expect("a graceful stop");

    let captured = Captured::take(&snapshotter);
    assert!(!captured.has_gauges(), "{:#?}", captured.0);
    assert_eq!(captured.outcomes("metrics.each"), [1, 0, 0, 0, 0, 0]);
}

#[tokio::test]
async fn published_events_are_counted_by_type_once_each() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let store = InMemoryStore::new();
    let jobs: Vec<osa_events::Outgoing> = (0..3)
        .map(|fails| osa_events::Outgoing::new(&Job::failing(fails)).unwrap())
        .collect();
    assert_eq!(store.publish_batch(&jobs), 3);
    assert_eq!(store.publish_batch(&jobs), 0, "ids are idempotency keys");
    store.publish(&Item { n: 1 }).unwrap();

    let captured = Captured::take(&snapshotter);
    let published = "osa_events_published_events_total";
    assert_eq!(
        captured.counter(published, &[("event_type", "metrics.test.job")]),
        3,
        "a repeated publish adds nothing"
    );
    assert_eq!(
        captured.counter(published, &[("event_type", "metrics.test.item")]),
        1
    );
}
