//! Test support for osa-events.
//!
//! - [`pg`]: PostgreSQL for tests and examples: a fresh database per test
//!   ([`pg::TestDatabase`]), and a throwaway cluster when `DATABASE_URL` is unset
//!   ([`pg::ThrowawayCluster`], the `with-postgres` binary behind `scripts/test.sh`).

pub mod pg;
