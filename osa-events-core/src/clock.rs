//! [`Clock`]: where the runtime's timers come from, so tests can replace time.
//!
//! The clock drives the runtime's own waiting: idle polls, heartbeat intervals, handler timeouts,
//! the shutdown grace period. Deadlines stored in the database (claim expiry, retry times) are
//! always computed by the database's `now()`, never by this clock, so workers whose clocks disagree
//! still agree on them.

use std::fmt;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

/// A source of time for the runtime.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
    /// Completes after `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// The real clock: tokio's timers. Under `tokio::time::pause` it follows tokio's paused time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}
