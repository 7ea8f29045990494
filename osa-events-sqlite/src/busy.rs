//! `database is locked` past the busy timeout, reported as what it is.
//!
//! Every connection waits for SQLite's locks up to the busy timeout (SQLite's own busy handler),
//! so contention between writers is waited out and never surfaces as an error. What still fails
//! with `SQLITE_BUSY` waited the whole timeout; [`clarify`] turns that error into
//! [`Error::Busy`], naming the wait, at the boundary of every store operation.

use std::time::Duration;

use osa_events_core::{Error, Result};

/// SQLite's primary result codes for a lock held elsewhere: `SQLITE_BUSY` (5) and
/// `SQLITE_LOCKED` (6); extended codes (`SQLITE_BUSY_SNAPSHOT` is 517) keep them in the low byte.
const BUSY: i64 = 5;
const LOCKED: i64 = 6;

/// `result` with a lock timeout as [`Error::Busy`].
pub(crate) fn clarify<T>(result: Result<T>, waited: Duration) -> Result<T> {
    result.map_err(|error| clarify_error(error, waited))
}

/// `error` as [`Error::Busy`] when it is SQLite's lock timeout, else unchanged.
pub(crate) fn clarify_error(error: Error, waited: Duration) -> Error {
    match error {
        Error::Database(source) if is_busy(&source) => Error::Busy { waited, source },
        error => error,
    }
}

/// Whether `source` is an `sqlx::Error` carrying `SQLITE_BUSY` or `SQLITE_LOCKED`.
fn is_busy(source: &osa_events_core::BackendError) -> bool {
    let Some(sqlx::Error::Database(database)) = source.downcast_ref::<sqlx::Error>() else {
        return false;
    };
    database
        .code()
        .and_then(|code| code.parse::<i64>().ok())
        .is_some_and(|code| matches!(code & 0xff, BUSY | LOCKED))
}
