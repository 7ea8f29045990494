//! [`FakeClock`]: time that moves only when the test says so.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use osa_events::Clock;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A [`Clock`] whose time stands still until the test moves it with [`advance`](Self::advance)
/// or [`advance_to`](Self::advance_to).
///
/// Give one to the runtime (`RuntimeBuilder::clock`) and to an
/// [`InMemoryStore`](crate::InMemoryStore) (`InMemoryStore::with_clock`), and every poll interval,
/// heartbeat, handler timeout, backoff and claim expiry follows the test's script instead of the
/// wall clock: a test of a five-minute claim timeout takes microseconds and never flakes.
///
/// Clones share one time: advancing any clone advances them all. Cloning is cheap.
///
/// # Sleeping
///
/// [`Clock::sleep`] returns a future that completes once the fake time has reached the time of
/// the call plus the duration. The deadline is fixed when `sleep` is called, not when the future
/// is first polled, as with [`tokio::time::sleep`]. A zero duration completes at once. Advancing
/// wakes every sleep whose deadline has passed, earliest deadline first; dropping a sleep future
/// unregisters it.
///
/// # Auto-advance
///
/// Unlike tokio's paused clock ([`tokio::time::pause`][pause]), a `FakeClock` never
/// auto-advances: when every task is waiting on one of its sleeps, nothing happens until the test
/// calls [`advance`](Self::advance). A test that forgets to advance hangs, so bound such waits by
/// the real clock (for example with [`tokio::time::timeout`]).
///
/// # Yielding
///
/// `advance` only marks the expired sleeps complete. The tasks waiting on them run when the
/// scheduler next gets the chance, typically when the test itself awaits something (for example
/// [`tokio::task::yield_now`]). This differs from tokio's [`tokio::time::advance`][advance], which
/// is `async` and yields once itself.
///
/// [pause]: https://docs.rs/tokio/1/tokio/time/fn.pause.html
/// [advance]: https://docs.rs/tokio/1/tokio/time/fn.advance.html
///
/// # Scope
///
/// Only code that asks this clock for time is affected. [`tokio::time::sleep`],
/// [`tokio::time::Instant::now`] and the database's `now()` keep running on their own time.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use osa_events::Clock;
/// use osa_events_testing::FakeClock;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let clock = FakeClock::new();
/// let start = clock.now();
/// let nap = tokio::spawn(clock.sleep(Duration::from_secs(300)));
///
/// clock.advance(Duration::from_secs(299));
/// tokio::task::yield_now().await;
/// assert!(!nap.is_finished());
///
/// clock.advance(Duration::from_secs(1));
/// nap.await.unwrap(); // five minutes, in no time
/// assert_eq!(clock.now() - start, Duration::from_secs(300));
/// # }
/// ```
#[derive(Clone)]
pub struct FakeClock {
    shared: Arc<Mutex<Timeline>>,
}

/// The current fake time and the sleeps waiting on it, keyed by (deadline, registration order).
struct Timeline {
    now: Instant,
    sleepers: BTreeMap<(Instant, u64), oneshot::Sender<()>>,
    registered: u64,
}

impl FakeClock {
    /// A fake clock that reads the current [`tokio::time::Instant`] and then stands still.
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A fake clock that stands still at `start`.
    pub fn starting_at(start: Instant) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Timeline {
                now: start,
                sleepers: BTreeMap::new(),
                registered: 0,
            })),
        }
    }

    /// The current fake time (the same as [`Clock::now`]).
    pub fn now(&self) -> Instant {
        self.timeline().now
    }

    /// Moves time forward by `duration` and wakes, earliest deadline first, every sleep whose
    /// deadline has now passed. See [Yielding](Self#yielding) for when the woken tasks run.
    ///
    /// # Panics
    ///
    /// If the new time cannot be represented as an [`Instant`].
    pub fn advance(&self, duration: Duration) {
        let mut timeline = self.timeline();
        let to = timeline
            .now
            .checked_add(duration)
            .expect("FakeClock::advance: time overflowed Instant");
        Self::move_to(&mut timeline, to);
    }

    /// Moves time forward to `instant` and wakes every sleep whose deadline has passed, as
    /// [`advance`](Self::advance) does. Moving to the current time only wakes the sleeps that are
    /// due now.
    ///
    /// # Panics
    ///
    /// If `instant` is earlier than [`now`](Self::now): fake time, like tokio's, never goes back.
    pub fn advance_to(&self, instant: Instant) {
        let mut timeline = self.timeline();
        assert!(
            instant >= timeline.now,
            "FakeClock::advance_to: {instant:?} is earlier than the current fake time {now:?}; \
             time never goes back",
            now = timeline.now
        );
        Self::move_to(&mut timeline, instant);
    }

    /// How many sleeps are waiting for time to move. A test can wait for this to reach the number
    /// of tasks it expects to be idle before it advances.
    pub fn sleepers(&self) -> usize {
        self.timeline().sleepers.len()
    }

    /// The earliest deadline any sleep is waiting for, if one is.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timeline()
            .sleepers
            .first_key_value()
            .map(|(&(deadline, _), _)| deadline)
    }

    fn move_to(timeline: &mut Timeline, to: Instant) {
        timeline.now = to;
        // Everything strictly after `(to, u64::MAX)` stays; the rest is due, in deadline order.
        let later = timeline.sleepers.split_off(&(to, u64::MAX));
        let due = std::mem::replace(&mut timeline.sleepers, later);
        for (_, waker) in due {
            // The receiver is gone when its sleep was dropped in the meantime.
            let _ = waker.send(());
        }
    }

    fn timeline(&self) -> MutexGuard<'_, Timeline> {
        // Nothing panics while holding the lock, but a test that panicked elsewhere should not
        // turn every later clock read into a second panic.
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FakeClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let timeline = self.timeline();
        f.debug_struct("FakeClock")
            .field("now", &timeline.now)
            .field("sleepers", &timeline.sleepers.len())
            .finish()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        FakeClock::now(self)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let mut timeline = self.timeline();
        let Some(deadline) = timeline.now.checked_add(duration) else {
            // Beyond any representable time: never completes, as no advance can reach it.
            return Box::pin(std::future::pending());
        };
        if deadline <= timeline.now {
            return Box::pin(std::future::ready(()));
        }
        let key = (deadline, timeline.registered);
        timeline.registered += 1;
        let (waker, woken) = oneshot::channel();
        timeline.sleepers.insert(key, waker);
        Box::pin(Sleep {
            shared: Arc::clone(&self.shared),
            key,
            woken,
        })
    }
}

/// A registered sleep; unregisters itself when dropped.
struct Sleep {
    shared: Arc<Mutex<Timeline>>,
    key: (Instant, u64),
    woken: oneshot::Receiver<()>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // The sender stays in the timeline until it fires (this sleep's own drop is the only other
        // way out), so an error cannot happen while `self` exists.
        match Pin::new(&mut self.woken).poll(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Ready(Err(_)) | Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        let mut timeline = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        timeline.sleepers.remove(&self.key);
    }
}

#[cfg(test)]
mod tests;
