//! The unpublished suite package of the osa-events workspace.
//!
//! It owns `examples/` and `tests/` so that they can use `osa-events` and `osa-events-testing`
//! together (one copy of each crate, whose types unify), with the repo's own test machinery,
//! `osa-events-fixtures` (`tests/fixtures/`). Its only code is what the `osa-chaos` binary
//! (`src/bin/osa-chaos`) and the reliability tests that drive it share: the events they exchange,
//! [`chaos_events`], and what each chaos binary does as a process, [`chaos_process`].

pub mod chaos_events;
pub mod chaos_process;
