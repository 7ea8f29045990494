//! A worker that cannot renew its claims stops its handler before they expire (DESIGN.md, claim
//! protocol item 9), on the in-memory store and a fake clock: no database, no wall-clock sleeps.
//!
//! The store is wrapped so that, once cut, every call hangs forever: a network black hole, where
//! nothing fails and nothing answers. The partition test
//! (`reliability::worker_partition`) does the same to real connections with iptables.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::prelude::*;
use osa_events::store::{
    ClaimRequest, Delivery, Failure, Fence, Store, Subscription, SubscriptionId, WakeUps,
};
use osa_events::{Clock, Runtime};
use osa_events_testing::{FakeClock, InMemoryStore};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The trait's future type (`futures_util::future::BoxFuture`, spelled out).
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

const HANDLER: &str = "heartbeat.black_hole";
const CLAIM_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.heartbeat.job")]
struct Job {
    n: u32,
}

/// When calls of [`HANDLER`] started, were cancelled and finished, on the fake clock.
#[derive(Debug)]
struct Probe {
    clock: FakeClock,
    /// How long each call works, on the fake clock.
    work: Duration,
    started: Mutex<Vec<Instant>>,
    cancelled: Mutex<Vec<Instant>>,
    finished: Mutex<Vec<Instant>>,
}

impl Probe {
    fn new(clock: &FakeClock, work: Duration) -> Arc<Self> {
        Arc::new(Self {
            clock: clock.clone(),
            work,
            started: Mutex::default(),
            cancelled: Mutex::default(),
            finished: Mutex::default(),
        })
    }

    fn times(list: &Mutex<Vec<Instant>>) -> Vec<Instant> {
        list.lock().unwrap().clone()
    }
}

/// Records a cancellation when dropped before [`Call::finish`].
struct Call<'a> {
    probe: &'a Probe,
    done: bool,
}

impl Call<'_> {
    fn finish(mut self) {
        self.done = true;
        self.probe
            .finished
            .lock()
            .unwrap()
            .push(self.probe.clock.now());
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.probe
                .cancelled
                .lock()
                .unwrap()
                .push(self.probe.clock.now());
        }
    }
}

#[event_handler(
    name = "heartbeat.black_hole",
    batch = 1,
    claim_timeout = "30s",
    poll = "1s"
)]
async fn black_hole(_job: Job, probe: State<Probe>) -> Result<(), HandlerError> {
    probe.started.lock().unwrap().push(probe.clock.now());
    let call = Call {
        probe: &probe,
        done: false,
    };
    probe.clock.sleep(probe.work).await;
    call.finish();
    Ok(())
}

/// An [`InMemoryStore`] whose every call hangs forever once [`cut`](Self::cut).
#[derive(Clone)]
struct BlackHole {
    inner: InMemoryStore,
    cut: Arc<AtomicBool>,
}

impl BlackHole {
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// `call`, unless cut: then a future that never completes.
    fn pass<'a, T: Send + 'a>(&self, call: BoxFuture<'a, T>) -> BoxFuture<'a, T> {
        if self.cut.load(Ordering::SeqCst) {
            Box::pin(std::future::pending())
        } else {
            call
        }
    }
}

impl Store for BlackHole {
    fn register<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> BoxFuture<'a, osa_events::Result<Vec<SubscriptionId>>> {
        self.pass(self.inner.register(subscriptions))
    }

    fn claim<'a>(
        &'a self,
        request: ClaimRequest<'a>,
    ) -> BoxFuture<'a, osa_events::Result<Vec<Delivery>>> {
        self.pass(self.inner.claim(request))
    }

    fn complete<'a>(
        &'a self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, osa_events::Result<u64>> {
        self.pass(self.inner.complete(subscription, done))
    }

    fn fail<'a>(
        &'a self,
        subscription: SubscriptionId,
        failures: &'a [Failure],
    ) -> BoxFuture<'a, osa_events::Result<u64>> {
        self.pass(self.inner.fail(subscription, failures))
    }

    fn extend<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
        claim_timeout: Duration,
    ) -> BoxFuture<'a, osa_events::Result<Vec<i64>>> {
        self.pass(self.inner.extend(subscription, claims, claim_timeout))
    }

    fn release<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
    ) -> BoxFuture<'a, osa_events::Result<u64>> {
        self.pass(self.inner.release(subscription, claims))
    }

    fn wake_ups(&self) -> Option<BoxFuture<'static, osa_events::Result<WakeUps>>> {
        self.inner.wake_ups()
    }
}

/// Starts a runtime of [`HANDLER`] on `store` and the fake clock, with `probe` as its state.
async fn start(store: impl Store, clock: &FakeClock, probe: Arc<Probe>) -> CancellationToken {
    let shutdown = CancellationToken::new();
    let runtime = Runtime::builder(store)
        .only([HANDLER])
        .resources(Resources::new().with_arc(probe))
        .clock(clock.clone())
        .handle_signals(false)
        .shutdown_token(shutdown.clone())
        .build()
        .expect("runtime builds");
    runtime.register().await.expect("subscription registers");
    // A cut-off runtime never returns (its claim hangs); the test's end drops it.
    tokio::spawn(runtime.run());
    shutdown
}

/// Moves the fake clock by `step` and lets every task run.
async fn tick(clock: &FakeClock, step: Duration) {
    clock.advance(step);
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_heartbeat_that_gets_no_answer_cancels_the_handler_before_the_claim_expires() {
    let clock = FakeClock::new();
    let inner = InMemoryStore::with_clock(clock.clone());
    let cut_off = BlackHole {
        inner: inner.clone(),
        cut: Arc::default(),
    };
    let first = Probe::new(&clock, Duration::from_secs(3600));
    let first_runtime = start(cut_off.clone(), &clock, first.clone()).await;
    inner.publish(&Job { n: 1 }).unwrap();
    for _ in 0..100 {
        if !Probe::times(&first.started).is_empty() {
            break;
        }
        tick(&clock, Duration::from_millis(100)).await;
    }
    let [started] = Probe::times(&first.started)[..] else {
        panic!("the first worker did not start the handler once");
    };
    // The claim was taken at the fake time the handler started: it expires a timeout later.
    let expires_at = started + CLAIM_TIMEOUT;
    cut_off.cut();

    // Another worker, on the same store but reachable, and with a handler that finishes at once.
    let second = Probe::new(&clock, Duration::ZERO);
    let second_runtime = start(inner.clone(), &clock, second.clone()).await;
    for _ in 0..60 {
        if !Probe::times(&second.finished).is_empty() {
            break;
        }
        tick(&clock, Duration::from_secs(1)).await;
    }

    let cancelled = Probe::times(&first.cancelled);
    assert_eq!(
        cancelled.len(),
        1,
        "the first worker's handler was not cancelled, though its heartbeat got no answer"
    );
    assert!(
        cancelled[0] < expires_at,
        "cancelled {:?} after the claim expired",
        cancelled[0] - expires_at
    );
    assert!(
        Probe::times(&first.finished).is_empty(),
        "the cut-off handler finished"
    );
    let taken_over = Probe::times(&second.started);
    assert_eq!(taken_over.len(), 1, "the second worker took the event over");
    assert!(
        taken_over[0] >= expires_at,
        "the second worker took over before the claim expired"
    );
    assert_eq!(Probe::times(&second.finished).len(), 1);
    let subscription = inner.subscription_id(HANDLER).unwrap();
    assert_eq!(inner.count(subscription, None), 0, "the delivery completed");
    first_runtime.cancel();
    second_runtime.cancel();
}
