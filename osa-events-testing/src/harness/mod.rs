//! [`Harness`]: unit tests of handlers on an [`InMemoryStore`] and a [`FakeClock`].

use std::fmt;
use std::time::Duration;

use osa_events::__private::{Handler, Stepper};
use osa_events::store::SubscriptionId;
use osa_events::{Event, HandlerOptions, Outgoing, Resources, Runtime, RuntimeBuilder};
use tokio::time::Instant;
use uuid::Uuid;

use crate::{DeliveryInfo, DeliveryStatus, FakeClock, InMemoryStore, RawEvent};

mod assert;
mod drive;
mod journal;
mod project;

pub use journal::{Attempt, AttemptOutcome};
pub use project::ProjectionFailed;

/// Runs registered handlers on an [`InMemoryStore`] and a [`FakeClock`], one claim at a time,
/// and records what became of every attempt: a handler test with no database, no sleeping and no
/// flakes.
///
/// The harness builds the handlers as [`Runtime`] does (the same selection, start-up checks and
/// `State<T>` binding, so test doubles go in the [`Resources`]) and runs the runtime's own claim
/// loop code: claims in batches, handler calls under a heartbeat, retries with the handler's
/// backoff, dead letters after its `retries`. Only the scheduling is the test's:
///
/// - [`step`](Self::step) runs one iteration of one handler's claim loop (claim a batch, handle
///   it, record the outcomes) and returns its [`Attempt`]s;
/// - [`drain`](Self::drain) steps every handler until nothing is due, moving the fake clock to the
///   next retry when only backoff is left, so a retry schedule of minutes runs in microseconds;
/// - [`project`](Self::project) applies a projection until it has caught up, batch by batch, with
///   its checkpoint in the store (and, for a projection that takes a `Tx`, what it published
///   through it, committed with the checkpoint).
///
/// Then inspect the journal ([`attempts`](Self::attempts), [`handled`](Self::handled),
/// [`retries`](Self::retries), [`dead_letters`](Self::dead_letters)) or assert on it
/// ([`assert_handled`](Self::assert_handled), [`assert_dead_lettered`](Self::assert_dead_lettered),
/// ...): a failed assertion prints what it expected, what it found, and the handler's journal.
///
/// # Time
///
/// Fake time moves only when the test or the harness moves it: [`drain`](Self::drain) to the next
/// due retry, and [`step`](Self::step) while a handler waits on the fake clock. When a step can
/// make no progress without time (its handler sleeps on the harness's clock, or hangs past its
/// `timeout`), the harness advances the clock to the next deadline, as tokio's paused clock
/// auto-advances: heartbeats fire, timeouts expire, and the step finishes in no real time. A
/// handler that waits on something else (a real timer, a channel) is waited for on real time.
///
/// Retry delays have jitter; it is seeded ([`HarnessBuilder::seed`]), so the same test gives the
/// same delays on every run.
///
/// # Handlers that take `Tx`
///
/// The [`InMemoryStore`] has transactions, so handlers and projections that take a
/// [`Tx`](osa_events::Tx) run here as on PostgreSQL: what they publish through
/// `tx.publish(..)`, `publish_routed(..)` or `publish_batch(..)` takes effect, with the
/// completion of the call's deliveries (or a projection's checkpoint), only when the call
/// succeeds and its claims still hold; after an error, a panic, a timeout or a claim taken over
/// it does not exist, and other handlers never see it before the commit. What they write through
/// `&mut *tx` (the `PgConnection`) needs PostgreSQL: in memory it panics, and the call fails as a
/// panicking handler does, so test those writes against a PostgreSQL database.
///
/// ```
/// use osa_events::prelude::*;
/// use osa_events_testing::Harness;
/// # use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize, Debug)]
/// #[event(name = "order.placed")]
/// struct OrderPlaced { id: u64 }
///
/// #[derive(Event, Serialize, Deserialize, Debug)]
/// #[event(name = "invoice.requested")]
/// struct InvoiceRequested { order: u64 }
///
/// /// Requests the invoice, then fails on its first attempt: that request is rolled back.
/// #[event_handler(name = "invoice.request", backoff = "5s")]
/// async fn request_invoice(order: OrderPlaced, mut tx: Tx, ctx: Ctx) -> Result<(), HandlerError> {
///     tx.publish(&InvoiceRequested { order: order.id }).await?;
///     if ctx.attempt() == 1 {
///         return Err(HandlerError::retry("the ledger is busy"));
///     }
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), osa_events::Error> {
/// let mut harness = Harness::builder().only(["invoice.request"]).build().await?;
/// harness.publish(&OrderPlaced { id: 7 });
///
/// harness.step("invoice.request").await; // fails: its publish is rolled back
/// let requested = |harness: &Harness| {
///     harness.published().iter().filter(|event| event.event_type == "invoice.requested").count()
/// };
/// assert_eq!(requested(&harness), 0);
///
/// harness.drain().await; // the retry commits its publish with the completion
/// harness.assert_retried("invoice.request", 1);
/// harness.assert_handled("invoice.request", 1);
/// assert_eq!(requested(&harness), 1, "once, from the attempt that succeeded");
/// # Ok(()) }
/// ```
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use osa_events::prelude::*;
/// use osa_events_testing::Harness;
/// # use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize, Debug)]
/// #[event(name = "order.placed")]
/// struct OrderPlaced { id: u64 }
///
/// /// A mailer that is down for its first two calls.
/// #[derive(Default)]
/// struct FlakyMailer { calls: AtomicU32 }
///
/// #[event_handler(name = "mail.confirm", retries = 3, backoff = "10s")]
/// async fn confirm(order: OrderPlaced, mailer: State<FlakyMailer>) -> Result<(), HandlerError> {
///     if mailer.calls.fetch_add(1, Ordering::SeqCst) < 2 {
///         return Err(HandlerError::retry(format!("smtp down, order {}", order.id)));
///     }
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), osa_events::Error> {
/// let mut harness = Harness::builder()
///     .resources(Resources::new().with(FlakyMailer::default()))
///     .only(["mail.confirm"])
///     .build()
///     .await?;
/// harness.publish(&OrderPlaced { id: 7 });
/// harness.drain().await; // three attempts, 10 s and ~20 s of backoff: instantly
///
/// harness.assert_retried("mail.confirm", 2);
/// harness.assert_handled("mail.confirm", 1);
/// harness.assert_dead_lettered("mail.confirm", 0);
/// assert!(harness.elapsed() >= std::time::Duration::from_secs(15));
/// # Ok(()) }
/// ```
pub struct Harness {
    store: InMemoryStore,
    clock: FakeClock,
    stepper: Stepper,
    handlers: Vec<(&'static str, SubscriptionId)>,
    journal: Vec<Attempt>,
    started: Instant,
    max_steps: usize,
}

/// Configures a [`Harness`]; from [`Harness::builder`].
#[derive(Debug)]
pub struct HarnessBuilder {
    resources: Resources,
    only: Vec<String>,
    exclude: Vec<String>,
    clock: Option<FakeClock>,
    seed: u64,
    max_steps: usize,
    /// From [`configure`](Self::configure), in call order.
    configured: Vec<(String, HandlerOptions)>,
    instances: Vec<InstanceStep>,
}

/// A [`HarnessBuilder::handler_instance`] call, replayed on the runtime's builder.
struct InstanceStep {
    name: String,
    add: Box<dyn FnOnce(RuntimeBuilder) -> RuntimeBuilder + Send + Sync>,
}

impl fmt::Debug for InstanceStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "handler_instance({:?}, ..)", self.name)
    }
}

