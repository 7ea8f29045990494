//! `linger`: after a short claim, a batch handler's claim loop waits for a fuller batch.
//!
//! First on the in-memory store and a fake clock, through the runtime's own claim loop woken by
//! each publish: when the handler is called, with what, and at which fake instant, with no
//! wall-clock sleeps. Then on PostgreSQL, with real notifications: a trickle of publishes gives
//! calls of about `batch` events with `linger` and calls of one or two without.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::__private::{Handler, HandlerSpec, Invoker, Registration, Shape, inventory};
use osa_events::prelude::*;
use osa_events::{Clock, Error, Runtime};
use osa_events_testing::{DeliveryStatus, FakeClock, Harness, InMemoryStore};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::support::{Db, eventually};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.linger.job")]
struct Job {
    n: u32,
}

/// The calls of a handler: when each came (on the clock it was given) and the jobs it got.
#[derive(Debug)]
struct Calls {
    clock: Arc<dyn Clock>,
    started: Instant,
    calls: Mutex<Vec<(Duration, Vec<u32>)>>,
}

impl Calls {
    fn new(clock: impl Clock) -> Arc<Self> {
        let started = clock.now();
        Arc::new(Self {
            clock: Arc::new(clock),
            started,
            calls: Mutex::default(),
        })
    }

    fn record(&self, jobs: &Batch<Job>) {
        let at = self.clock.now() - self.started;
        let numbers = jobs.iter().map(|job| job.n).collect();
        self.calls.lock().unwrap().push((at, numbers));
    }

    fn calls(&self) -> Vec<(Duration, Vec<u32>)> {
        self.calls.lock().unwrap().clone()
    }

    fn sizes(&self) -> Vec<usize> {
        self.calls().iter().map(|(_, jobs)| jobs.len()).collect()
    }
}

const LINGER: Duration = Duration::from_millis(50);

// `poll` is an hour: on the fake clock nothing but a publish (or the linger's end) wakes a loop.
#[event_handler(name = "linger.memory.on", batch = 4, linger = "50ms", poll = "1h")]
async fn lingering(jobs: Batch<Job>, calls: State<Calls>) -> Result<(), HandlerError> {
    calls.record(&jobs);
    Ok(())
}

#[event_handler(name = "linger.memory.off", batch = 4, poll = "1h")]
async fn eager(jobs: Batch<Job>, calls: State<Calls>) -> Result<(), HandlerError> {
    calls.record(&jobs);
    Ok(())
}

/// A runtime of one handler on the in-memory store and a fake clock, running in the background.
struct Scene {
    clock: FakeClock,
    store: InMemoryStore,
    calls: Arc<Calls>,
    shutdown: CancellationToken,
    running: JoinHandle<osa_events::Result<()>>,
    handler: &'static str,
}

impl Scene {
    /// Starts `handler` and lets its loop go idle (its first claim found nothing).
    async fn start(handler: &'static str) -> Self {
        let clock = FakeClock::new();
        let store = InMemoryStore::with_clock(clock.clone());
        let calls = Calls::new(clock.clone());
        let shutdown = CancellationToken::new();
        let runtime = Runtime::builder(store.clone())
            .only([handler])
            .resources(Resources::new().with_arc(calls.clone()))
            .clock(clock.clone())
            .handle_signals(false)
            .shutdown_token(shutdown.clone())
            .build()
            .expect("the runtime builds");
        runtime
            .register()
            .await
            .expect("the subscription registers");
        let running = tokio::spawn(runtime.run());
        let scene = Self {
            clock,
            store,
            calls,
            shutdown,
            running,
            handler,
        };
        // Idle: sleeping its poll interval, woken only by publishes.
        scene
            .until("the loop is idle", |s| s.clock.sleepers() >= 1)
            .await;
        settle().await;
        scene
    }

    /// Publishes job `n` and waits until the loop has claimed it (or called the handler with it).
    async fn publish(&self, n: u32) {
        let claimed_or_called = self.claimed() + self.called();
        self.store.publish(&Job { n }).expect("publish");
        self.until(&format!("job {n} claimed"), |s| {
            s.claimed() + s.called() > claimed_or_called
        })
        .await;
    }

    /// Deliveries claimed and not completed yet.
    fn claimed(&self) -> usize {
        let subscription = self.store.subscription_id(self.handler).unwrap();
        self.store
            .count(subscription, Some(DeliveryStatus::Claimed))
    }

    /// Jobs the handler was called with.
    fn called(&self) -> usize {
        self.calls.sizes().iter().sum()
    }

    /// Moves the fake clock and lets every task run.
    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
        settle().await;
    }

    /// Yields until `condition` holds; panics with `what` if it never does.
    async fn until(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        for _ in 0..10_000 {
            if condition(self) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!(
            "never happened: {what} (calls so far: {:?})",
            self.calls.calls()
        );
    }

    /// Stops the runtime, which must return without the fake clock moving.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.running)
            .await
            .expect("the runtime stops")
            .expect("no panic")
            .expect("a graceful stop");
    }
}

