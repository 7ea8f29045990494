//! [`Runtime`]: starts every registered handler's claim loops and stops them gracefully.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::handler::overrides::{self, Override};
use crate::handler::registry::{self, Candidate};
use crate::handler::{Handler, HandlerOptions, HandlerSpec, Invoker};
use crate::health::{Health, HealthBoard, Phase, StoppedOnDrop, loop_metrics};
use crate::metrics::HandlerMetrics;
use crate::operations::{ActivityKind, Retention, StartFrom};
use crate::projection::ProjectionSpec;
use crate::projection::runner::ProjectionRunner;
use crate::store::{Store, Subscription, SubscriptionId};
use crate::upkeep::{self, ActivityBoard};
use crate::worker::Worker;
use crate::worker::fatal::FatalStop;
#[cfg(feature = "test-util")]
use crate::worker::step::Stepper;
use crate::worker::supervise::supervise;
use crate::worker::wake::{self, WakeBoard};
use crate::{Clock, Resources, Result, SystemClock};

/// Runs every handler registered with `#[event_handler]` until SIGINT or SIGTERM.
///
/// The same as `Runtime::builder(store).resources(resources).build()?.run().await`; use the
/// [`builder`](Runtime::builder) to select handlers, set the grace period or trigger shutdown
/// yourself. Like the builder, it applies the `OSA_EVENTS_HANDLER_<NAME>_<OPTION>` overrides of
/// the process environment (see [`RuntimeBuilder::environment`]).
///
/// # Examples
///
/// ```no_run
/// # async fn example() -> Result<(), osa_events::Error> {
/// let store = osa_events::PgStore::connect("postgres://app@localhost/app").await?;
/// store.migrate().await?;
/// osa_events::run_all_handlers(store, osa_events::Resources::new()).await
/// # }
/// ```
///
/// # Errors
///
/// Start-up errors (see [`RuntimeBuilder::build`] and [`Runtime::run`]).
pub async fn run_all_handlers(store: impl Store, resources: Resources) -> Result<()> {
    Runtime::builder(store)
        .resources(resources)
        .build()?
        .run()
        .await
}

/// A configured set of handlers, ready to run.
///
/// # Examples
///
/// ```no_run
/// # async fn example(store: osa_events::PgStore) -> Result<(), osa_events::Error> {
/// use std::time::Duration;
/// use osa_events::{Resources, Runtime};
///
/// let runtime = Runtime::builder(store)
///     .resources(Resources::new())
///     .only(["index.vector", "index.keyword"]) // this node runs the indexers only
///     .grace_period(Duration::from_secs(10))
///     .build()?;
/// let shutdown: osa_events::CancellationToken = runtime.shutdown_token();
/// tokio::spawn(async move {
///     tokio::time::sleep(Duration::from_secs(3600)).await;
///     shutdown.cancel(); // stops the runtime gracefully, as SIGTERM would
/// });
/// runtime.run().await
/// # }
/// ```
#[derive(Debug)]
pub struct Runtime {
    store: Arc<dyn Store>,
    handlers: Vec<BoundHandler>,
    projections: Vec<BoundProjection>,
    clock: Arc<dyn Clock>,
    grace_period: Duration,
    handle_signals: bool,
    shutdown: CancellationToken,
    instance: String,
    namespace: Option<String>,
    retention: Option<Retention>,
    node_heartbeat: Duration,
    /// What the loops record for [`health`](Self::health).
    health: Arc<HealthBoard>,
    /// `None`: this node never samples the metrics gauges.
    metrics_interval: Option<Duration>,
}

#[derive(Debug)]
struct BoundHandler {
    spec: HandlerSpec,
    invoker: Arc<Invoker>,
    /// The subscription's name: the handler's, qualified by the namespace.
    stored_name: String,
    /// The revision from [`RuntimeBuilder::repoint`], else 1.
    revision: u32,
    /// From [`RuntimeBuilder::start_from`], else the spec's.
    start_from: StartFrom,
}

#[derive(Debug)]
struct BoundProjection {
    spec: ProjectionSpec,
    invoker: Arc<Invoker>,
    /// The checkpoint's name: the projection's, qualified by the namespace.
    stored_name: &'static str,
}

/// Builds a [`Runtime`]; from [`Runtime::builder`].
#[derive(Debug)]
pub struct RuntimeBuilder {
    store: Arc<dyn Store>,
    resources: Resources,
    only: Vec<String>,
    exclude: Vec<String>,
    clock: Arc<dyn Clock>,
    grace_period: Duration,
    handle_signals: bool,
    shutdown: CancellationToken,
    instance: Option<String>,
    namespace: Option<String>,
    repoint: Vec<(String, u32)>,
    start_from: Vec<(String, StartFrom)>,
    retention: Option<Retention>,
    node_heartbeat: Duration,
    metrics_interval: Duration,
    sample_metrics: bool,
    /// From [`configure`](RuntimeBuilder::configure), in call order.
    configured: Vec<(String, HandlerOptions)>,
    instances: Vec<Instance>,
    environment: Environment,
}

/// A [`RuntimeBuilder::handler_instance`] call.
#[derive(Debug)]
struct Instance {
    name: String,
    template: HandlerSpec,
    bind: fn(&Resources) -> Result<Invoker>,
    options: HandlerOptions,
}

impl Instance {
    /// The instance as a handler: the template's spec under the instance's name and routing key
    /// (its other options are applied with the overrides, so that messages name the call).
    fn candidate(&self) -> Result<Candidate> {
        let fail = |message: String| {
            Err(crate::Error::Config(
                format!("`handler_instance({:?}, ..)`: {message}", self.name).into(),
            ))
        };
        if let Err(message) = crate::handler::limits::check_name(&self.name, "name") {
            return fail(message);
        }
        let mut spec = self.template.with_name(intern(self.name.clone()));
        if let Some(routing_key) = &self.options.routing_key {
            if let Err(message) = crate::handler::limits::check_name(routing_key, "routing_key") {
                return fail(message);
            }
            spec = spec.with_routing_key(intern(routing_key.clone()));
        }
        if let Err(message) = self.options.check() {
            return fail(message);
        }
        Ok(Candidate {
            spec,
            bind: self.bind,
            origin: intern(format!("{} (handler_instance)", self.template.rust_path())),
            template: Some(self.template.name()),
        })
    }
}

