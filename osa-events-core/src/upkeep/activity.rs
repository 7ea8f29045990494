//! The activity history's counters (see [`operations::activity`](crate::operations::activity)):
//! one [`ActivityCounter`] per handler and projection, added to by the claim loops and projection
//! loops, and an [`ActivityBoard`] of them all, flushed to the store on every node heartbeat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::pause;
use crate::operations::{ActivityDelta, ActivityKind, Operations};
use crate::store::Store;
use crate::{Clock, Result};

/// What one handler or projection did since the last flush. Added to with relaxed atomic adds
/// (a batch's counts need no order with anything else), taken by swapping each count to zero: a
/// count added between two swaps goes with the next flush, never with none.
#[derive(Debug, Default)]
pub(crate) struct ActivityCounter {
    handled: AtomicU64,
    failed: AtomicU64,
    dead: AtomicU64,
}

impl ActivityCounter {
    /// Adds one batch's counts.
    pub(crate) fn add(&self, handled: u64, failed: u64, dead: u64) {
        for (count, by) in [
            (&self.handled, handled),
            (&self.failed, failed),
            (&self.dead, dead),
        ] {
            if by > 0 {
                count.fetch_add(by, Ordering::Relaxed);
            }
        }
    }

    /// The counts since the last take, leaving zeros.
    fn take(&self) -> [u64; 3] {
        [&self.handled, &self.failed, &self.dead].map(|count| count.swap(0, Ordering::Relaxed))
    }
}

/// Every counter of one runtime, by kind and stored name, in the order they were added.
#[derive(Debug, Default)]
pub(crate) struct ActivityBoard {
    counters: Vec<(ActivityKind, String, Arc<ActivityCounter>)>,
}

impl ActivityBoard {
    /// A board with one counter per handler and per projection, by stored name.
    pub(crate) fn new<'a>(
        handlers: impl IntoIterator<Item = &'a str>,
        projections: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let handlers = handlers
            .into_iter()
            .map(|name| (ActivityKind::Handler, name));
        let projections = projections
            .into_iter()
            .map(|name| (ActivityKind::Projection, name));
        Self {
            counters: handlers
                .chain(projections)
                .map(|(kind, name)| (kind, name.to_owned(), Arc::default()))
                .collect(),
        }
    }

    /// The counter of the handler or projection stored as `name`.
    ///
    /// # Panics
    ///
    /// When the board has none: the runtime builds it from the handlers and projections it runs.
    pub(crate) fn counter(&self, kind: ActivityKind, name: &str) -> Arc<ActivityCounter> {
        self.counters
            .iter()
            .find(|(k, n, _)| *k == kind && n == name)
            .map(|(_, _, counter)| Arc::clone(counter))
            .expect("the activity board has a counter for every handler and projection it runs")
    }

    /// Takes every counter's counts, as deltas: only those with something to add.
    fn take(&self) -> Vec<ActivityDelta> {
        self.counters
            .iter()
            .filter_map(|(kind, name, counter)| {
                let [handled, failed, dead] = counter.take();
                (handled > 0 || failed > 0 || dead > 0).then(|| ActivityDelta {
                    kind: *kind,
                    name: name.clone(),
                    handled,
                    failed,
                    dead,
                })
            })
            .collect()
    }

    /// Adds `deltas`, taken but not recorded, back to their counters, to go with the next flush.
    fn give_back(&self, deltas: &[ActivityDelta]) {
        for delta in deltas {
            self.counter(delta.kind, &delta.name)
                .add(delta.handled, delta.failed, delta.dead);
        }
    }

    /// Records what was counted since the last flush. When the store fails, the counts stay on
    /// the board for the next flush, and the error is returned.
    pub(crate) async fn flush(&self, operations: &dyn Operations) -> Result<()> {
        let deltas = self.take();
        if deltas.is_empty() {
            return Ok(());
        }
        let recorded = operations.record_activity(&deltas).await;
        if recorded.is_err() {
            self.give_back(&deltas);
        }
        recorded
    }
}

/// Flushes `board` every `heartbeat` until shutdown (the runtime flushes once more after its
/// loops have stopped).
pub(crate) async fn keep_activity(
    store: Arc<dyn Store>,
    board: Arc<ActivityBoard>,
    heartbeat: Duration,
    clock: Arc<dyn Clock>,
    stopping: CancellationToken,
) {
    while pause(&clock, heartbeat, &stopping).await {
        let Some(operations) = store.operations() else {
            return;
        };
        if let Err(error) = board.flush(operations).await {
            tracing::warn!(%error, "cannot record the activity history; its counts are kept for the next heartbeat");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_take_leaves_zeros_and_skips_what_did_nothing() {
        let board = ActivityBoard::new(["a", "b"], ["a"]);
        board.counter(ActivityKind::Handler, "a").add(3, 1, 0);
        board.counter(ActivityKind::Projection, "a").add(7, 0, 0);
        board.counter(ActivityKind::Handler, "a").add(1, 0, 2);
        let taken = board.take();
        let counts: Vec<(ActivityKind, &str, u64, u64, u64)> = taken
            .iter()
            .map(|d| (d.kind, d.name.as_str(), d.handled, d.failed, d.dead))
            .collect();
        assert_eq!(
            counts,
            [
                (ActivityKind::Handler, "a", 4, 1, 2),
                (ActivityKind::Projection, "a", 7, 0, 0),
            ],
            "`b` did nothing"
        );
        assert!(board.take().is_empty(), "taken once");

        board.give_back(&taken);
        board.counter(ActivityKind::Handler, "b").add(0, 0, 1);
        let again: Vec<(&str, u64, u64, u64)> = board
            .take()
            .iter()
            .map(|d| (d.kind.as_str(), d.handled, d.failed, d.dead))
            .collect();
        assert_eq!(
            again,
            [
                ("handler", 4, 1, 2),
                ("handler", 0, 0, 1),
                ("projection", 7, 0, 0)
            ],
            "what was given back goes again, with what came since"
        );
    }
}
