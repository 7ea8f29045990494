//! [`PgStore`]: the PostgreSQL store.
//!
//! All tables live in the `osa_events` schema. Workers on any number of processes and machines
//! share one database and coordinate only through row locks: a claim is an
//! [`UPDATE ... FROM (SELECT ... FOR NO KEY UPDATE SKIP LOCKED)`](https://www.postgresql.org/docs/current/sql-select.html#SQL-FOR-UPDATE-SHARE),
//! so concurrent claimers skip each other's rows instead of waiting on them, and every deadline
//! is computed with the database's `now()`, never a worker's clock.
//!
//! # Connection poolers
//!
//! Through a pooler in session mode everything works as on a direct connection. Through one in
//! transaction mode (PgBouncer `pool_mode = transaction`), declare it with
//! [`PgStore::through_transaction_pooler`]: sqlx's named, cached statements do not survive the
//! pooler moving a client between server sessions, so the store then runs each of its writes as
//! unnamed statements in a transaction of its own, and `LISTEN` (which needs a session) is
//! replaced by polling, or moved to a direct connection with [`PgStore::listen_directly`].
//! Projections and [`migrate`](PgStore::migrate) use session advisory locks and need a direct
//! connection (or session pooling).
//!
//! # Autovacuum
//!
//! Completed deliveries are deleted, so `osa_events.deliveries` sees constant churn while staying
//! small. The initial migration sets aggressive per-table autovacuum thresholds
//! (`autovacuum_vacuum_scale_factor = 0.01`); keep autovacuum enabled.

use std::fmt;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use connect::ConnectRetry;

use osa_events_core::Result;
use osa_events_core::store::{
    ClaimRequest, Delivery, Failure, Fence, Store, Subscription, SubscriptionId, WakeUps,
};

mod bookkeeping;
pub(crate) mod claim;
mod connect;
pub(crate) mod fenced;
pub(crate) mod keepalive;
mod migrate;
mod notify;
mod register;
mod unnamed;

pub use unnamed::PgUnnamed;

/// Runs `$call` with `$x` bound to an executor for one store operation: the pool; or, behind a
/// transaction-mode pooler, unnamed statements in a transaction of the operation's own, which
/// the pooler keeps on one server session.
macro_rules! run {
    ($store:expr, |$x:ident| $call:expr) => {
        async move {
            if $store.transaction_pooler {
                let mut tx = $store.pool.begin().await?;
                if $store.relaxed.is_some() {
                    sqlx::Executor::execute(&mut *tx, bookkeeping::RELAX_TRANSACTION_SQL).await?;
                }
                let $x = PgUnnamed::new(&mut tx);
                let out = $call.await?;
                tx.commit().await?;
                Ok(out)
            } else {
                let $x = $store.bookkeeping_pool();
                $call.await
            }
        }
    };
}

/// The production store: events, subscriptions and deliveries in PostgreSQL (schema `osa_events`).
///
/// Cloning is cheap: clones share one connection pool.
///
/// # Examples
///
/// ```no_run
/// # async fn example() -> Result<(), osa_events::Error> {
/// let store = osa_events::PgStore::connect("postgres://app@localhost/app").await?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Set by [`through_transaction_pooler`](Self::through_transaction_pooler).
    pub(crate) transaction_pooler: bool,
    /// Where to `LISTEN`, when not through the pool (see [`listen_directly`](Self::listen_directly)).
    listen: Option<PgConnectOptions>,
    /// The pool of [`relaxed_bookkeeping`](Self::relaxed_bookkeeping), when asked for.
    relaxed: Option<PgPool>,
}