/// Where [`RuntimeBuilder::build`] reads the `OSA_EVENTS_HANDLER_*` overrides.
#[derive(Debug, Clone)]
enum Environment {
    /// The process environment, at `build`.
    Process,
    /// These variables ([`RuntimeBuilder::environment`]).
    Vars(Vec<(String, String)>),
    /// Nowhere ([`RuntimeBuilder::read_environment`]`(false)`).
    Off,
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Store")
    }
}

impl Runtime {
    /// The default grace period: how long in-flight handlers may run on after shutdown begins.
    pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

    /// The default interval of the node record's heartbeat ([`RuntimeBuilder::node_heartbeat`]).
    pub const DEFAULT_NODE_HEARTBEAT: Duration = Duration::from_secs(10);

    /// The default interval of the metrics gauges' sampling
    /// ([`RuntimeBuilder::metrics_interval`]).
    pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(15);

    /// The shortest interval of the metrics gauges' sampling: a shorter one is raised to it.
    pub const MIN_METRICS_INTERVAL: Duration = Duration::from_secs(1);

    /// Starts configuring a runtime on `store`.
    pub fn builder(store: impl Store) -> RuntimeBuilder {
        RuntimeBuilder {
            store: Arc::new(store),
            resources: Resources::new(),
            only: Vec::new(),
            exclude: Vec::new(),
            clock: Arc::new(SystemClock),
            grace_period: Self::DEFAULT_GRACE_PERIOD,
            handle_signals: true,
            shutdown: CancellationToken::new(),
            instance: None,
            namespace: None,
            repoint: Vec::new(),
            start_from: Vec::new(),
            retention: None,
            node_heartbeat: Self::DEFAULT_NODE_HEARTBEAT,
            metrics_interval: Self::DEFAULT_METRICS_INTERVAL,
            sample_metrics: true,
            configured: Vec::new(),
            instances: Vec::new(),
            environment: Environment::Process,
        }
    }

    /// A token that starts graceful shutdown when cancelled, as SIGTERM does.
    ///
    /// It is [`osa_events::CancellationToken`](crate::CancellationToken) (tokio-util's, re-exported),
    /// so an application can keep it without a direct dependency on tokio-util.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// A handle on this runtime's health, for liveness and readiness probes: take it before
    /// [`run`](Self::run) consumes the runtime. See [`health`](crate::health) for what live and
    /// ready mean.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(store: osa_events::PgStore) -> Result<(), osa_events::Error> {
    /// let runtime = osa_events::Runtime::builder(store).build()?;
    /// let health = runtime.health();
    /// tokio::spawn(async move {
    ///     loop {
    ///         tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    ///         let report = health.report();
    ///         if !report.ready {
    ///             eprintln!("not ready: {}", report.reasons.join("; "));
    ///         }
    ///     }
    /// });
    /// runtime.run().await
    /// # }
    /// ```
    pub fn health(&self) -> Health {
        Health::new(Arc::clone(&self.health))
    }

    /// The specs of the handlers this runtime runs (its [instances](RuntimeBuilder::handler_instance)
    /// included), sorted by name, with the run-time overrides applied: what the claim loops run
    /// with.
    pub fn handlers(&self) -> impl Iterator<Item = &HandlerSpec> {
        self.handlers.iter().map(|handler| &handler.spec)
    }

    /// The specs of the projections this runtime runs, sorted by name.
    pub fn projections(&self) -> impl Iterator<Item = &ProjectionSpec> {
        self.projections.iter().map(|projection| &projection.spec)
    }

    /// Creates or updates the handlers' subscriptions, so that events published from now on are
    /// delivered to them. [`run`](Self::run) does this too; call it first when the same program
    /// publishes before it runs, or a handler's first events could be published before its
    /// subscription exists (a subscription receives only events published after it was created).
    ///
    /// A subscription is stored under the handler's name, qualified by the
    /// [namespace](RuntimeBuilder::namespace) (`billing@on_order_placed`). Its event type and
    /// routing key are fixed once stored: registering another one under the same name is refused
    /// unless [re-pointed](RuntimeBuilder::repoint) at a higher revision, so an older process
    /// restarting during a rolling deploy cannot revert what a newer one registered.
    ///
    /// # Errors
    ///
    /// [`Error::SubscriptionConflict`](crate::Error::SubscriptionConflict) when a stored
    /// subscription has another event type or routing key (nothing is registered then),
    /// [`Error::Database`](crate::Error::Database) when the store fails.
    pub async fn register(&self) -> Result<Vec<SubscriptionId>> {
        let subscriptions: Vec<Subscription> = self
            .handlers
            .iter()
            .map(|handler| Subscription {
                name: handler.stored_name.clone(),
                event_type: handler.spec.event_type().to_owned(),
                routing_key: handler.spec.routing_key().map(str::to_owned),
                config: handler.spec.config_json(),
                revision: handler.revision,
                start_from: handler.start_from,
                ordered: handler.spec.ordered(),
            })
            .collect();
        self.store.register(&subscriptions).await
    }

    /// Records each projection's event types with its checkpoint, refusing a projection whose
    /// types changed since its checkpoint was built (see
    /// [`ProjectionStore::record_event_types`](crate::ProjectionStore::record_event_types)).
    async fn record_projection_event_types(&self) -> Result<()> {
        if let Some(store) = self.store.projections() {
            for projection in &self.projections {
                store
                    .record_event_types(projection.stored_name, projection.spec.event_types())
                    .await?;
            }
        }
        Ok(())
    }

    /// Test hook (feature `test-util`): hands the handlers to a [`Stepper`] instead of running
    /// them, for the harness and the simulator of `osa-events-testing`, which drive the claim
    /// loops themselves (see [`Stepper`]). Registers the subscriptions first, as [`run`](Self::run) does;
    /// `jitter_seed` makes the retry delays repeatable. Projections are stepped with
    /// [`Stepper::project`].
    ///
    /// # Errors
    ///
    /// [`Error::Database`](crate::Error::Database) when the subscriptions cannot be registered.
    #[cfg(feature = "test-util")]
    #[doc(hidden)]
    pub async fn into_stepper(self, jitter_seed: u64) -> Result<Stepper> {
        let subscriptions = self.register().await?;
        self.record_projection_event_types().await?;
        let handlers = self
            .handlers
            .into_iter()
            .zip(subscriptions)
            .map(|(handler, subscription)| {
                (
                    handler.spec,
                    handler.invoker,
                    subscription,
                    handler.stored_name,
                )
            })
            .collect();
        let projections = self
            .projections
            .into_iter()
            .map(|projection| (projection.spec, projection.stored_name, projection.invoker))
            .collect();
        Ok(Stepper::new(
            self.store,
            self.clock,
            self.instance,
            handlers,
            projections,
            jitter_seed,
        ))
    }

