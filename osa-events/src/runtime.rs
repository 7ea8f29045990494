//! [`Runtime`]: starts every registered handler's claim loops and stops them gracefully.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::handler::{HandlerSpec, Invoker, registry};
use crate::projection::ProjectionSpec;
use crate::projection::runner::ProjectionRunner;
use crate::store::{Store, Subscription, SubscriptionId};
use crate::worker::Worker;
use crate::worker::step::Stepper;
use crate::worker::supervise::supervise;
use crate::worker::wake::{self, WakeBoard};
use crate::{Clock, Resources, Result, SystemClock};

/// Runs every handler registered with `#[event_handler]` until SIGINT or SIGTERM.
///
/// The same as `Runtime::builder(store).resources(resources).build()?.run().await`; use the
/// [`builder`](Runtime::builder) to select handlers, set the grace period or trigger shutdown
/// yourself.
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
/// let shutdown = runtime.shutdown_token(); // cancel it to stop, as SIGTERM would
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
}

#[derive(Debug)]
struct BoundHandler {
    spec: HandlerSpec,
    invoker: Arc<Invoker>,
}

#[derive(Debug)]
struct BoundProjection {
    spec: ProjectionSpec,
    invoker: Arc<Invoker>,
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
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Store")
    }
}

impl Runtime {
    /// The default grace period: how long in-flight handlers may run on after shutdown begins.
    pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

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
        }
    }

    /// A token that starts graceful shutdown when cancelled, as SIGTERM does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The specs of the handlers this runtime runs, sorted by name.
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
    /// # Errors
    ///
    /// [`Error::Database`](crate::Error::Database) when the store fails.
    pub async fn register(&self) -> Result<Vec<SubscriptionId>> {
        let subscriptions: Vec<Subscription> = self
            .handlers
            .iter()
            .map(|handler| Subscription {
                name: handler.spec.name().to_owned(),
                event_type: handler.spec.event_type().to_owned(),
                routing_key: handler.spec.routing_key_filter().map(str::to_owned),
                config: handler.spec.config_json(),
            })
            .collect();
        self.store.register(&subscriptions).await
    }

    /// Not public API: hands the handlers to a [`Stepper`] instead of running them, for the
    /// harness and the simulator of `osa-events-testing`, which drive the claim loops themselves
    /// (see [`Stepper`]). Registers the subscriptions first, as [`run`](Self::run) does;
    /// `jitter_seed` makes the retry delays repeatable. Projections are stepped with
    /// [`Stepper::project`].
    ///
    /// # Errors
    ///
    /// [`Error::Database`](crate::Error::Database) when the subscriptions cannot be registered.
    #[doc(hidden)]
    pub async fn into_stepper(self, jitter_seed: u64) -> Result<Stepper> {
        let subscriptions = self.register().await?;
        let handlers = self
            .handlers
            .into_iter()
            .zip(subscriptions)
            .map(|(handler, subscription)| (handler.spec, handler.invoker, subscription))
            .collect();
        let projections = self
            .projections
            .into_iter()
            .map(|projection| (projection.spec, projection.invoker))
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
    /// [`Error::Database`](crate::Error::Database) when the subscriptions cannot be registered,
    /// [`Error::Signal`](crate::Error::Signal) when signal handlers cannot be installed. Once running,
    /// store errors are logged and retried, never returned.
    ///
    /// # Supervision
    ///
    /// A panic in a handler call, in a payload's `Deserialize` or in an extractor is a failed
    /// attempt of the events it concerns (see the crate's failure docs), never the end of a loop.
    /// A claim loop or projection loop that dies anyway (a panic in a store or a clock, or a loop
    /// that returns before shutdown) is logged at ERROR with the cause and started again: after
    /// 100 ms, doubling with each death in a row, at most 30 s. The runtime keeps running; it
    /// never goes on with a loop silently missing.
    pub async fn run(self) -> Result<()> {
        let stopping = self.shutdown.clone();
        let aborting = CancellationToken::new();
        // Listen before the first round trip, so a signal during start-up stops cleanly too.
        if self.handle_signals {
            spawn_signal_listener(stopping.clone())?;
        }
        let subscriptions = self.register().await?;
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
        for (handler, subscription) in self.handlers.iter().zip(&subscriptions) {
            for slot in 0..handler.spec.concurrency_level() {
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
                };
                tasks.spawn(supervise(
                    format!("claim loop {slot} of handler `{}`", handler.spec.name()),
                    stopping.clone(),
                    Arc::clone(&self.clock),
                    move || worker.clone().run(),
                ));
            }
        }
        if let Some(store) = self.store.projections() {
            for projection in &self.projections {
                let runner = ProjectionRunner {
                    spec: projection.spec,
                    invoker: Arc::clone(&projection.invoker),
                    store: Arc::clone(&store),
                    clock: Arc::clone(&self.clock),
                    process: process.clone(),
                    stopping: stopping.clone(),
                };
                tasks.spawn(supervise(
                    format!("loop of projection `{}`", projection.spec.name()),
                    stopping.clone(),
                    Arc::clone(&self.clock),
                    move || runner.clone().run(),
                ));
            }
        }
        tracing::info!(
            handlers = self.handlers.len(),
            projections = self.projections.len(),
            tasks = tasks.len(),
            "osa-events runtime started"
        );

        stopping.cancelled().await;
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
        tracing::info!("osa-events runtime stopped");
        Ok(())
    }
}