impl PgStore {
    /// Connects a pool of up to 16 connections to `url`, waiting up to 30 s for a database that
    /// is not up yet: [`connect_with`](Self::connect_with) with [`ConnectRetry::default`].
    ///
    /// Each connection sets TCP keepalives and a user timeout for its session (3 s idle, then a
    /// probe a second, given up after 3; at most 5 s of unacknowledged data), so that when this
    /// process's machine dies or its network fails, the server ends its sessions within about
    /// 6 s instead of hours, and with them the locks of a `Tx` handler's open transaction, which
    /// the worker taking its deliveries over would otherwise wait on. A pool given to
    /// [`from_pool`](Self::from_pool) keeps its own settings.
    ///
    /// # Errors
    ///
    /// [`Error::Database`](osa_events_core::Error::Database) when the URL is malformed, or the first
    /// connection fails for a reason no wait cures (authentication, an unknown database), or still
    /// fails after the wait; the error is the last attempt's.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, ConnectRetry::default()).await
    }

    /// Connects a pool of up to 16 connections to `url`, trying the first connection again with
    /// backoff while it fails for a reason a wait may cure (see [`ConnectRetry`]), each failed
    /// attempt logged at WARN with its cause.
    ///
    /// # Errors
    ///
    /// As for [`connect`](Self::connect), with `retry`'s wait.
    pub async fn connect_with(url: &str, retry: ConnectRetry) -> Result<Self> {
        Self::connect_with_pool(url, Self::pool_options(), retry).await
    }

    /// Connects a pool built from `pool` to `url`, waiting for the database as `retry` says: for
    /// a pool of another size or acquire timeout than [`connect`](Self::connect)'s 16 connections
    /// and 10 s. Start from [`pool_options`](Self::pool_options) to keep the keepalive settings.
    ///
    /// Size it for the runtime: each claim loop (a handler's `concurrency`, one per projection)
    /// uses a connection for each of its statements, and a handler that takes `Tx` holds one for
    /// its whole call; the runtime warns at start-up when the pool is smaller than that.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), osa_events::Error> {
    /// use osa_events::{ConnectRetry, PgStore};
    ///
    /// let pool = PgStore::pool_options().max_connections(48);
    /// let store = PgStore::connect_with_pool("postgres://app@db/app", pool, ConnectRetry::default()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`connect`](Self::connect), with `retry`'s wait.
    pub async fn connect_with_pool(
        url: &str,
        pool: PgPoolOptions,
        retry: ConnectRetry,
    ) -> Result<Self> {
        let options: PgConnectOptions = url.parse::<PgConnectOptions>()?;
        // A first connection of our own: a pool that cannot connect reports only "pool timed
        // out", while this reports why (refused, unknown host, authentication, ...).
        connect::first_connection(&options, retry).await?;
        let pool = pool.connect_with(options).await?;
        Ok(Self::from_pool(pool))
    }

    /// The pool options [`connect`](Self::connect) uses: up to 16 connections, a 10 s acquire
    /// timeout, and the keepalive settings on every new connection (see `connect`). Start from
    /// them to build your own pool for [`from_pool`](Self::from_pool) with other limits.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), osa_events::Error> {
    /// let options: sqlx::postgres::PgConnectOptions = "postgres://app@localhost/app".parse()?;
    /// let pool = osa_events::PgStore::pool_options()
    ///     .max_connections(4)
    ///     .connect_with(options)
    ///     .await?;
    /// let store = osa_events::PgStore::from_pool(pool);
    /// # Ok(()) }
    /// ```
    pub fn pool_options() -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(keepalive::after_connect)
    }

    /// Uses an existing pool, typically the application's own, so publishing and handling share it.
    ///
    /// The pool's connections are used as they are: build it from
    /// [`pool_options`](Self::pool_options) to get the keepalive settings of
    /// [`connect`](Self::connect).
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            transaction_pooler: false,
            listen: None,
            relaxed: None,
        }
    }

    /// Declares that the pool reaches PostgreSQL through a pooler in transaction mode
    /// (PgBouncer `pool_mode = transaction`), where each transaction may run on another server
    /// session.
    ///
    /// The store then runs each claim, completion, failure, deferral, heartbeat, release and
    /// registration as unnamed statements ([`PgUnnamed`]) in a transaction of its own, so
    /// nothing depends on a statement prepared on another session; a `Tx` handler's completion
    /// runs unnamed in the handler's transaction. That costs a round trip or two per operation (BEGIN, the parse,
    /// COMMIT), measured in `BENCHMARKS.md`. `LISTEN` needs a session, so workers poll every
    /// `poll` interval instead (logged at start-up), unless wake-ups come from a direct
    /// connection ([`listen_directly`](Self::listen_directly)).
    ///
    /// What it does not change: statements you run yourself, in a `Tx` handler or around
    /// [`publish`](crate::publish), must be unnamed too (wrap the executor in [`PgUnnamed`], or
    /// use `.persistent(false)`), and run inside a transaction. Projections (session advisory
    /// locks: refused with an error naming the pooler) and [`migrate`](Self::migrate) need a
    /// direct connection.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), osa_events::Error> {
    /// let store = osa_events::PgStore::connect("postgres://app@pgbouncer:6432/app")
    ///     .await?
    ///     .through_transaction_pooler()
    ///     .listen_directly("postgres://app@db:5432/app")?; // optional: wake-ups without polling
    /// # Ok(()) }
    /// ```
    pub fn through_transaction_pooler(mut self) -> Self {
        self.transaction_pooler = true;
        self
    }

    /// Listens for wake-ups (`LISTEN`) on a connection of its own to `url`, instead of one from
    /// the pool: for a pool that goes through a pooler in transaction mode, where `LISTEN` does
    /// not work, with `url` naming the same database directly.
    ///
    /// # Errors
    ///
    /// [`Error::Database`](osa_events_core::Error::Database) when the URL is malformed. It is connected
    /// when the runtime starts listening; until it connects, workers poll.
    pub fn listen_directly(mut self, url: &str) -> Result<Self> {
        self.listen = Some(url.parse::<PgConnectOptions>()?);
        Ok(self)
    }

    /// Commits the store's bookkeeping (claims, completions, failures, deferrals, heartbeats
    /// and releases) asynchronously: with `synchronous_commit = off`, so a batch's bookkeeping no
    /// longer waits for its WAL flush. Publishing, `Tx` handlers (their writes and their
    /// completion share one transaction), projections and registration stay synchronous.
    ///
    /// What it risks, exactly: when the database server crashes (not when a worker does), the
    /// bookkeeping of the last moments before the crash, up to three times
    /// [`wal_writer_delay`](https://www.postgresql.org/docs/current/runtime-config-wal.html#GUC-WAL-WRITER-DELAY)
    /// (600 ms by default), may be lost. A lost completion means the event is handled again: a
    /// duplicate, as at-least-once delivery allows. A lost claim or failure means an attempt is
    /// not counted and the delivery is claimed again; a handler that was running on a lost
    /// claim may then handle it a second time (its completion is refused as stale). No event is
    /// lost: events and their deliveries are written by publishing, which stays synchronous, and
    /// a `Tx` handler's effects stay exactly once (its completion commits synchronously with
    /// them). The database itself stays consistent (asynchronous commit never corrupts it).
    /// `reliability::server_crash` crashes a server under it (RELIABILITY.md, section 13);
    /// `BENCHMARKS.md` has the gain.
    ///
    /// The bookkeeping runs on a second pool of as many connections as the first, connected on
    /// first use, with the setting for its sessions; behind a transaction-mode pooler
    /// ([`through_transaction_pooler`](Self::through_transaction_pooler)) each bookkeeping
    /// transaction sets it for itself instead (`SET LOCAL`), so no session of the pooler keeps it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), osa_events::Error> {
    /// let store = osa_events::PgStore::connect("postgres://app@db/app").await?.relaxed_bookkeeping();
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn relaxed_bookkeeping(mut self) -> Self {
        self.relaxed = Some(bookkeeping::relaxed_pool(&self.pool));
        self
    }

    /// The connection pool, for publishing and for the application's own queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool the store's bookkeeping runs on: [`pool`](Self::pool), or the second pool of
    /// [`relaxed_bookkeeping`](Self::relaxed_bookkeeping) (not behind a transaction-mode pooler,
    /// where bookkeeping transactions set `synchronous_commit` themselves).
    pub fn bookkeeping_pool(&self) -> &PgPool {
        match &self.relaxed {
            Some(relaxed) if !self.transaction_pooler => relaxed,
            _ => &self.pool,
        }
    }
}

