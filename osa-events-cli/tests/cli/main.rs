//! The `osa-events` binary run as a process against a real PostgreSQL: a fresh database per
//! test (`osa_events_fixtures::pg::TestDatabase`, which fails rather than skips without
//! `DATABASE_URL`), state set up through the library, then each command's output, exit code
//! and effect.
//!
//! One binary for the whole crate (every `tests/*.rs` would be a binary of its own).

mod support;

mod dashboard;
mod dead;
mod input;
mod interrupt;
mod lifecycle;
mod log;
mod status;
