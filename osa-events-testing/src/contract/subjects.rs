//! The two stores of this workspace, ready for the contract suite.

use std::time::Duration;

use osa_events::{Outgoing, PgStore};

use osa_events::store::SubscriptionId;

use super::{DeliveryStatus, Row, StoreUnderTest};
use crate::FakeClock;
use crate::memory::InMemoryStore;
use crate::pg::TestDatabase;

/// An [`InMemoryStore`] on a [`FakeClock`]: time passes only when a rule lets it, instantly.
#[derive(Debug, Clone)]
pub struct MemoryUnderTest {
    store: InMemoryStore,
    clock: FakeClock,
}

impl MemoryUnderTest {
    /// An empty store on a fresh fake clock.
    pub fn new() -> Self {
        let clock = FakeClock::new();
        Self {
            store: InMemoryStore::with_clock(clock.clone()),
            clock,
        }
    }

    /// The fake clock the store reads.
    pub fn clock(&self) -> &FakeClock {
        &self.clock
    }
}

impl Default for MemoryUnderTest {
    fn default() -> Self {
        Self::new()
    }
}

impl StoreUnderTest for MemoryUnderTest {
    type Store = InMemoryStore;

    fn store(&self) -> &InMemoryStore {
        &self.store
    }

    async fn publish(&self, batch: &[Outgoing]) -> u64 {
        self.store.publish_batch(batch)
    }

    async fn pass(&self, duration: Duration) {
        self.clock.advance(duration);
    }

    async fn rows(&self, subscription: SubscriptionId) -> Vec<Row> {
        self.store
            .deliveries(subscription)
            .into_iter()
            .map(|delivery| Row {
                position: delivery.position,
                status: delivery.status,
                attempts: delivery.attempts,
                last_error: delivery.last_error,
            })
            .collect()
    }

    async fn event_count(&self) -> u64 {
        u64::try_from(self.store.events().len()).unwrap_or(u64::MAX)
    }

    async fn depose(&self, projection: &str) -> bool {
        self.store.depose_projection_leader(projection)
    }
}

/// A migrated [`PgStore`] in a fresh [`TestDatabase`], on real time: rules sleep to let time pass.
///
/// The database is dropped with the value.
#[derive(Debug)]
pub struct PgUnderTest {
    store: PgStore,
    // Declared last, dropped last: the pool is closed before the database is dropped.
    database: TestDatabase,
}

impl PgUnderTest {
    /// Creates a database on the server in `DATABASE_URL` and runs the migrations.
    ///
    /// # Panics
    ///
    /// When `DATABASE_URL` is unset (run the tests through `scripts/test.sh`), the server cannot
    /// be reached, or the migrations fail: a contract test cannot run without its database.
    pub async fn create() -> Self {
        let database = TestDatabase::create()
            .await
            .unwrap_or_else(|error| panic!("no test database for the contract suite: {error}"));
        let store = PgStore::from_pool(database.pool().clone());
        store
            .migrate()
            .await
            .unwrap_or_else(|error| panic!("migrations fail on a fresh database: {error}"));
        Self { store, database }
    }

    /// The test database.
    pub fn database(&self) -> &TestDatabase {
        &self.database
    }
}

impl StoreUnderTest for PgUnderTest {
    type Store = PgStore;

    fn store(&self) -> &PgStore {
        &self.store
    }

    async fn publish(&self, batch: &[Outgoing]) -> u64 {
        osa_events::publish_batch(self.store.pool(), batch)
            .await
            .expect("publish to PostgreSQL")
            .events
    }

    async fn pass(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    async fn rows(&self, subscription: SubscriptionId) -> Vec<Row> {
        let rows: Vec<(i64, String, i32, Option<String>)> = sqlx::query_as(
            "select event_position, status, attempts, last_error from osa_events.deliveries \
             where subscription_id = $1 order by event_position",
        )
        .bind(subscription.0)
        .fetch_all(self.store.pool())
        .await
        .expect("read deliveries");
        rows.into_iter()
            .map(|(position, status, attempts, last_error)| Row {
                position,
                status: match status.as_str() {
                    "pending" => DeliveryStatus::Pending,
                    "claimed" => DeliveryStatus::Claimed,
                    "dead" => DeliveryStatus::Dead,
                    other => panic!("unknown delivery status `{other}`"),
                },
                attempts: u32::try_from(attempts).expect("attempts are never negative"),
                last_error,
            })
            .collect()
    }

    async fn event_count(&self) -> u64 {
        let count: i64 = sqlx::query_scalar("select count(*) from osa_events.events")
            .fetch_one(self.store.pool())
            .await
            .expect("count events");
        u64::try_from(count).unwrap_or(0)
    }

    /// Terminates the session holding the projection's advisory lock, and waits until it is gone.
    async fn depose(&self, projection: &str) -> bool {
        let terminated: i64 = sqlx::query_scalar(
            "select count(*) filter (where pg_terminate_backend(l.pid, 5000)) from pg_locks l \
             where l.locktype = 'advisory' and l.granted \
               and l.database = (select oid from pg_database where datname = current_database()) \
               and l.objid = hashtext('osa_events.projection:' || $1)::oid and l.objsubid = 2",
        )
        .bind(projection)
        .fetch_one(self.store.pool())
        .await
        .expect("terminate the leader's session");
        terminated > 0
    }
}
