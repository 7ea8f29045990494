//! Panics outside the handler's future: in a payload's `Deserialize`, in an extractor, and in the
//! loops themselves (a faulty store). Each poisoned event fails on its own, permanently, with the
//! panic's message; a loop that dies anyway is logged and restarted.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use osa_events::extract::{Call, FromBatchArg, FromEventArg};
use osa_events::prelude::*;
use osa_events::store::{
    ClaimRequest, Delivery, Failure, Fence, Leadership, ProjectionStore, Store, Subscription,
    SubscriptionId, WakeUps,
};
use osa_events::{ProjectionStatus, ResetTo, Runtime};
use osa_events_testing::{Harness, InMemoryStore};
use serde::{Deserialize, Deserializer, Serialize};

use osa_events_fixtures::logs::Logs;

/// An event whose `Deserialize` panics on `n == 13`, as a buggy hand-written impl would.
#[derive(Event, Serialize, Debug)]
#[event(name = "panics.test.fragile")]
struct Fragile {
    n: u32,
}

impl<'de> Deserialize<'de> for Fragile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            n: u32,
        }
        let Raw { n } = Raw::deserialize(deserializer)?;
        assert!(n != 13, "cannot decode 13");
        Ok(Fragile { n })
    }
}

/// An extractor that panics for the event `n == 7` (for a batch: when the batch holds it).
struct Picky;

