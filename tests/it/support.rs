//! Shared set-up: a migrated store in a fresh database, a runtime running in the background, and
//! waiting for a condition with a deadline.

use std::future::Future;
use std::time::Duration;

use osa_events::{PgStore, Resources, Runtime};
use osa_events_fixtures::pg::TestDatabase;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The variable that replays a randomized test of this binary: each one prints
/// `OSA_TEST_SEED=<seed>` ([`Rng::from_env_or_random`](osa_events_testing::Rng::from_env_or_random)).
/// The reliability tests have their own, `OSA_RELIABILITY_SEED`.
pub(crate) const SEED_VAR: &str = "OSA_TEST_SEED";

/// A fresh database with the osa-events schema.
pub(crate) struct Db {
    pub(crate) store: PgStore,
    // Dropped last: drops the database (when this `Db` created it).
    _database: Option<TestDatabase>,
}

impl Db {
    pub(crate) async fn new() -> Db {
        let database = TestDatabase::create()
            .await
            .unwrap_or_else(|error| panic!("no test database: {error}"));
        let store = PgStore::from_pool(database.pool().clone());
        store
            .migrate()
            .await
            .expect("migrations apply to a fresh database");
        Db {
            store,
            _database: Some(database),
        }
    }

    /// A `Db` view of an existing database (for helpers that take a `&Db`); it does not drop it.
    pub(crate) fn from_pool(pool: PgPool) -> Db {
        Db {
            store: PgStore::from_pool(pool),
            _database: None,
        }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// A url of this database, for another pool or process (the admin url's server and user).
    pub(crate) async fn url(&self) -> String {
        let name: String = sqlx::query_scalar("select current_database()")
            .fetch_one(self.pool())
            .await
            .expect("name the database");
        let admin = osa_events_fixtures::pg::require_database_url().expect("an admin url");
        let (base, _) = admin.rsplit_once('/').expect("a url with a database name");
        format!("{base}/{name}")
    }

    /// Counts rows of `osa_events.deliveries` in `status` (all statuses when `None`).
    pub(crate) async fn deliveries(&self, status: Option<&str>) -> i64 {
        sqlx::query_scalar(
            "select count(*) from osa_events.deliveries where $1::text is null or status = $1",
        )
        .bind(status)
        .fetch_one(self.pool())
        .await
        .expect("count deliveries")
    }

    /// `(attempts, last_error)` of every dead delivery, by position.
    pub(crate) async fn dead_letters(&self) -> Vec<(i32, String)> {
        sqlx::query_as(
            "select attempts, last_error from osa_events.deliveries where status = 'dead' order by event_position",
        )
        .fetch_all(self.pool())
        .await
        .expect("read dead letters")
    }

    /// Starts a runtime with only `handlers`, registers their subscriptions, and returns once they
    /// exist, so events published afterwards reach them.
    pub(crate) async fn start(&self, handlers: &[&str], resources: Resources) -> Running {
        self.start_with(handlers, resources, |builder| builder)
            .await
    }

    pub(crate) async fn start_with(
        &self,
        handlers: &[&str],
        resources: Resources,
        configure: impl FnOnce(osa_events::RuntimeBuilder) -> osa_events::RuntimeBuilder,
    ) -> Running {
        let shutdown = CancellationToken::new();
        let builder = Runtime::builder(self.store.clone())
            .only(handlers.iter().copied())
            .resources(resources)
            .handle_signals(false)
            .shutdown_token(shutdown.clone());
        let runtime = configure(builder).build().expect("runtime builds");
        runtime.register().await.expect("subscriptions register");
        let task = tokio::spawn(runtime.run());
        Running { shutdown, task }
    }
}

/// A runtime running in a background task.
pub(crate) struct Running {
    pub(crate) shutdown: CancellationToken,
    task: JoinHandle<osa_events::Result<()>>,
}

impl Running {
    /// Starts graceful shutdown and waits for the runtime to return.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("runtime stops within 30 s")
            .expect("runtime task does not panic")
            .expect("runtime returns Ok");
    }
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `limit`.
pub(crate) async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