impl Harness {
    /// Starts configuring a harness: every registered handler, no resources, a fresh fake clock.
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder {
            resources: Resources::new(),
            only: Vec::new(),
            exclude: Vec::new(),
            clock: None,
            seed: 0,
            max_steps: HarnessBuilder::DEFAULT_MAX_STEPS,
            configured: Vec::new(),
            instances: Vec::new(),
        }
    }

    /// Publishes `event` with no routing key, as a committed [`osa_events::publish`] would, and
    /// returns its id.
    ///
    /// # Panics
    ///
    /// When the event cannot be serialized, is over the payload limit or holds a NUL character (use
    /// [`store`](Self::store) to test that case).
    #[track_caller]
    pub fn publish<E: Event>(&self, event: &E) -> Uuid {
        self.store
            .publish(event)
            .unwrap_or_else(|error| panic!("Harness::publish: {error}"))
    }

    /// Publishes `event` with a routing key, as [`osa_events::publish_routed`] would.
    ///
    /// # Panics
    ///
    /// As for [`publish`](Self::publish).
    #[track_caller]
    pub fn publish_routed<E: Event>(&self, routing_key: &str, event: &E) -> Uuid {
        self.store
            .publish_routed(routing_key, event)
            .unwrap_or_else(|error| panic!("Harness::publish_routed: {error}"))
    }

    /// Publishes a batch, as [`osa_events::publish_batch`] would, and returns how many events were
    /// new. For payloads no Rust type produces, publish [`RawEvent`]s to the [`store`](Self::store).
    pub fn publish_batch(&self, events: &[Outgoing]) -> u64 {
        self.store.publish_batch(events)
    }

    /// Moves fake time forward, as [`FakeClock::advance`] does: retries whose backoff has passed
    /// become due for the next [`step`](Self::step).
    pub fn advance(&self, duration: Duration) {
        self.clock.advance(duration);
    }

    /// Fake time passed since the harness was built.
    pub fn elapsed(&self) -> Duration {
        self.clock.now() - self.started
    }

    /// The store the handlers run on, to publish [`RawEvent`]s or inspect rows.
    pub fn store(&self) -> &InMemoryStore {
        &self.store
    }

    /// The fake clock of the store and the handlers' runtime.
    pub fn clock(&self) -> &FakeClock {
        &self.clock
    }

    /// The names of the handlers this harness runs, sorted.
    pub fn handler_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.handlers.iter().map(|(name, _)| *name)
    }

    /// Every event published so far, in publish order.
    pub fn published(&self) -> Vec<RawEvent> {
        self.store.events()
    }

    /// Every attempt of every handler so far, in the order they were made.
    pub fn journal(&self) -> &[Attempt] {
        &self.journal
    }

    /// The attempts of `handler`, in order.
    ///
    /// # Panics
    ///
    /// When the harness runs no handler of that name (a typo must not pass as "no attempts").
    #[track_caller]
    pub fn attempts(&self, handler: &str) -> Vec<&Attempt> {
        self.attempts_where(handler, |_| true)
    }

    /// The successful attempts of `handler`: one per event it handled.
    ///
    /// # Panics
    ///
    /// As for [`attempts`](Self::attempts).
    #[track_caller]
    pub fn handled(&self, handler: &str) -> Vec<&Attempt> {
        self.attempts_where(handler, Attempt::is_handled)
    }

    /// The failed attempts of `handler` that were retried, with their errors and backoff.
    ///
    /// # Panics
    ///
    /// As for [`attempts`](Self::attempts).
    #[track_caller]
    pub fn retries(&self, handler: &str) -> Vec<&Attempt> {
        self.attempts_where(handler, Attempt::is_retried)
    }

    /// The attempts of `handler` that made a dead letter, with their errors.
    ///
    /// # Panics
    ///
    /// As for [`attempts`](Self::attempts).
    #[track_caller]
    pub fn dead_letters(&self, handler: &str) -> Vec<&Attempt> {
        self.attempts_where(handler, Attempt::is_dead_lettered)
    }

    /// The open deliveries of `handler` in the store: pending, claimed and dead, by position
    /// (completed ones are gone).
    ///
    /// # Panics
    ///
    /// As for [`attempts`](Self::attempts).
    #[track_caller]
    pub fn deliveries(&self, handler: &str) -> Vec<DeliveryInfo> {
        self.store.deliveries(self.subscription(handler))
    }

    /// The subscription of `handler` in the store.
    ///
    /// # Panics
    ///
    /// As for [`attempts`](Self::attempts).
    #[track_caller]
    pub fn subscription(&self, handler: &str) -> SubscriptionId {
        match self.handlers.iter().find(|(name, _)| *name == handler) {
            Some((_, subscription)) => *subscription,
            None => panic!(
                "this harness runs no handler `{handler}`; it runs {}",
                self.known()
            ),
        }
    }

    #[track_caller]
    fn attempts_where(&self, handler: &str, keep: impl Fn(&Attempt) -> bool) -> Vec<&Attempt> {
        let handler = self.name(handler);
        self.journal
            .iter()
            .filter(|attempt| attempt.handler == handler && keep(attempt))
            .collect()
    }

    /// The registered `&'static` name equal to `handler`.
    #[track_caller]
    fn name(&self, handler: &str) -> &'static str {
        self.subscription(handler);
        self.handler_names()
            .find(|name| *name == handler)
            .expect("checked by `subscription`")
    }

    fn known(&self) -> String {
        let names: Vec<String> = self.handler_names().map(|n| format!("`{n}`")).collect();
        names.join(", ")
    }

    /// Open (pending or claimed) deliveries of every handler, for messages.
    fn open_deliveries(&self) -> Vec<DeliveryInfo> {
        let mut open = Vec::new();
        for (_, subscription) in &self.handlers {
            open.extend(
                self.store
                    .deliveries(*subscription)
                    .into_iter()
                    .filter(|delivery| delivery.status != DeliveryStatus::Dead),
            );
        }
        open
    }
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("handlers", &self.handlers)
            .field("elapsed", &self.elapsed())
            .field("attempts", &self.journal.len())
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl HarnessBuilder {
    /// The default bound of [`Harness::drain`]: this many claim-loop iterations without settling
    /// is taken for a loop.
    pub const DEFAULT_MAX_STEPS: usize = 10_000;

    /// The resources handlers take as `State<T>`: put the test doubles here.
    #[must_use]
    pub fn resources(mut self, resources: Resources) -> Self {
        self.resources = resources;
        self
    }

    /// Runs only the handlers and projections with these names. Without it the harness runs every
    /// one registered in the test binary, which fails [`build`](Self::build) when one of them
    /// needs a resource this test does not provide.
    #[must_use]
    pub fn only<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.only.extend(names.into_iter().map(Into::into));
        self
    }

    /// Runs every registered handler except these.
    #[must_use]
    pub fn exclude<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exclude.extend(names.into_iter().map(Into::into));
        self
    }

    /// Uses this clock (a fresh one by default), e.g. one a test double also reads.
    #[must_use]
    pub fn clock(mut self, clock: FakeClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Seeds the jitter of retry delays (default 0): the same seed gives the same delays.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// How many claim-loop iterations [`Harness::drain`] runs before it gives up with a panic
    /// (default [`DEFAULT_MAX_STEPS`](Self::DEFAULT_MAX_STEPS)).
    #[must_use]
    pub fn max_steps(mut self, max_steps: usize) -> Self {
        self.max_steps = max_steps;
        self
    }

    /// Overrides options of handler `handler`, as
    /// [`RuntimeBuilder::configure`](osa_events::RuntimeBuilder::configure) does. The harness
    /// never reads the `OSA_EVENTS_HANDLER_*` environment variables: a test runs with what it
    /// says, whatever the shell that runs it has set.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> osa_events::Result<()> {
    /// let harness = osa_events_testing::Harness::builder()
    ///     .only(["index.vector"])
    ///     .configure("index.vector", |o| o.batch(2))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn configure(
        mut self,
        handler: impl Into<String>,
        options: impl FnOnce(HandlerOptions) -> HandlerOptions,
    ) -> Self {
        self.configured
            .push((handler.into(), options(HandlerOptions::new())));
        self
    }

    /// Runs handler `H` once more as handler `name`, as
    /// [`RuntimeBuilder::handler_instance`](osa_events::RuntimeBuilder::handler_instance) does.
    /// Select it with [`only`](Self::only) like any handler.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use osa_events::prelude::*;
    /// # #[derive(Event, serde::Serialize, serde::Deserialize)] #[event(name = "record.published")] struct RecordPublished;
    ///
    /// #[event_handler(name = "backup", register = false)]
    /// async fn backup_to(event: RecordPublished) -> Result<(), HandlerError> {
    ///     Ok(())
    /// }
    ///
    /// # async fn example() -> osa_events::Result<()> {
    /// let mut harness = osa_events_testing::Harness::builder()
    ///     .handler_instance::<BackupToHandler>("backup.s3", |o| o.routing_key("s3"))
    ///     .only(["backup.s3"])
    ///     .build()
    ///     .await?;
    /// harness.publish_routed("s3", &RecordPublished);
    /// harness.drain().await;
    /// harness.assert_handled("backup.s3", 1);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn handler_instance<H: Handler>(
        mut self,
        name: impl Into<String>,
        options: impl FnOnce(HandlerOptions) -> HandlerOptions + Send + Sync + 'static,
    ) -> Self {
        let name = name.into();
        let instance = name.clone();
        self.instances.push(InstanceStep {
            name,
            add: Box::new(move |builder| builder.handler_instance::<H>(instance, options)),
        });
        self
    }

    /// Selects and binds the handlers, as [`RuntimeBuilder::build`](osa_events::RuntimeBuilder::build)
    /// does, and registers their subscriptions in a fresh [`InMemoryStore`]: events published from
    /// now on reach them.
    ///
    /// # Errors
    ///
    /// The errors of [`RuntimeBuilder::build`](osa_events::RuntimeBuilder::build): an unknown
    /// name, no handler left, a `State<T>` with no `T` in the resources. Handlers and projections
    /// that take a `Tx` build (see [Handlers that take `Tx`](Harness#handlers-that-take-tx)).
    pub async fn build(self) -> osa_events::Result<Harness> {
        let clock = self.clock.unwrap_or_default();
        let store = InMemoryStore::with_clock(clock.clone());
        let mut builder = Runtime::builder(store.clone())
            .clock(clock.clone())
            .resources(self.resources)
            .only(self.only)
            .exclude(self.exclude)
            .handle_signals(false)
            .read_environment(false)
            .instance_name("harness");
        for (handler, options) in self.configured {
            builder = builder.configure(handler, |_| options);
        }
        for instance in self.instances {
            builder = (instance.add)(builder);
        }
        let stepper = builder.build()?.into_stepper(self.seed).await?;
        let handlers = stepper
            .handlers()
            .map(|(spec, subscription)| (spec.name(), subscription))
            .collect();
        Ok(Harness {
            started: clock.now(),
            store,
            clock,
            stepper,
            handlers,
            journal: Vec::new(),
            max_steps: self.max_steps,
        })
    }
}
