//! Store time: REAL seconds since the Unix epoch, as `unixepoch('subsec')` gives them.
//!
//! Every statement that needs the time reads it with `unixepoch('subsec')`, which SQLite fixes
//! for the whole of one statement, so every row a statement writes gets the same time.

use std::time::{Duration, SystemTime};

/// A stored time as a `SystemTime` (a time before 1970 as the epoch).
pub(crate) fn from_epoch_seconds(seconds: f64) -> SystemTime {
    // A non-finite time (a waiting delivery's `run_at`) reads as the epoch rather than panicking.
    SystemTime::UNIX_EPOCH + Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or_default()
}

/// An age in seconds, as read by `unixepoch('subsec') - ..`, as a `Duration` (a negative one, from
/// a time ahead of the clock, as zero).
pub(crate) fn age(seconds: Option<f64>) -> Option<Duration> {
    seconds.map(|seconds| Duration::from_secs_f64(seconds.max(0.0)))
}