impl fmt::Debug for PgStore {
    // Not derived: the pool's connect options would print the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("connections", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .field("transaction_pooler", &self.transaction_pooler)
            .field("listen_directly", &self.listen.is_some())
            .field("relaxed_bookkeeping", &self.relaxed.is_some())
            .finish_non_exhaustive()
    }
}

impl Store for PgStore {
    fn register<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> BoxFuture<'a, Result<Vec<SubscriptionId>>> {
        Box::pin(register::register(
            &self.pool,
            subscriptions,
            self.transaction_pooler,
        ))
    }

    fn claim<'a>(&'a self, request: ClaimRequest<'a>) -> BoxFuture<'a, Result<Vec<Delivery>>> {
        Box::pin(run!(self, |x| claim::claim(x, request)))
    }

    fn complete<'a>(
        &'a self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(run!(self, |x| fenced::complete(x, subscription, done)))
    }

    fn complete_and_claim<'a>(
        &'a self,
        done: &'a [Fence],
        request: ClaimRequest<'a>,
    ) -> BoxFuture<'a, Result<(u64, Vec<Delivery>)>> {
        Box::pin(run!(self, |x| claim::complete_and_claim(x, done, request)))
    }

    fn fail<'a>(
        &'a self,
        subscription: SubscriptionId,
        failures: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(run!(self, |x| fenced::fail(x, subscription, failures)))
    }

    fn extend<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
        claim_timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<i64>>> {
        Box::pin(run!(self, |x| fenced::extend(
            x,
            subscription,
            claims,
            claim_timeout
        )))
    }

    fn release<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(run!(self, |x| fenced::release(x, subscription, claims)))
    }

    fn defer<'a>(
        &'a self,
        subscription: SubscriptionId,
        deferred: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(run!(self, |x| fenced::defer(x, subscription, deferred)))
    }

    fn wake_ups(&self) -> Option<BoxFuture<'static, Result<WakeUps>>> {
        if let Some(options) = &self.listen {
            let options = options.clone();
            return Some(Box::pin(async move { notify::listen_at(options).await }));
        }
        if self.transaction_pooler {
            tracing::info!(
                "PgStore is behind a transaction-mode pooler, where LISTEN does not work: workers \
                 poll every `poll` interval (give PgStore::listen_directly a direct url for \
                 wake-ups)"
            );
            return None;
        }
        let pool = self.pool.clone();
        Some(Box::pin(async move { notify::listen(&pool).await }))
    }

    fn projections(&self) -> Option<std::sync::Arc<dyn osa_events_core::store::ProjectionStore>> {
        Some(std::sync::Arc::new(self.clone()))
    }

    fn transactions(&self) -> Option<&dyn osa_events_core::store::Transactions> {
        Some(self)
    }

    /// By the triggers of the `ordering_keys` migration.
    fn orders_by_key(&self) -> bool {
        true
    }

    fn operations(&self) -> Option<&dyn osa_events_core::operations::Operations> {
        Some(self)
    }
}

/// A database timestamp read as `extract(epoch from ..)::float8`, as a `SystemTime` (sqlx is built
/// without a date-time crate; negative values, before 1970, are clamped to the epoch).
pub(crate) fn from_epoch_seconds(seconds: f64) -> std::time::SystemTime {
    // A non-finite time (`infinity`) reads as the epoch rather than panicking.
    std::time::SystemTime::UNIX_EPOCH
        + Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or_default()
}

/// An age read as `extract(epoch from now() - ..)::float8`, as a `Duration` (a negative one, from
/// a timestamp ahead of the database's clock, as zero).
pub(crate) fn age(seconds: Option<f64>) -> Option<Duration> {
    seconds.map(|seconds| Duration::from_secs_f64(seconds.max(0.0)))
}