impl Runtime {
    /// Warns when the store's pool cannot serve the handlers that take [`Tx`](crate::Tx): each of
    /// their claim loops holds a connection for its whole call, and the claim loops need one more
    /// for claims, completions and heartbeats. A starved handler does not lose attempts (its
    /// claims are released unattempted), but it waits.
    fn check_pool_size(&self) {
        let Some(pg) = self.store.postgres() else {
            return;
        };
        let tx_loops: u32 = self
            .handlers
            .iter()
            .filter(|handler| handler.invoker.transactional)
            .map(|handler| handler.spec.concurrency_level())
            .sum();
        let max_connections = pg.pool().options().get_max_connections();
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

/// `host:pid`, the prefix of every claim loop's name in `claimed_by`.
fn worker_prefix() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

fn spawn_signal_listener(stopping: CancellationToken) -> Result<()> {
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
            stopping.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => stopping.cancel(),
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

    /// Uses this token for shutdown: cancelling it starts graceful shutdown.
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

    /// The clock for the runtime's timers (polls, heartbeats, timeouts, grace period).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Selects the handlers, checks them and binds their extractors to the resources.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownHandler`](crate::Error::UnknownHandler) for a selected or excluded name no
    /// handler has, [`Error::NoHandlers`](crate::Error::NoHandlers) when nothing is left to run,
    /// [`Error::DuplicateHandlerName`](crate::Error::DuplicateHandlerName),
    /// [`Error::MissingResource`](crate::Error::MissingResource) for a `State<T>` whose `T` is not in
    /// the resources, [`Error::Config`](crate::Error::Config) for an out-of-range option.
    pub fn build(self) -> Result<Runtime> {
        let selected = registry::select(&self.only, &self.exclude)?;
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
                if invoker.transactional && self.store.postgres().is_none() {
                    return Err(crate::Error::Config(
                        format!("projection `{name}` takes a `Tx`, which needs `PgStore`; this store has no PostgreSQL transactions").into(),
                    ));
                }
                Ok(BoundProjection {
                    spec: registration.spec,
                    invoker: Arc::new(invoker),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let handlers = selected
            .handlers
            .into_iter()
            .map(|registration| {
                let invoker = (registration.bind)(&self.resources)?;
                if invoker.transactional && self.store.postgres().is_none() {
                    return Err(crate::Error::Config(
                        format!(
                            "handler `{}` takes a `Tx`, which needs `PgStore`; this store has no PostgreSQL transactions",
                            registration.spec.name()
                        )
                        .into(),
                    ));
                }
                Ok(BoundHandler {
                    spec: registration.spec,
                    invoker: Arc::new(invoker),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Runtime {
            store: self.store,
            handlers,
            projections,
            clock: self.clock,
            grace_period: self.grace_period,
            handle_signals: self.handle_signals,
            shutdown: self.shutdown,
            instance: self.instance.unwrap_or_else(worker_prefix),
        })
    }
}