fn holds_seven(deliveries: &[Delivery]) -> bool {
    deliveries
        .iter()
        .any(|delivery| delivery.payload.replace(' ', "").contains(r#""n":7"#))
}

impl FromEventArg for Picky {
    type Bound = ();

    fn bind(_: &Resources, _: &'static str) -> osa_events::Result<()> {
        Ok(())
    }

    fn extract(_: &(), call: &mut Call<'_>) -> Self {
        assert!(!holds_seven(call.deliveries()), "picky cannot take 7");
        Picky
    }
}

impl FromBatchArg for Picky {
    type Bound = ();

    fn bind(_: &Resources, _: &'static str) -> osa_events::Result<()> {
        Ok(())
    }

    fn extract(_: &(), call: &mut Call<'_>) -> Self {
        assert!(!holds_seven(call.deliveries()), "picky cannot take 7");
        Picky
    }
}

#[event_handler(name = "panics.each", retries = 3)]
async fn each(_job: Fragile) -> Result<(), HandlerError> {
    Ok(())
}

#[event_handler(name = "panics.batch", batch = 10, retries = 3)]
async fn batch(_jobs: Batch<Fragile>) -> Result<(), HandlerError> {
    Ok(())
}

#[event_handler(name = "panics.extract", retries = 3)]
async fn extract(_job: Fragile, _picky: Picky) -> Result<(), HandlerError> {
    Ok(())
}

#[event_handler(name = "panics.extract_batch", batch = 10, retries = 3)]
async fn extract_batch(_jobs: Batch<Fragile>, _picky: Picky) -> Result<(), HandlerError> {
    Ok(())
}

/// What the projection applied.
#[derive(Default)]
struct Applied(Mutex<Vec<u32>>);

impl Applied {
    fn extend(&self, numbers: impl IntoIterator<Item = u32>) {
        self.0.lock().unwrap().extend(numbers);
    }
}

#[projection(name = "panics.projection", batch = 10, poll = "10ms")]
async fn project(events: Batch<Fragile>, applied: State<Applied>) -> Result<(), HandlerError> {
    applied.extend(events.iter().map(|job| job.n));
    Ok(())
}

async fn harness(only: &str, resources: Resources) -> Harness {
    Harness::builder()
        .resources(resources)
        .only([only])
        .build()
        .await
        .expect("the harness builds")
}

#[tokio::test]
async fn panicking_deserialize_dead_letters_the_event() {
    let mut harness = harness("panics.each", Resources::new()).await;
    for n in [1, 13, 2] {
        harness.publish(&Fragile { n });
    }
    harness.drain().await;

    harness.assert_handled("panics.each", 2);
    harness.assert_retried("panics.each", 0);
    harness.assert_dead_lettered("panics.each", 1);
    let dead = &harness.dead_letters("panics.each")[0];
    assert_eq!(dead.attempt, 1, "permanent: no retry");
    let error = dead.error().unwrap();
    assert!(
        error.contains("attempt 1 of 4: decoding the payload panicked: cannot decode 13"),
        "{error}"
    );
}

#[tokio::test]
async fn panicking_deserialize_in_a_batch_dead_letters_only_that_event() {
    let mut harness = harness("panics.batch", Resources::new()).await;
    for n in [1, 13, 2, 3] {
        harness.publish(&Fragile { n });
    }
    let attempts = harness.step("panics.batch").await;
    assert_eq!(attempts.len(), 4, "one batch");
    harness.assert_handled("panics.batch", 3);
    harness.assert_dead_lettered("panics.batch", 1);
    let dead = &harness.dead_letters("panics.batch")[0];
    assert!(dead.payload.contains("13"), "{dead:?}");
    assert!(
        dead.error()
            .unwrap()
            .ends_with("decoding the payload panicked: cannot decode 13"),
        "{dead:?}"
    );
}

#[tokio::test]
async fn panicking_extractor_dead_letters_the_event() {
    let mut harness = harness("panics.extract", Resources::new()).await;
    for n in [1, 7, 2] {
        harness.publish(&Fragile { n });
    }
    harness.drain().await;

    harness.assert_handled("panics.extract", 2);
    harness.assert_dead_lettered("panics.extract", 1);
    let error = harness.dead_letters("panics.extract")[0]
        .error()
        .unwrap()
        .to_owned();
    assert!(
        error.ends_with("extracting the handler's arguments panicked: picky cannot take 7"),
        "{error}"
    );
}

#[tokio::test]
async fn panicking_batch_extractor_dead_letters_the_events_of_its_call() {
    let mut harness = harness("panics.extract_batch", Resources::new()).await;
    for n in [1, 7, 2] {
        harness.publish(&Fragile { n });
    }
    harness.drain().await;

    // The extractors serve the whole call: every event of it fails, none is retried.
    harness.assert_handled("panics.extract_batch", 0);
    harness.assert_retried("panics.extract_batch", 0);
    harness.assert_dead_lettered("panics.extract_batch", 3);
    for dead in harness.dead_letters("panics.extract_batch") {
        assert!(
            dead.error()
                .unwrap()
                .ends_with("extracting the handler's arguments panicked: picky cannot take 7"),
            "{dead:?}"
        );
    }
}

#[tokio::test]
async fn panicking_deserialize_fails_the_projection_batch_with_its_last_error() {
    let applied = Arc::new(Applied::default());
    let mut harness = harness(
        "panics.projection",
        Resources::new().with_arc(Arc::clone(&applied)),
    )
    .await;
    let ids: Vec<_> = [1, 13, 2]
        .into_iter()
        .map(|n| harness.publish(&Fragile { n }))
        .collect();
    let failed = harness.project("panics.projection").await.unwrap_err();
    assert_eq!(failed.applied, 0);
    assert!(
        failed.error.contains(&ids[1].to_string())
            && failed
                .error
                .contains("decoding the payload panicked: cannot decode 13"),
        "{failed}"
    );
    let status = harness
        .store()
        .status("panics.projection", &[Fragile::NAME])
        .await
        .unwrap();
    assert_eq!((status.position, status.lag), (0, 3), "nothing skipped");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|error| error.contains("cannot decode 13")),
        "{status:?}"
    );
    assert!(applied.0.lock().unwrap().is_empty());
}

/// An in-memory store whose claims and projection leaderships panic the first times they are
/// asked for: a fault of the loop itself, not of an event.
#[derive(Clone)]
struct Faulty {
    inner: InMemoryStore,
    claim_panics: Arc<AtomicU32>,
    lead_panics: Arc<AtomicU32>,
}

