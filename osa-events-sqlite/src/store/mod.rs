//! [`SqliteStore`]: the embedded store.
//!
//! Everything lives in one SQLite file in WAL mode (readers never wait for the writer, and the
//! writer never waits for readers). SQLite runs one write transaction at a time: every write of
//! the store begins with `BEGIN IMMEDIATE`, which takes the write lock at once, so a claim's
//! choice of rows and its update of them can never interleave with another writer's, and positions
//! are handed out in commit order. While another connection (of this process or another) holds the
//! lock, a write waits for it up to the busy timeout, then fails with
//! [`Error::Busy`](osa_events_core::Error::Busy).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use osa_events_core::store::{
    ClaimRequest, Delivery, Failure, Fence, Store, Subscription, SubscriptionId, WakeUps,
};
use osa_events_core::{Error, Result};

use crate::busy;
use wake::WakeHub;

pub(crate) mod claim;
pub(crate) mod fenced;
mod migrate;
mod register;
pub(crate) mod wake;

/// How a [`SqliteStore`] opens its file: [`SqliteStore::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteSettings {
    /// How long a write waits for another writer's lock before it fails with
    /// [`Error::Busy`](osa_events_core::Error::Busy). 60 s by default.
    ///
    /// Every commit holds the lock through its fsync, and on a busy or shared disk an fsync
    /// sometimes stalls for seconds: with three workers and a publisher on one file, the crash
    /// test (RELIABILITY.md, section 16) saw holds of 2 to 21 s, and writers queued behind them
    /// past a 10 s timeout. A `Tx` handler that runs its own statements holds the lock from its
    /// first one to its commit: keep the timeout above the longest such call too.
    pub busy_timeout: Duration,
    /// The pool's size: readers run side by side, writers take turns. 8 by default.
    pub max_connections: u32,
}

impl Default for SqliteSettings {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(60),
            max_connections: 8,
        }
    }
}

impl SqliteSettings {
    /// These settings with another busy timeout.
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// These settings with another pool size (at least 1).
    #[must_use]
    pub fn max_connections(mut self, connections: u32) -> Self {
        self.max_connections = connections.max(1);
        self
    }
}

/// The embedded store: events, subscriptions, deliveries and checkpoints in one SQLite file.
///
/// Cloning is cheap: clones share one connection pool. A store made by
/// [`temporary`](Self::temporary) removes its file when the last clone is dropped or
/// [`close`](Self::close)d.
///
/// # Examples
///
/// ```no_run
/// # async fn example() -> Result<(), osa_events::Error> {
/// let store = osa_events::SqliteStore::open("app-events.sqlite").await?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    wake: WakeHub,
    settings: SqliteSettings,
    path: PathBuf,
    /// Remove the file (and its WAL and shared-memory files) when the store goes.
    temporary: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.temporary {
            remove_database_files(&self.path);
        }
    }
}

/// Removes `path` and the `-wal` and `-shm` files beside it, whichever exist.
fn remove_database_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

impl SqliteStore {
    /// Opens (creating it if missing) the database file at `path` with the default
    /// [`SqliteSettings`]: [`open_with`](Self::open_with).
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the file cannot be opened or created (a missing directory, no
    /// permission, not an SQLite file).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteSettings::default()).await
    }