/// Lets every task run until it waits on something.
async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_batch_that_fills_within_the_linger_is_handled_at_once_and_whole() {
    let scene = Scene::start("linger.memory.on").await;
    scene.publish(1).await;
    for n in 2..=3 {
        scene.advance(Duration::from_millis(10)).await;
        scene.publish(n).await;
    }
    assert_eq!(scene.claimed(), 3, "three jobs claimed and held");
    assert!(
        scene.calls.calls().is_empty(),
        "no call before the batch is full"
    );

    scene.advance(Duration::from_millis(10)).await;
    scene.publish(4).await;
    scene.until("the handler called", |s| s.called() == 4).await;
    assert_eq!(
        scene.calls.calls(),
        [(Duration::from_millis(30), vec![1, 2, 3, 4])],
        "one call with the full batch, as soon as the fourth job came, before the 50ms were up"
    );
    scene.stop().await;
}

#[tokio::test]
async fn a_batch_that_does_not_fill_is_handled_when_the_linger_is_over() {
    let scene = Scene::start("linger.memory.on").await;
    scene.publish(1).await;
    scene.advance(Duration::from_millis(20)).await;
    scene.publish(2).await;
    scene.advance(Duration::from_millis(29)).await;
    assert!(
        scene.calls.calls().is_empty(),
        "no call 49ms after the first claim: {:?}",
        scene.calls.calls()
    );

    scene.advance(Duration::from_millis(1)).await;
    scene.until("the handler called", |s| s.called() == 2).await;
    assert_eq!(
        scene.calls.calls(),
        [(LINGER, vec![1, 2])],
        "the partial batch, once the linger (measured from the first claim) was over"
    );

    // The next short claim lingers again, from its own first claim.
    scene.advance(Duration::from_millis(100)).await;
    scene.publish(3).await;
    scene.advance(LINGER).await;
    scene
        .until("the handler called again", |s| s.called() == 3)
        .await;
    assert_eq!(
        scene.calls.calls()[1],
        (Duration::from_millis(200), vec![3])
    );
    scene.stop().await;
}

/// `linger` unset (zero): each publish wakes the loop, which claims and calls at once, as before
/// the option existed. The same trickle as in the test above gives one call per job.
#[tokio::test]
async fn without_linger_every_publish_is_handled_at_once() {
    let scene = Scene::start("linger.memory.off").await;
    scene.publish(1).await;
    scene
        .until("the first job handled", |s| s.called() == 1)
        .await;
    scene.advance(Duration::from_millis(20)).await;
    scene.publish(2).await;
    scene
        .until("the second job handled", |s| s.called() == 2)
        .await;
    assert_eq!(
        scene.calls.calls(),
        [
            (Duration::ZERO, vec![1]),
            (Duration::from_millis(20), vec![2])
        ]
    );
    scene.stop().await;
}

/// Shutdown while lingering: the loop stops waiting at once, claims nothing more, and hands what
/// it holds to the handler (a claimed batch runs within the grace period, as any other does).
#[tokio::test]
async fn shutdown_while_lingering_hands_what_is_held_to_the_handler_at_once() {
    let scene = Scene::start("linger.memory.on").await;
    scene.publish(1).await;
    scene.advance(Duration::from_millis(10)).await;
    scene.publish(2).await;
    assert!(scene.calls.calls().is_empty(), "lingering");

    // Shutdown, and a publish the loop is told of at the same time: it must not claim it.
    scene.shutdown.cancel();
    scene.store.publish(&Job { n: 3 }).unwrap();
    let started = scene.clock.now();
    let (clock, store, calls, handler) = (
        scene.clock.clone(),
        scene.store.clone(),
        scene.calls.clone(),
        scene.handler,
    );
    scene.stop().await;

    assert_eq!(
        calls.calls(),
        [(Duration::from_millis(10), vec![1, 2])],
        "called with what it held, without waiting out the linger"
    );
    assert_eq!(clock.now(), started, "no fake time passed");
    let deliveries = store.deliveries(store.subscription_id(handler).unwrap());
    let open: Vec<(i64, DeliveryStatus, u32)> = deliveries
        .iter()
        .map(|delivery| (delivery.position, delivery.status, delivery.attempts))
        .collect();
    assert_eq!(
        open,
        [(3, DeliveryStatus::Pending, 0)],
        "jobs 1 and 2 completed; job 3 never claimed"
    );
}

