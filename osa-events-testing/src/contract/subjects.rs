//! The in-memory store, ready for the contract suite.

use std::time::Duration;

use osa_events::Outgoing;
use osa_events::store::SubscriptionId;

use super::{Row, StoreUnderTest};
use crate::FakeClock;
use crate::memory::InMemoryStore;

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

    async fn leap(&self, duration: Duration) -> bool {
        self.clock.advance(duration);
        true
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