    /// Registers the subscriptions, runs `concurrency` claim loops per handler, and returns after
    /// a graceful shutdown: on SIGINT/SIGTERM (unless disabled) or when the
    /// [`shutdown_token`](Self::shutdown_token) is cancelled. Shutdown stops claiming at once, lets
    /// running handlers finish within the grace period, then stops them and releases their claims
    /// so another process picks the deliveries up immediately.
    ///
    /// # Errors
    ///
    /// [`Error::SubscriptionConflict`](crate::Error::SubscriptionConflict) when a handler's stored
    /// subscription has another event type or routing key (see [`register`](Self::register)),
    /// [`Error::Database`](crate::Error::Database) when the subscriptions cannot be registered,
    /// [`Error::Signal`](crate::Error::Signal) when signal handlers cannot be installed. Once running,
    /// store errors are logged and retried, never returned.
    ///
    /// [`Error::Fatal`](crate::Error::Fatal) when a handler returned
    /// [`HandlerError::fatal`](crate::HandlerError::fatal): the runtime gives that call's
    /// deliveries back (unfailed, due at once, the attempt not counted), stops as it does on
    /// SIGTERM (no new claims, the running calls of every handler finish within the grace period,
    /// what is left is released), and returns the first such error once stopped, so a `main`
    /// that returns it exits with a non-zero status. The [`shutdown_token`](Self::shutdown_token)
    /// is not cancelled by it.
    ///
    /// ```no_run
    /// # use osa_events::{Resources, Runtime};
    /// #[tokio::main]
    /// async fn main() -> Result<(), osa_events::Error> {
    ///     let store = osa_events::PgStore::connect("postgres://app@localhost/app").await?;
    ///     // A fatal handler error ends `main` with `Err`: the process exits with status 1.
    ///     Runtime::builder(store).resources(Resources::new()).build()?.run().await
    /// }
    /// ```
    ///
    /// # Supervision
    ///
    /// A panic in a handler call, in a payload's `Deserialize` or in an extractor is a failed
    /// attempt of the events it concerns (see the crate's failure docs), never the end of a loop.
    /// A claim loop or projection loop that dies anyway (a panic in a store or a clock, or a loop
    /// that returns before shutdown) is logged at ERROR with the cause and started again: after
    /// 100 ms, doubling with each death in a row, at most 30 s. The runtime keeps running; it
    /// never goes on with a loop silently missing, and its [`health`](Self::health) reports it
    /// not live until the loop is restarted.
    ///
    /// # Metrics
    ///
    /// The claim loops record counters and histograms through the `metrics` facade, and one node
    /// of the fleet samples gauges (see [`RuntimeBuilder::metrics_interval`] and
    /// `docs/metrics.md`). Install the recorder (the exporter) before calling `run`: each claim
    /// loop resolves its metric handles once, as it starts, against the recorder installed then.
    pub async fn run(self) -> Result<()> {
        let health = Arc::clone(&self.health);
        let _stopped = StoppedOnDrop(Arc::clone(&health));
        health.enter(Phase::Starting);
        crate::metrics::describe();
        // A child of the shutdown token: cancelled with it, and also by a fatal handler error,
        // which stops this runtime without cancelling the application's token.
        let stopping = self.shutdown.child_token();
        let aborting = CancellationToken::new();
        let fatal = FatalStop::new(stopping.clone());
        // Listen before the first round trip, so a signal during start-up stops cleanly too.
        if self.handle_signals {
            spawn_signal_listener(self.shutdown.clone(), stopping.clone())?;
        }
        let subscriptions = self.register().await?;
        self.record_projection_event_types().await?;
        self.check_pool_size();

        let board = Arc::new(WakeBoard::new(subscriptions.iter().copied()));
        let mut tasks = JoinSet::new();
        tasks.spawn(wake::listen(
            Arc::clone(&self.store),
            Arc::clone(&board),
            Arc::clone(&self.clock),
            stopping.clone(),
        ));
        let process = self.instance.clone();
        let activity = Arc::new(ActivityBoard::new(
            self.handlers.iter().map(|h| h.stored_name.as_str()),
            self.projections.iter().map(|p| p.stored_name),
        ));
        for (index, (handler, subscription)) in self.handlers.iter().zip(&subscriptions).enumerate()
        {
            let metrics = HandlerMetrics::new(
                &handler.stored_name,
                Arc::clone(&self.clock),
                activity.counter(ActivityKind::Handler, &handler.stored_name),
            );
            for slot in 0..handler.spec.concurrency() {
                let watch = health.start_claim_loop(index, slot as usize);
                let worker = Worker {
                    spec: handler.spec,
                    subscription: *subscription,
                    invoker: Arc::clone(&handler.invoker),
                    store: Arc::clone(&self.store),
                    clock: Arc::clone(&self.clock),
                    name: format!("{process}/{}#{slot}", handler.spec.name()),
                    wake: board.waiter(*subscription),
                    stopping: stopping.clone(),
                    aborting: aborting.clone(),
                    fatal: fatal.clone(),
                    health: watch.clone(),
                    metrics: metrics.clone(),
                };
                tasks.spawn(supervise(
                    format!("claim loop {slot} of handler `{}`", handler.spec.name()),
                    stopping.clone(),
                    Arc::clone(&self.clock),
                    watch,
                    move || worker.clone().run(),
                ));
            }
        }
        let node = self
            .start_upkeep(&mut tasks, &subscriptions, &board, &activity, &stopping)
            .await;
        if let Some(store) = self.store.projections() {
            for (index, projection) in self.projections.iter().enumerate() {
                let watch = health.start_projection(index);
                let runner = ProjectionRunner {
                    spec: projection.spec,
                    name: projection.stored_name,
                    invoker: Arc::clone(&projection.invoker),
                    store: Arc::clone(&store),
                    clock: Arc::clone(&self.clock),
                    process: process.clone(),
                    stopping: stopping.clone(),
                    health: watch.clone(),
                    activity: activity.counter(ActivityKind::Projection, projection.stored_name),
                };
                tasks.spawn(supervise(
                    format!("loop of projection `{}`", projection.spec.name()),
                    stopping.clone(),
                    Arc::clone(&self.clock),
                    watch,
                    move || runner.clone().run(),
                ));
            }
        }
        tasks.spawn(loop_metrics::keep_loop_gauges(
            Arc::clone(&health),
            loop_metrics::refresh_every(self.metrics_interval),
            Arc::clone(&self.clock),
            stopping.clone(),
        ));
        health.enter(Phase::Running);
        tracing::info!(
            handlers = self.handlers.len(),
            projections = self.projections.len(),
            tasks = tasks.len(),
            "osa-events runtime started"
        );

        stopping.cancelled().await;
        health.enter(Phase::Stopping);
        tracing::info!(grace_period = ?self.grace_period, "shutting down: no new claims");
        let grace = self.clock.sleep(self.grace_period);
        let abort_after_grace = {
            let aborting = aborting.clone();
            async move {
                grace.await;
                aborting.cancel();
            }
        };
        tokio::select! {
            () = join_all(&mut tasks) => {}
            () = abort_after_grace => {
                tracing::warn!("grace period over: stopping running handlers and releasing their claims");
                join_all(&mut tasks).await;
            }
        }
        if let (Some(node), Some(operations)) = (node, self.store.operations()) {
            // Every loop has stopped: this takes the last of the counts.
            if let Err(error) = activity.flush(operations).await {
                tracing::warn!(%error, "cannot record the last of the activity history; the counts since the last heartbeat are lost");
            }
            if let Err(error) = operations.remove_node(node).await {
                tracing::warn!(%error, "cannot remove this node's record; it expires on its own");
            }
        }
        if let Some(error) = fatal.take() {
            tracing::error!(%error, "osa-events runtime stopped by a fatal handler error");
            return Err(error);
        }
        tracing::info!("osa-events runtime stopped");
        Ok(())
    }