impl Faulty {
    fn new(claim_panics: u32, lead_panics: u32) -> Self {
        Self {
            inner: InMemoryStore::new(),
            claim_panics: Arc::new(AtomicU32::new(claim_panics)),
            lead_panics: Arc::new(AtomicU32::new(lead_panics)),
        }
    }
}

/// Takes one from `left` if it is not zero yet.
pub(crate) fn take_one(left: &AtomicU32) -> bool {
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Store for Faulty {
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
        assert!(!take_one(&self.claim_panics), "the store's claim broke");
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
        Some(Arc::new(self.clone()))
    }
}

impl ProjectionStore for Faulty {
    fn try_lead<'a>(
        &'a self,
        name: &'static str,
        holder: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, osa_events::Result<Option<Box<dyn Leadership>>>> {
        assert!(!take_one(&self.lead_panics), "the store's leadership broke");
        self.inner.try_lead(name, holder, wait)
    }

    fn status<'a>(
        &'a self,
        name: &'a str,
        event_types: &'a [&'a str],
    ) -> BoxFuture<'a, osa_events::Result<ProjectionStatus>> {
        self.inner.status(name, event_types)
    }

    fn reset<'a>(&'a self, name: &'a str, to: ResetTo) -> BoxFuture<'a, osa_events::Result<()>> {
        self.inner.reset(name, to)
    }

    fn record_event_types<'a>(
        &'a self,
        name: &'a str,
        event_types: &'a [&'a str],
    ) -> BoxFuture<'a, osa_events::Result<()>> {
        self.inner.record_event_types(name, event_types)
    }

    fn acknowledge_event_types<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, osa_events::Result<()>> {
        self.inner.acknowledge_event_types(name)
    }
}

/// Runs `only` on `store`, publishing `events` once its subscriptions exist, until `done` holds
/// (at most 10 s), then stops the runtime.
async fn run_until(
    store: &Faulty,
    only: &str,
    resources: Resources,
    events: &[Fragile],
    mut done: impl AsyncFnMut() -> bool,
) {
    let runtime = Runtime::builder(store.clone())
        .resources(resources)
        .only([only])
        .handle_signals(false)
        .build()
        .unwrap();
    runtime.register().await.unwrap();
    for event in events {
        store.inner.publish(event).unwrap();
    }
    let shutdown = runtime.shutdown_token();
    let running = tokio::spawn(runtime.run());
    let started = tokio::time::Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "`{only}` did not get its work done within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_claim_loop_that_panics_is_logged_and_restarted() {
    let logs = Logs::capture();
    let store = Faulty::new(2, 0);
    let events = [Fragile { n: 1 }];
    run_until(
        &store,
        "panics.each",
        Resources::new(),
        &events,
        async || {
            let id = store.inner.subscription_id("panics.each").unwrap();
            store.inner.events().len() == 1 && store.inner.deliveries(id).is_empty()
        },
    )
    .await;

    let deaths = logs.lines_with("a loop died; restarting it");
    assert_eq!(deaths.len(), 2, "{deaths:#?}");
    assert!(deaths[0].starts_with("ERROR"), "{}", deaths[0]);
    assert!(
        deaths[0].contains("claim loop 0 of handler `panics.each`")
            && deaths[0].contains("it panicked: the store's claim broke"),
        "{}",
        deaths[0]
    );
}

#[tokio::test]
async fn a_projection_loop_that_panics_is_logged_and_restarted() {
    let logs = Logs::capture();
    let store = Faulty::new(0, 1);
    let applied = Arc::new(Applied::default());
    let events = [1, 2, 3].map(|n| Fragile { n });
    let resources = Resources::new().with_arc(Arc::clone(&applied));
    run_until(
        &store,
        "panics.projection",
        resources,
        &events,
        async || applied.0.lock().unwrap().len() == 3,
    )
    .await;

    let deaths = logs.lines_with("a loop died; restarting it");
    assert_eq!(deaths.len(), 1, "{deaths:#?}");
    assert!(
        deaths[0].contains("loop of projection `panics.projection`")
            && deaths[0].contains("it panicked: the store's leadership broke"),
        "{}",
        deaths[0]
    );
}
