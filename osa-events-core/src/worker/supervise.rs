//! Supervision of the runtime's loops: a claim loop or a projection loop that dies is logged
//! with its cause and started again, never left dead while the process looks healthy.
//!
//! A loop ends normally only at shutdown. Panics inside a handler call, or while decoding a
//! payload or extracting a handler's arguments, are failed attempts and never reach here; what
//! does is a fault of the loop itself (a store, a clock, a bug of ours). The loop is run again
//! after a pause that grows with each death in a row (100 ms, doubling, at most 30 s), so a
//! fault that repeats does not spin; a loop that ran for a minute before dying starts over at
//! 100 ms. Each death and restart is told to the runtime's [health](crate::health), where the
//! loop is not alive from its death until its restart.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::Clock;
use crate::handler::invoke::panic_message;

/// A loop that ran this long before it died is considered healthy again: its next restart pause
/// starts over.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// What a supervised loop's deaths and restarts are told to: the runtime's health board.
pub(crate) trait Watched {
    /// The loop died; it waits for its restart (or for shutdown).
    fn died(&self);
    /// The loop is started again after a death.
    fn restarted(&self);
    /// The loop ended at shutdown.
    fn stopped(&self);
}

/// Runs the loops `start` makes, one at a time, until one ends at shutdown. `what` names the
/// loop in the log (handler or projection, and which loop); `watch` hears of its deaths and
/// restarts.
pub(crate) async fn supervise<F, Fut>(
    what: String,
    stopping: CancellationToken,
    clock: Arc<dyn Clock>,
    watch: impl Watched,
    start: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut deaths: u32 = 0;
    loop {
        let started = clock.now();
        // In this task, not a task of its own: aborting the runtime's task stops the loop too.
        let ended = AssertUnwindSafe(start()).catch_unwind().await;
        let cause = match &ended {
            Ok(()) if stopping.is_cancelled() => {
                watch.stopped();
                return;
            }
            Ok(()) => "it returned before shutdown".to_owned(),
            Err(panic) => format!("it panicked: {}", panic_message(&**panic)),
        };
        watch.died();
        if stopping.is_cancelled() {
            tracing::error!(%what, %cause, "a loop died during shutdown");
            return;
        }
        if clock.now().saturating_duration_since(started) >= HEALTHY_AFTER {
            deaths = 0;
        }
        deaths = deaths.saturating_add(1);
        let restart_in = restart_pause(deaths);
        tracing::error!(%what, %cause, deaths, ?restart_in, "a loop died; restarting it");
        tokio::select! {
            () = clock.sleep(restart_in) => watch.restarted(),
            () = stopping.cancelled() => return,
        }
    }
}

/// 100 ms after the first death in a row, doubling with each further one, at most 30 s.
fn restart_pause(deaths_in_a_row: u32) -> Duration {
    let exponent = deaths_in_a_row.saturating_sub(1).min(16);
    Duration::from_millis(100)
        .saturating_mul(1 << exponent)
        .min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_pauses_double_and_are_capped() {
        assert_eq!(restart_pause(1), Duration::from_millis(100));
        assert_eq!(restart_pause(2), Duration::from_millis(200));
        assert_eq!(restart_pause(9), Duration::from_millis(25_600));
        assert_eq!(restart_pause(10), Duration::from_secs(30));
        assert_eq!(restart_pause(u32::MAX), Duration::from_secs(30));
    }
}