/// The harness steps a lingering handler as its claim loop runs it: nothing can publish during a
/// step, so the harness moves the clock to the linger's end, and the handler gets what is due.
#[tokio::test]
async fn the_harness_steps_through_the_linger_on_its_fake_clock() {
    let calls = Calls::new(FakeClock::new());
    let mut harness = Harness::builder()
        .only(["linger.memory.on", "linger.memory.off"])
        .resources(Resources::new().with_arc(calls.clone()))
        .build()
        .await
        .unwrap();
    harness.publish(&Job { n: 1 });
    harness.publish(&Job { n: 2 });

    assert_eq!(harness.step("linger.memory.off").await.len(), 2);
    assert_eq!(harness.elapsed(), Duration::ZERO, "no linger, no waiting");

    assert_eq!(harness.step("linger.memory.on").await.len(), 2);
    assert_eq!(
        harness.elapsed(),
        LINGER,
        "a short batch waits its linger out"
    );
    assert_eq!(calls.sizes(), [2, 2]);

    for n in 3..=6 {
        harness.publish(&Job { n });
    }
    harness.drain().await;
    assert_eq!(
        harness.elapsed(),
        LINGER,
        "full batches do not linger (the eager handler got them in one claim too)"
    );
}

/// A handler written by hand, with a spec the macro would refuse: `linger` beyond a third of the
/// claim timeout. Its calls are [`lingering`]'s.
struct LingersTooLong;

impl Handler for LingersTooLong {
    type Event = Job;
    const SPEC: HandlerSpec = HandlerSpec::new(
        "linger.by_hand",
        "it::linger::LingersTooLong",
        "test.linger.job",
        1,
        Shape::Batch,
    )
    .with_claim_timeout(Duration::from_secs(30))
    .with_linger(Duration::from_secs(11));

    fn bind(resources: &Resources) -> osa_events::Result<Invoker> {
        <LingeringHandler as Handler>::bind(resources)
    }
}

inventory::submit! { Registration::of::<LingersTooLong>() }

#[tokio::test]
async fn a_spec_built_with_too_long_a_linger_fails_the_build() {
    let error = Runtime::builder(InMemoryStore::new())
        .only(["linger.by_hand"])
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "invalid configuration: handler `linger.by_hand`: `linger` must be at most 10000ms, a \
         third of `claim_timeout` (30000ms), found 11000ms: the deliveries it holds are claimed \
         while it waits"
    );
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.linger.trickled")]
struct Trickled {
    n: u32,
}

/// What a PostgreSQL handler got per call.
#[derive(Default)]
struct Sizes(Mutex<Vec<usize>>);

impl Sizes {
    fn get(&self) -> Vec<usize> {
        self.0.lock().unwrap().clone()
    }
}

/// Two `State` types, so the two handlers of one runtime record apart.
#[derive(Default)]
struct LingeringSizes(Sizes);
#[derive(Default)]
struct EagerSizes(Sizes);

const PG_BATCH: usize = 8;

#[event_handler(name = "linger.pg.on", batch = 8, linger = "1s", poll = "500ms")]
async fn pg_lingering(
    events: Batch<Trickled>,
    sizes: State<LingeringSizes>,
) -> Result<(), HandlerError> {
    sizes.0.0.lock().unwrap().push(events.len());
    Ok(())
}

#[event_handler(name = "linger.pg.off", batch = 8, poll = "500ms")]
async fn pg_eager(events: Batch<Trickled>, sizes: State<EagerSizes>) -> Result<(), HandlerError> {
    sizes.0.0.lock().unwrap().push(events.len());
    Ok(())
}

/// 24 events, one per 40 ms, each in its own transaction (so its own notification), to two batch
/// handlers of `batch = 8`: with `linger = "1s"` a batch fills long before its linger is over, so
/// the calls are (almost all) full; without it every publish wakes the loop, which claims what
/// has arrived (one event, two when the machine is slow).
#[tokio::test]
async fn a_trickle_of_publishes_fills_the_batches_of_a_lingering_handler() {
    const EVENTS: usize = 24;
    let db = Db::new().await;
    let lingering = Arc::new(LingeringSizes::default());
    let eager = Arc::new(EagerSizes::default());
    let running = db
        .start(
            &["linger.pg.on", "linger.pg.off"],
            Resources::new()
                .with_arc(lingering.clone())
                .with_arc(eager.clone()),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await; // listening, and idle
    for n in 0..EVENTS {
        osa_events::publish(db.pool(), &Trickled { n: n as u32 })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    eventually(
        Duration::from_secs(20),
        "every event handled twice",
        || async {
            lingering.0.get().iter().sum::<usize>() == EVENTS
                && eager.0.get().iter().sum::<usize>() == EVENTS
        },
    )
    .await;
    running.stop().await;
    assert_eq!(db.deliveries(None).await, 0);

    let (with, without) = (lingering.0.get(), eager.0.get());
    let full = with.iter().filter(|size| **size == PG_BATCH).count();
    assert!(
        full >= 2 && with.len() <= 5,
        "with linger, calls of about `batch` (8) events: {with:?}"
    );
    assert!(
        without.len() >= EVENTS / 2,
        "without linger, small calls: {without:?}"
    );
    eprintln!("call sizes with linger {with:?}, without {without:?}");
}