    /// Records this node and starts the upkeep tasks (the node's heartbeat, the activity
    /// history's flush on the same interval, backfills, periodic retention, the metrics gauges'
    /// sampling) on a store with the operations API; returns the node's id.
    async fn start_upkeep(
        &self,
        tasks: &mut JoinSet<()>,
        subscriptions: &[SubscriptionId],
        board: &Arc<WakeBoard>,
        activity: &Arc<ActivityBoard>,
        stopping: &CancellationToken,
    ) -> Option<uuid::Uuid> {
        let Some(operations) = self.store.operations() else {
            if self.metrics_interval.is_some() {
                tracing::debug!("the store has no operations API: no metrics gauges are sampled");
            }
            return None;
        };
        let record = upkeep::node_record(
            &self.instance,
            self.namespace.as_deref(),
            self.handlers
                .iter()
                .map(|h| h.stored_name.clone())
                .collect(),
            self.projections
                .iter()
                .map(|p| p.stored_name.to_owned())
                .collect(),
            self.node_heartbeat,
        );
        if let Err(error) = operations.record_node(&record).await {
            tracing::warn!(%error, "cannot record this node; retrying at the next heartbeat");
        }
        let id = record.id;
        tasks.spawn(upkeep::keep_node_record(
            Arc::clone(&self.store),
            record,
            Arc::clone(&self.clock),
            stopping.clone(),
        ));
        tasks.spawn(upkeep::keep_activity(
            Arc::clone(&self.store),
            Arc::clone(activity),
            self.node_heartbeat,
            Arc::clone(&self.clock),
            stopping.clone(),
        ));
        for (handler, subscription) in self.handlers.iter().zip(subscriptions) {
            tasks.spawn(upkeep::backfill(
                Arc::clone(&self.store),
                handler.stored_name.clone(),
                *subscription,
                Arc::clone(board),
                Arc::clone(&self.clock),
                stopping.clone(),
            ));
        }
        if let Some(retention) = self.retention {
            tasks.spawn(upkeep::keep_retention(
                Arc::clone(&self.store),
                retention,
                Arc::clone(&self.clock),
                stopping.clone(),
            ));
        }
        if let Some(every) = self.metrics_interval {
            tasks.spawn(upkeep::sample_gauges(
                Arc::clone(&self.store),
                id,
                every,
                Arc::clone(&self.clock),
                stopping.clone(),
            ));
        }
        Some(id)
    }
}

impl Runtime {
    /// Warns when the store's pool is too small for this runtime.
    ///
    /// Handlers that take a `Tx` (for PostgreSQL, the pool is too small): each of their claim
    /// loops holds a transaction for its whole call, and the claim loops need one more connection
    /// for claims, completions and heartbeats. A starved handler does not lose attempts (its
    /// claims are released unattempted), but it waits.
    ///
    /// Otherwise, more claim loops (every handler's `concurrency`, one per projection) than
    /// connections: each loop uses a connection for every statement, so the loops queue for
    /// connections and the configured concurrency is not reached.
    fn check_pool_size(&self) {
        let Some(max_connections) = self
            .store
            .transactions()
            .and_then(|transactions| transactions.capacity())
        else {
            return;
        };
        let tx_loops: u32 = self
            .handlers
            .iter()
            .filter(|handler| handler.invoker.transactional)
            .map(|handler| handler.spec.concurrency())
            .sum();
        let needed = tx_loops.saturating_add(1);
        if tx_loops > 0 && max_connections < needed {
            tracing::warn!(
                max_connections,
                needed,
                tx_loops,
                "the connection pool is too small for the handlers that take `Tx`: each of their \
                 {tx_loops} claim loops holds a connection while it runs, and the claim loops need \
                 one more; handlers will wait for connections (their claims are released, not \
                 failed): give the pool at least {needed} connections"
            );
            return;
        }
        let loops: u32 = self
            .handlers
            .iter()
            .map(|handler| handler.spec.concurrency())
            .sum::<u32>()
            .saturating_add(u32::try_from(self.projections.len()).unwrap_or(u32::MAX));
        if loops > max_connections {
            tracing::warn!(
                max_connections,
                loops,
                "more claim loops than database connections: the {loops} claim loops of this \
                 runtime (every handler's concurrency, one per projection) queue for \
                 {max_connections} connections, so the configured concurrency is not reached: \
                 give the pool at least {loops} connections (for PostgreSQL: PgStore::connect_with_pool)"
            );
        }
    }
}

