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
//! Claims, completions and publishes are single statements, so they work behind PgBouncer in
//! transaction mode too. Wake-ups use `LISTEN`, which needs a session: behind a transaction-mode
//! pooler notifications do not arrive and workers fall back to polling every `poll` interval.
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
use sqlx::{Connection, PgConnection};

use crate::Result;
use crate::store::{
    ClaimRequest, Delivery, Failure, Fence, Store, Subscription, SubscriptionId, WakeUps,
};

pub(crate) mod claim;
pub(crate) mod fenced;
pub(crate) mod keepalive;
mod migrate;
mod notify;
mod register;

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
}

impl PgStore {
    /// Connects a pool of up to 16 connections to `url`.
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
    /// [`Error::Database`](crate::Error::Database) when the URL is malformed or the first connection fails.
    pub async fn connect(url: &str) -> Result<Self> {
        let options: PgConnectOptions = url.parse()?;
        // A first connection of our own: a pool that cannot connect reports only "pool timed
        // out", while this reports why (refused, unknown host, authentication, ...).
        PgConnection::connect_with(&options).await?.close().await?;
        let pool = Self::pool_options().connect_with(options).await?;
        Ok(Self { pool })
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
        Self { pool }
    }

    /// The connection pool, for publishing and for the application's own queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl fmt::Debug for PgStore {
    // Not derived: the pool's connect options would print the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("connections", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .finish_non_exhaustive()
    }
}

impl Store for PgStore {
    fn register<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> BoxFuture<'a, Result<Vec<SubscriptionId>>> {
        Box::pin(register::register(&self.pool, subscriptions))
    }

    fn claim<'a>(&'a self, request: ClaimRequest<'a>) -> BoxFuture<'a, Result<Vec<Delivery>>> {
        Box::pin(claim::claim(&self.pool, request))
    }

    fn complete<'a>(
        &'a self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(fenced::complete(&self.pool, subscription, done))
    }

    fn complete_and_claim<'a>(
        &'a self,
        done: &'a [Fence],
        request: ClaimRequest<'a>,
    ) -> BoxFuture<'a, Result<(u64, Vec<Delivery>)>> {
        Box::pin(claim::complete_and_claim(&self.pool, done, request))
    }

    fn fail<'a>(
        &'a self,
        subscription: SubscriptionId,
        failures: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(fenced::fail(&self.pool, subscription, failures))
    }

    fn extend<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
        claim_timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<i64>>> {
        Box::pin(fenced::extend(
            &self.pool,
            subscription,
            claims,
            claim_timeout,
        ))
    }

    fn release<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(fenced::release(&self.pool, subscription, claims))
    }

    fn wake_ups(&self) -> Option<BoxFuture<'static, Result<WakeUps>>> {
        let pool = self.pool.clone();
        Some(Box::pin(async move { notify::listen(&pool).await }))
    }

    fn projections(&self) -> Option<std::sync::Arc<dyn crate::ProjectionStore>> {
        Some(std::sync::Arc::new(self.clone()))
    }

    fn postgres(&self) -> Option<&PgStore> {
        Some(self)
    }
}

/// A database timestamp read as `extract(epoch from ..)::float8`, as a `SystemTime` (sqlx is built
/// without a date-time crate; negative values, before 1970, are clamped to the epoch).
pub(crate) fn from_epoch_seconds(seconds: f64) -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0))
}

impl PgStore {
    /// Completes `done` on `conn` (inside a handler's transaction): the fenced delete of
    /// [`Store::complete`], so it commits or rolls back with the handler's writes.
    pub(crate) async fn complete_in(
        &self,
        conn: &mut sqlx::PgConnection,
        subscription: SubscriptionId,
        done: &[Fence],
    ) -> Result<u64> {
        fenced::complete(conn, subscription, done).await
    }
}