    /// Opens (creating it if missing) the database file at `path` in WAL mode, with `settings`.
    ///
    /// Every connection waits up to the busy timeout for another writer, commits with
    /// `synchronous = FULL` (a commit that returned survives a power cut, not only a crash of the
    /// process), and wakes this process's workers when a transaction that published commits.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub async fn open_with(path: impl AsRef<Path>, settings: SqliteSettings) -> Result<Self> {
        let options = SqliteConnectOptions::new().filename(path.as_ref());
        Self::connect_options(options, settings, false).await
    }

    /// Opens the database a `sqlite:` URL names (`sqlite://path/to/file.sqlite`, or
    /// `sqlite:relative.sqlite`), creating it if missing, with the default settings and the URL's
    /// own parameters (`?mode=ro` and so on).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an in-memory database (`sqlite::memory:`, `mode=memory`): each
    /// connection of a pool would see a database of its own; use a file, [`temporary`](Self::temporary),
    /// or `osa-events-testing`'s `InMemoryStore`. [`Error::Database`] as for [`open`](Self::open).
    pub async fn connect(url: &str) -> Result<Self> {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let database = path.split('?').next().unwrap_or_default();
        if database.is_empty() || database == ":memory:" || path.contains("mode=memory") {
            return Err(Error::Config(format!(
                "`{url}` names an in-memory SQLite database, which each pooled connection would \
                 see as a database of its own: name a file (`sqlite://events.sqlite`), or use \
                 SqliteStore::temporary() for a throwaway one"
            ).into()));
        }
        let options: SqliteConnectOptions = url.parse()?;
        Self::connect_options(options, SqliteSettings::default(), false).await
    }

    /// Opens a new database in a file of its own in the system's temporary directory, removed
    /// when the last clone of the store is dropped (or [`close`](Self::close)d): for examples,
    /// tools and tests that want a real store and nothing left behind.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open).
    pub async fn temporary() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("osa-events-{}.sqlite", uuid::Uuid::new_v4()));
        let options = SqliteConnectOptions::new().filename(&path);
        Self::connect_options(options, SqliteSettings::default(), true).await
    }

    async fn connect_options(
        options: SqliteConnectOptions,
        settings: SqliteSettings,
        temporary: bool,
    ) -> Result<Self> {
        let path = options.get_filename().to_owned();
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(settings.busy_timeout)
            .foreign_keys(false);
        let wake = WakeHub::new();
        let hooks = wake.clone();
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            // Waiting for a connection is waiting for another writer's turn, at worst.
            .acquire_timeout(settings.busy_timeout + Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                let hooks = hooks.clone();
                Box::pin(async move { hooks.watch_commits(conn).await })
            })
            .connect_with(options)
            .await;
        let pool = match pool {
            Ok(pool) => pool,
            Err(error) => {
                if temporary {
                    remove_database_files(&path);
                }
                return Err(error.into());
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                wake,
                settings,
                path,
                temporary,
            }),
        })
    }

    /// The connection pool, for the application's own queries and for publishing in its own
    /// transactions (begin them with [`begin`](Self::begin), which takes the write lock at once).
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the file is removed when the store goes ([`temporary`](Self::temporary)).
    pub fn is_temporary(&self) -> bool {
        self.inner.temporary
    }

    /// The settings the store was opened with.
    pub fn settings(&self) -> SqliteSettings {
        self.inner.settings
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE`), for publishing with your own writes.
    ///
    /// It takes SQLite's write lock at once, waiting for it up to the busy timeout. A transaction
    /// begun with a plain `BEGIN` (`pool().begin()`) takes the lock only at its first write, and
    /// then fails at once, with `database is locked`, if another connection wrote since it first
    /// read: begin transactions that read, then publish, with this.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use osa_events::Event;
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Event, Serialize, Deserialize)]
    /// # #[event(name = "record.published")]
    /// # struct RecordPublished { srn: String }
    /// # async fn example(store: osa_events::SqliteStore) -> Result<(), osa_events::Error> {
    /// let mut tx = store.begin().await?;
    /// sqlx::query("insert into records (srn) values (?)").bind("srn:1").execute(&mut *tx).await?;
    /// osa_events::sqlite::publish(&mut tx, &RecordPublished { srn: "srn:1".into() }).await?;
    /// tx.commit().await?; // delivered if and only if this commits
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] when the lock stayed taken for the busy timeout; [`Error::Database`] when
    /// the database cannot be reached.
    pub async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        self.timed(async { Ok(self.inner.pool.begin_with("BEGIN IMMEDIATE").await?) })
            .await
    }

    /// Closes the pool, waiting for its connections to finish; a [`temporary`](Self::temporary)
    /// store's file is removed once the last clone is gone.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    /// Runs a store operation, reporting a lock held past the busy timeout as [`Error::Busy`].
    pub(crate) async fn timed<T>(&self, operation: impl Future<Output = Result<T>>) -> Result<T> {
        busy::clarify(operation.await, self.inner.settings.busy_timeout)
    }

    /// Wakes this process's workers of `subscription`.
    pub(crate) fn wake_subscription(&self, subscription: SubscriptionId) {
        self.inner.wake.wake(Some(subscription));
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("temporary", &self.inner.temporary)
            .field("connections", &self.inner.pool.size())
            .field("busy_timeout", &self.inner.settings.busy_timeout)
            .finish_non_exhaustive()
    }
}

impl Store for SqliteStore {
    fn register<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> BoxFuture<'a, Result<Vec<SubscriptionId>>> {
        Box::pin(self.timed(register::register(self, subscriptions)))
    }

    fn claim<'a>(&'a self, request: ClaimRequest<'a>) -> BoxFuture<'a, Result<Vec<Delivery>>> {
        // Always under the write lock, even when nothing may be due: a worker woken by a commit
        // hook (which runs as the commit begins) waits here for that commit to end, and then sees
        // what it published; a read outside the lock could still miss it.
        Box::pin(self.timed(async move {
            let mut tx = self.inner.pool.begin_with("BEGIN IMMEDIATE").await?;
            let claimed = claim::claim(&mut tx, request).await?;
            tx.commit().await?;
            Ok(claimed)
        }))
    }

    fn complete<'a>(
        &'a self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.timed(async move {
            if done.is_empty() {
                return Ok(0);
            }
            fenced::complete(&self.inner.pool, subscription, done).await
        }))
    }

    fn complete_and_claim<'a>(
        &'a self,
        done: &'a [Fence],
        request: ClaimRequest<'a>,
    ) -> BoxFuture<'a, Result<(u64, Vec<Delivery>)>> {
        Box::pin(self.timed(async move {
            let mut tx = self.inner.pool.begin_with("BEGIN IMMEDIATE").await?;
            let completed = fenced::complete(&mut *tx, request.subscription, done).await?;
            let claimed = claim::claim(&mut tx, request).await?;
            tx.commit().await?;
            Ok((completed, claimed))
        }))
    }

    fn fail<'a>(
        &'a self,
        subscription: SubscriptionId,
        failures: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.timed(async move {
            if failures.is_empty() {
                return Ok(0);
            }
            let mut tx = self.inner.pool.begin_with("BEGIN IMMEDIATE").await?;
            let written = fenced::fail(&mut tx, subscription, failures).await?;
            tx.commit().await?;
            Ok(written)
        }))
    }

    fn extend<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
        claim_timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<i64>>> {
        Box::pin(self.timed(fenced::extend(
            &self.inner.pool,
            subscription,
            claims,
            claim_timeout,
        )))
    }

    fn release<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.timed(async move {
            let released = fenced::release(&self.inner.pool, subscription, claims).await?;
            if released > 0 {
                self.wake_subscription(subscription);
            }
            Ok(released)
        }))
    }

    fn defer<'a>(
        &'a self,
        subscription: SubscriptionId,
        deferred: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.timed(fenced::defer(&self.inner.pool, subscription, deferred)))
    }

    fn wake_ups(&self) -> Option<BoxFuture<'static, Result<WakeUps>>> {
        let source = self.inner.wake.source();
        Some(Box::pin(async move { Ok(WakeUps::new(source)) }))
    }

    fn projections(&self) -> Option<Arc<dyn osa_events_core::store::ProjectionStore>> {
        Some(Arc::new(self.clone()))
    }

    /// By the triggers of the `ordering_keys` migration.
    fn orders_by_key(&self) -> bool {
        true
    }

    fn operations(&self) -> Option<&dyn osa_events_core::operations::Operations> {
        Some(self)
    }

    fn transactions(&self) -> Option<&dyn osa_events_core::store::Transactions> {
        Some(self)
    }
}