async fn join_all(tasks: &mut JoinSet<()>) {
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = joined {
            tracing::error!(%error, "a claim loop ended abnormally");
        }
    }
}

/// `host:pid`: the name a runtime instance goes by unless
/// [`RuntimeBuilder::instance_name`] says otherwise (the prefix of every claim loop's name in
/// `claimed_by`, and a projection leader's name), for other long-running parts of a process that
/// should be named the same way.
pub fn default_instance_name() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

/// This machine's host name (`HOSTNAME`, else `/etc/hostname`, else `localhost`).
pub(crate) fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Cancels `shutdown` on SIGINT or SIGTERM; ends when `stopping` (its child) is cancelled, by
/// either or by a fatal handler error.
fn spawn_signal_listener(shutdown: CancellationToken, stopping: CancellationToken) -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).map_err(crate::Error::Signal)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(crate::Error::Signal)?;
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM received"),
                _ = interrupt.recv() => tracing::info!("SIGINT received"),
                () = stopping.cancelled() => return,
            }
            shutdown.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => shutdown.cancel(),
            () = stopping.cancelled() => {}
        }
    });
    Ok(())
}

impl RuntimeBuilder {
    /// The shared resources handlers take as `State<T>`.
    #[must_use]
    pub fn resources(mut self, resources: Resources) -> Self {
        self.resources = resources;
        self
    }

