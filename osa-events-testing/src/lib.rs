//! Test support for osa-events.
//!
//! - [`FakeClock`]: time that moves only when the test says so.
//! - [`InMemoryStore`]: a [`Store`](osa_events::Store) with the semantics of `PgStore`, in
//!   memory, deterministic on a [`FakeClock`].
//! - [`contract`]: the store contract suite every store must pass, with
//!   [`store_contract_tests!`] to run it.
//! - [`pg`]: PostgreSQL for tests and examples: a fresh database per test
//!   ([`pg::TestDatabase`]), and a throwaway cluster when `DATABASE_URL` is unset
//!   ([`pg::ThrowawayCluster`], the `with-postgres` binary behind `scripts/test.sh`).

mod clock;
mod memory;

pub mod contract;
pub mod pg;

pub use clock::FakeClock;
pub use memory::{DeliveryInfo, DeliveryStatus, InMemoryStore, RawEvent};