    /// Runs only the handlers with these names (all by default). Unknown names fail
    /// [`build`](Self::build).
    #[must_use]
    pub fn only<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.only.extend(names.into_iter().map(Into::into));
        self
    }

    /// Runs every handler except these. Unknown names fail [`build`](Self::build).
    #[must_use]
    pub fn exclude<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exclude.extend(names.into_iter().map(Into::into));
        self
    }

    /// How long running handlers may go on after shutdown begins (default 30 s).
    #[must_use]
    pub fn grace_period(mut self, grace_period: Duration) -> Self {
        self.grace_period = grace_period;
        self
    }

    /// Whether SIGINT and SIGTERM start graceful shutdown (default `true`).
    #[must_use]
    pub fn handle_signals(mut self, handle_signals: bool) -> Self {
        self.handle_signals = handle_signals;
        self
    }

    /// Uses this token for shutdown: cancelling it starts graceful shutdown. Build one with
    /// [`CancellationToken::new`](crate::CancellationToken::new).
    #[must_use]
    pub fn shutdown_token(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// Names this runtime instance in `claimed_by` and in the `application_name` of projection
    /// leaders (default `host:pid`), so operators can tell nodes apart.
    #[must_use]
    pub fn instance_name(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }

    /// Puts this runtime's handlers and projections in the application namespace `namespace`, so
    /// that several applications can share one database: a handler `on_order_placed` of namespace
    /// `billing` and one of namespace `shipping` are two subscriptions, each receiving every event
    /// of its type, and their projections of the same name keep two checkpoints and two leaders.
    ///
    /// In the store, a namespaced handler or projection `x` is named `billing@x` (the
    /// `subscriptions` and `checkpoints` tables, and the names operations take); without a
    /// namespace (the default) it is named `x`. A namespace is 1 to 64 ASCII letters, digits and
    /// `. _ -`. Every process of one application must use the same namespace: adding one to a
    /// running application creates new subscriptions, which receive only events published after
    /// they were created, and new projections, which start from the beginning of the log.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(store: osa_events::PgStore) -> Result<(), osa_events::Error> {
    /// let runtime = osa_events::Runtime::builder(store).namespace("billing").build()?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Re-points handler `handler`'s subscription, on purpose, at the event type and routing key
    /// this build declares for it, as revision `revision` of the subscription.
    ///
    /// A subscription's event type and routing key are fixed once stored: registering others under
    /// the same name fails start-up with
    /// [`Error::SubscriptionConflict`](crate::Error::SubscriptionConflict). A registration with a
    /// revision above the stored one re-points the subscription instead (keeping its id and its
    /// open deliveries) and stores the revision; one with a lower revision never overwrites it,
    /// so an older build restarting after the change fails start-up instead of reverting it.
    /// Keep the call in the code after the deploy, and raise the revision for the next change.
    /// Without it, a handler registers at revision 1.
    ///
    /// Processes of the old version that are still running keep claiming the subscription's
    /// deliveries: they handle the new routing key's events with the old code, and dead-letter
    /// events of a new type (they cannot decode them). A rolling deploy that changes a handler's
    /// event type or routing key is therefore safer under a new handler `name`; the handler guide
    /// ("Changing what a handler subscribes to") gives both procedures.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(store: osa_events::PgStore) -> Result<(), osa_events::Error> {
    /// // `on_order_placed` now receives `order.placed` v2 events with routing key `eu`
    /// // (revision 1 was the first registration).
    /// let runtime = osa_events::Runtime::builder(store)
    ///     .repoint("on_order_placed", 2)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn repoint(mut self, handler: impl Into<String>, revision: u32) -> Self {
        self.repoint.push((handler.into(), revision));
        self
    }

    /// Where `handler`'s subscription starts when this registration creates it, overriding the
    /// `start_from` option of its `#[event_handler]` (see [`StartFrom`]). With
    /// [`StartFrom::Beginning`] a new handler receives the history of its event type still in the
    /// log, oldest first and ahead of what is published from now on, copied in bounded chunks
    /// by the runtime while publishing goes on.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(store: osa_events::PgStore) -> Result<(), osa_events::Error> {
    /// use osa_events::operations::StartFrom;
    /// let runtime = osa_events::Runtime::builder(store)
    ///     .start_from("index.search", StartFrom::Beginning)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn start_from(mut self, handler: impl Into<String>, start_from: StartFrom) -> Self {
        self.start_from.push((handler.into(), start_from));
        self
    }

    /// Prunes the log periodically (see [`Retention`]): on every node, but one pass at a time
    /// fleet-wide (the store's retention lock). Off by default: the log is kept.
    #[must_use]
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = Some(retention);
        self
    }

    /// How often this instance refreshes its record in the store (see
    /// [`Operations::nodes`](crate::operations::Operations::nodes)); 10 s by default. It counts
    /// as gone after three intervals without one. On the same interval it adds what its handlers
    /// and projections did to the [activity history](crate::operations::activity), so the history
    /// lags by at most one interval.
    #[must_use]
    pub fn node_heartbeat(mut self, every: Duration) -> Self {
        self.node_heartbeat = every.max(Duration::from_millis(100));
        self
    }

    /// How often the metrics gauges are sampled (15 s by default, at least
    /// [`Runtime::MIN_METRICS_INTERVAL`], 1 s: a shorter interval is raised to it).
    ///
    /// The gauges (deliveries by state, oldest due age, lag of every handler and projection; see
    /// `docs/metrics.md`) come from one [`Operations::status`](crate::operations::Operations::status)
    /// per interval, taken by one node of the fleet: the live node whose
    /// [instance name](Self::instance_name) sorts first. The others check the nodes' records each
    /// interval and sample only once they are that node, so the status queries do not grow with
    /// the fleet. The first sample is taken one interval after [`run`](Runtime::run) starts.
    /// Counters and histograms are recorded as the claim loops run, on every node, whatever this
    /// says.
    #[must_use]
    pub fn metrics_interval(mut self, every: Duration) -> Self {
        self.metrics_interval = every.max(Runtime::MIN_METRICS_INTERVAL);
        self
    }

    /// Whether this node may sample the metrics gauges (default `true`; see
    /// [`metrics_interval`](Self::metrics_interval)). Off, it never queries the status for them.
    /// The sampling node is chosen among all live nodes, so a node with sampling off that sorts
    /// first leaves the fleet without gauges: turn it off on every node or on none.
    #[must_use]
    pub fn sample_metrics(mut self, sample: bool) -> Self {
        self.sample_metrics = sample;
        self
    }

    /// The clock for the runtime's timers (polls, heartbeats, timeouts, grace period).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Overrides options of handler `handler` (a registered handler's or an
    /// [instance](Self::handler_instance)'s name) at run time: `options` gets a blank
    /// [`HandlerOptions`] and sets what should differ from the `#[event_handler]` attribute.
    ///
    /// Precedence, highest first: the environment (`OSA_EVENTS_HANDLER_<NAME>_<OPTION>`, then
    /// the file of `OSA_EVENTS_HANDLERS_FILE`; see [`environment`](Self::environment)), then
    /// `configure` (a later call for the same handler
    /// wins per option), then an instance's own options, then the attribute. Operators tune per
    /// environment, so what they set wins over what the code says. The effective options are what
    /// the runtime runs with and what is stored in the subscription's config snapshot, which
    /// `status` shows.
    ///
    /// Overridable: `batch`, `linger`, `poll`, `retries`, `claim_timeout`, `concurrency`,
    /// `timeout`, `backoff`, `max_backoff`, in the ranges of the attribute. A handler this
    /// runtime does not run (see [`only`](Self::only)) may be configured: one configuration can
    /// serve every node of a deployment.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(store: osa_events::PgStore) -> Result<(), osa_events::Error> {
    /// use std::time::Duration;
    ///
    /// let runtime = osa_events::Runtime::builder(store)
    ///     .configure("index.vector", |o| o.batch(128).concurrency(4))
    ///     .configure("mail.send", |o| o.retries(10).backoff(Duration::from_secs(5)))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Not here: [`build`](Self::build) fails with [`Error::Config`](crate::Error::Config),
    /// naming this call, for a name no handler has, a routing key (it is part of the
    /// subscription: see [`repoint`](Self::repoint)), and a value out of its range (the message
    /// gives the range), or one that makes the handler's options inconsistent (`linger` beyond a
    /// third of `claim_timeout`).
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

    /// Runs handler `H` once more, as handler `name`: its own subscription, claim loops, retries
    /// and dead letters, with `options` over the attribute's (a [routing
    /// key](HandlerOptions::routing_key), typically, so each instance receives its own events).
    ///
    /// `H` is the type `#[event_handler]` generates next to the function (`backup_to` →
    /// `BackupToHandler`). This is for one function serving several backends listed in
    /// configuration: call it once per backend. An instance is a handler like any other: the
    /// same start-up checks (valid options, a name no other handler or projection has, its
    /// `State<T>` in the resources, a store with transactions for a `Tx`), selected by
    /// [`only`](Self::only) and [`exclude`](Self::exclude), overridden by
    /// [`configure`](Self::configure) and the environment under its own name. Its name is
    /// persisted like a handler's: renaming an instance creates a new subscription.
    ///
    /// The function still runs under its own name too, unless its attribute says
    /// `register = false`: a template that only runs as its instances.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use osa_events::prelude::*;
    /// # #[derive(Event, serde::Serialize, serde::Deserialize)] #[event(name = "record.published")] struct RecordPublished;
    ///
    /// #[event_handler(name = "backup", register = false)]
    /// async fn backup_to(event: RecordPublished, ctx: Ctx) -> Result<(), HandlerError> {
    ///     let backend = ctx.routing_key(); // "s3", "gcs": the instance's routing key
    ///     # let _ = backend;
    ///     Ok(())
    /// }
    ///
    /// # async fn run(store: osa_events::PgStore) -> Result<(), osa_events::Error> {
    /// let mut builder = osa_events::Runtime::builder(store);
    /// for backend in ["s3", "gcs"] {
    ///     builder = builder.handler_instance::<BackupToHandler>(format!("backup.{backend}"), |o| {
    ///         o.routing_key(backend)
    ///     });
    /// }
    /// builder.build()?.run().await
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Not here: [`build`](Self::build) fails for an invalid name or routing key (1 to 128 ASCII
    /// letters, digits and `. _ - : /`), an option out of range, a name another handler,
    /// instance or projection has, and the checks of every handler.
    #[must_use]
    pub fn handler_instance<H: Handler>(
        mut self,
        name: impl Into<String>,
        options: impl FnOnce(HandlerOptions) -> HandlerOptions,
    ) -> Self {
        self.instances.push(Instance {
            name: name.into(),
            template: H::SPEC,
            bind: H::bind,
            options: options(HandlerOptions::new()),
        });
        self
    }

    /// Reads the environment overrides from `vars` instead of the process environment: for
    /// tests, and for applications that gather their configuration elsewhere.
    ///
    /// By default [`build`](Self::build) reads the process environment. Every variable
    /// `OSA_EVENTS_HANDLER_<NAME>_<OPTION>` sets option `<OPTION>` (`BATCH`, `LINGER`, `POLL`,
    /// `RETRIES`, `CLAIM_TIMEOUT`, `CONCURRENCY`, `TIMEOUT`, `BACKOFF`, `MAX_BACKOFF`) of the
    /// handler whose name, upper-cased with every character other than a letter or digit
    /// replaced by `_`, is `<NAME>`: `OSA_EVENTS_HANDLER_INDEX_VECTOR_BATCH=128` sets `batch` of
    /// `index.vector`. Integers are decimal, durations humantime (`500ms`, `30s`, `2m`).
    /// `OSA_EVENTS_HANDLERS_FILE` names a JSON file of overrides,
    /// `{"index.vector": {"batch": 128, "poll": "500ms"}}`, read at `build`. Precedence, highest
    /// first: the variables, the file, [`configure`](Self::configure), the attribute. Other
    /// variables are ignored.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(store: osa_events::PgStore) -> Result<(), osa_events::Error> {
    /// let runtime = osa_events::Runtime::builder(store)
    ///     .environment([("OSA_EVENTS_HANDLER_INDEX_VECTOR_BATCH", "128")])
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Not here: [`build`](Self::build) fails with [`Error::Config`](crate::Error::Config),
    /// naming the variable (or the file and the handler), for a file that cannot be read or is
    /// not such an object, a `<NAME>` no handler has, an `<OPTION>` that cannot be set,
    /// a value that does not parse or is out of range (the message gives the range), and a
    /// variable that could mean two things: handlers `a.b` and `a_b` are both `A_B`, and
    /// `X_CLAIM_TIMEOUT` is `timeout` of `x.claim` or `claim_timeout` of `x` if both handlers
    /// exist (rename one, or use `configure`).
    #[must_use]
    pub fn environment<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.environment = Environment::Vars(
            vars.into_iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
        );
        self
    }

    /// Whether [`build`](Self::build) reads handler overrides from the environment (default
    /// `true`: the process environment, or the variables of [`environment`](Self::environment)).
    /// `false` ignores every `OSA_EVENTS_HANDLER_*` variable; `true` goes back to the process
    /// environment.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(store: osa_events::PgStore) -> Result<(), osa_events::Error> {
    /// let runtime = osa_events::Runtime::builder(store)
    ///     .read_environment(false) // the options are the code's alone
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn read_environment(mut self, read: bool) -> Self {
        self.environment = if read {
            Environment::Process
        } else {
            Environment::Off
        };
        self
    }

    /// The `OSA_EVENTS_HANDLER_*` variables of the environment source.
    fn environment_vars(&self) -> Result<Vec<(String, String)>> {
        match &self.environment {
            Environment::Off => Ok(Vec::new()),
            Environment::Vars(vars) => Ok(vars.clone()),
            Environment::Process => std::env::vars_os()
                .filter_map(|(key, value)| {
                    let key = key.into_string().ok().filter(|key| {
                        key.starts_with(overrides::ENV_PREFIX) || key == overrides::FILE_VAR
                    })?;
                    Some(match value.into_string() {
                        Ok(value) => Ok((key, value)),
                        Err(_) => Err(crate::Error::Config(
                            format!("`{key}`: the value is not valid UTF-8").into(),
                        )),
                    })
                })
                .collect(),
        }
    }

    /// Every override, lowest precedence first: the instances' own options, the `configure`
    /// calls in order, the file of `OSA_EVENTS_HANDLERS_FILE`, the `OSA_EVENTS_HANDLER_*`
    /// variables.
    fn overrides(&self, selected: &registry::Selection) -> Result<Vec<Override>> {
        let mut layers: Vec<Override> = self
            .instances
            .iter()
            .filter(|instance| !instance.options.is_empty())
            .map(|instance| Override {
                source: format!("`handler_instance({:?}, ..)`", instance.name),
                handler: instance.name.clone(),
                options: instance.options.clone(),
            })
            .collect();
        layers.extend(overrides::check_configured(
            &self.configured,
            &selected.handler_names,
            &selected.projection_names,
        )?);
        let vars = self.environment_vars()?;
        if let Some((_, path)) = vars.iter().find(|(key, _)| key == overrides::FILE_VAR) {
            layers.extend(overrides::from_file(
                path,
                &selected.handler_names,
                &selected.projection_names,
            )?);
        }
        layers.extend(overrides::from_env(
            vars,
            &selected.handler_names,
            &selected.projection_names,
        )?);
        Ok(layers)
    }

    /// Selects the handlers, checks them and binds their extractors to the resources.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownHandler`](crate::Error::UnknownHandler) for a selected or excluded name no
    /// handler has, [`Error::NoHandlers`](crate::Error::NoHandlers) when nothing is left to run,
    /// [`Error::DuplicateHandlerName`](crate::Error::DuplicateHandlerName),
    /// [`Error::MissingResource`](crate::Error::MissingResource) for a `State<T>` whose `T` is not in
    /// the resources, [`Error::Config`](crate::Error::Config) for an out-of-range option, an
    /// invalid namespace, a [`repoint`](Self::repoint) of a handler this runtime does not run
    /// or to revision 0, a handler that starts from its history (or
    /// [`retention`](Self::retention)) on a store without the operations API, and a bad override
    /// (see [`configure`](Self::configure), [`handler_instance`](Self::handler_instance) and
    /// [`environment`](Self::environment)): the message names the call or the variable and the
    /// allowed range.
    pub fn build(self) -> Result<Runtime> {
        let instances = self
            .instances
            .iter()
            .map(Instance::candidate)
            .collect::<Result<Vec<_>>>()?;
        let selected = registry::select(&self.only, &self.exclude, instances)?;
        let overrides = self.overrides(&selected)?;
        let namespace = self.namespace.as_deref().map(check_namespace).transpose()?;
        let stored_name = |name: &str| match namespace {
            Some(namespace) => format!("{namespace}@{name}"),
            None => name.to_owned(),
        };
        for (handler, _) in &self.start_from {
            if !selected.handlers.iter().any(|r| r.spec.name() == handler) {
                return Err(crate::Error::Config(
                    format!("`start_from(\"{handler}\", ..)`: this runtime runs no handler named `{handler}`").into(),
                ));
            }
        }
        for (handler, revision) in &self.repoint {
            if !selected.handlers.iter().any(|r| r.spec.name() == handler) {
                return Err(crate::Error::Config(
                    format!("`repoint(\"{handler}\", {revision})`: this runtime runs no handler named `{handler}`").into(),
                ));
            }
            if *revision == 0 || i32::try_from(*revision).is_err() {
                return Err(crate::Error::Config(
                    format!(
                        "`repoint(\"{handler}\", {revision})`: a revision is in 1..={}",
                        i32::MAX
                    )
                    .into(),
                ));
            }
        }
        let projections = selected
            .projections
            .into_iter()
            .map(|registration| {
                let name = registration.spec.name();
                if self.store.projections().is_none() {
                    return Err(crate::Error::Config(
                        format!("projection `{name}` needs a store that runs projections (`PgStore`, or `InMemoryStore` in tests)").into(),
                    ));
                }
                let invoker = (registration.bind)(&self.resources)?;
                if invoker.transactional && self.store.transactions().is_none() {
                    return Err(crate::Error::Config(
                        format!("projection `{name}` takes a `Tx`, but {}", self.store.no_transactions_reason()).into(),
                    ));
                }
                Ok(BoundProjection {
                    spec: registration.spec,
                    invoker: Arc::new(invoker),
                    stored_name: intern(stored_name(name)),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let handlers = selected
            .handlers
            .into_iter()
            .map(|candidate| {
                let name = candidate.spec.name();
                let layers: Vec<&Override> = overrides
                    .iter()
                    .filter(|layer| layer.handler == name)
                    .collect();
                let spec = overrides::apply(candidate.spec, &layers)?;
                let invoker = candidate.bind(&self.resources)?;
                if invoker.transactional && self.store.transactions().is_none() {
                    return Err(crate::Error::Config(
                        format!(
                            "handler `{name}` takes a `Tx`, but {}",
                            self.store.no_transactions_reason()
                        )
                        .into(),
                    ));
                }
                if let Some(ordered) = spec.ordered()
                    && !self.store.orders_by_key()
                {
                    return Err(crate::Error::Config(
                        format!(
                            "handler `{name}` is `ordered = \"{}\"`, but this store does not keep \
                             deliveries in order by key (`Store::orders_by_key` is false): run it on \
                             PostgreSQL, SQLite or the in-memory store",
                            ordered.as_str()
                        )
                        .into(),
                    ));
                }
                let start_from = self
                    .start_from
                    .iter()
                    .rev()
                    .find(|(handler, _)| handler == name)
                    .map_or(spec.start_from(), |(_, start_from)| *start_from);
                if spec.ordered().is_some() && start_from != StartFrom::Now {
                    return Err(crate::Error::Config(
                        format!(
                            "handler `{name}` is ordered and starts from {start_from:?}: a history \
                             copied while new events are handled would join each key after them, \
                             out of order; start it from now (a replay into it joins each key at \
                             its end)"
                        )
                        .into(),
                    ));
                }
                Ok(BoundHandler {
                    spec,
                    invoker: Arc::new(invoker),
                    stored_name: stored_name(name),
                    // The last call for a name wins, like the builder's other setters.
                    revision: self
                        .repoint
                        .iter()
                        .rev()
                        .find(|(handler, _)| handler == name)
                        .map_or(1, |(_, revision)| *revision),
                    start_from,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if self.store.operations().is_none() {
            if let Some(handler) = handlers.iter().find(|handler| {
                handler.start_from != StartFrom::Now && !self.store.applies_start_from()
            }) {
                return Err(crate::Error::Config(
                    format!(
                        "handler `{}` starts from {:?}, but this store has no operations API \
                         (`Store::operations` is `None`) to copy its history",
                        handler.spec.name(),
                        handler.start_from
                    )
                    .into(),
                ));
            }
            if self.retention.is_some() {
                return Err(crate::Error::Config(
                    "retention needs a store with the operations API (`Store::operations` is `None`)"
                        .into(),
                ));
            }
        }
        let health = Arc::new(HealthBoard::new(
            Arc::clone(&self.clock),
            handlers.iter().map(|handler| {
                (
                    handler.spec,
                    handler.stored_name.clone(),
                    handler.invoker.transactional,
                )
            }),
            projections
                .iter()
                .map(|projection| (projection.spec, projection.stored_name)),
        ));
        Ok(Runtime {
            store: self.store,
            handlers,
            projections,
            health,
            clock: self.clock,
            grace_period: self.grace_period,
            handle_signals: self.handle_signals,
            shutdown: self.shutdown,
            instance: self.instance.unwrap_or_else(default_instance_name),
            namespace: self.namespace,
            retention: self.retention,
            node_heartbeat: self.node_heartbeat,
            metrics_interval: self.sample_metrics.then_some(self.metrics_interval),
        })
    }
}

/// The longest allowed namespace.
const MAX_NAMESPACE_LEN: usize = 64;

/// `namespace` if it is 1 to [`MAX_NAMESPACE_LEN`] ASCII letters, digits and `. _ -`: never `@`,
/// the separator of stored names, nor `:` or `/`, which handler names may contain.
fn check_namespace(namespace: &str) -> Result<&str> {
    let valid = !namespace.is_empty()
        && namespace.len() <= MAX_NAMESPACE_LEN
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(namespace)
    } else {
        Err(crate::Error::Config(
            format!(
                "invalid namespace {namespace:?}: expected 1 to {MAX_NAMESPACE_LEN} ASCII letters, digits and `. _ -`"
            )
            .into(),
        ))
    }
}

/// A `&'static str` for a name made at run time: a projection's stored name, which the
/// [`ProjectionStore`](crate::ProjectionStore) API takes as `&'static str`, and a handler
/// instance's name, routing key and origin, which its [`HandlerSpec`] holds as `&'static str`.
/// Interned, so building runtime after runtime (as tests do) keeps one copy per name.
fn intern(name: String) -> &'static str {
    static NAMES: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(name) = names.get(name.as_str()) {
        return name;
    }
    let name: &'static str = Box::leak(name.into_boxed_str());
    names.insert(name);
    name
}
