//! Waking idle claim loops early when a publisher notifies new work.
//!
//! One listening connection per process feeds a [`WakeBoard`]: one `watch` channel per subscription,
//! whose counter goes up on every hint. A claim loop that was busy when a hint arrived sees the
//! change on its next wait and claims again at once, so no hint is missed between two waits. Hints
//! are only hints: a lost one costs at most one `poll` interval, never an event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Clock;
use crate::store::{Store, SubscriptionId};

#[derive(Debug)]
pub(crate) struct WakeBoard {
    channels: HashMap<SubscriptionId, watch::Sender<u64>>,
}

impl WakeBoard {
    pub(crate) fn new(subscriptions: impl IntoIterator<Item = SubscriptionId>) -> Self {
        let channels = subscriptions
            .into_iter()
            .map(|id| (id, watch::Sender::new(0)))
            .collect();
        Self { channels }
    }

    /// A receiver for one claim loop; it starts with nothing unseen.
    pub(crate) fn waiter(&self, subscription: SubscriptionId) -> watch::Receiver<u64> {
        self.channels[&subscription].subscribe()
    }

    pub(crate) fn wake(&self, subscription: SubscriptionId) {
        if let Some(sender) = self.channels.get(&subscription) {
            sender.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    pub(crate) fn wake_all(&self) {
        for sender in self.channels.values() {
            sender.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }
}

/// Feeds the board from the store's wake-ups until `stopping`, reconnecting after failures. After
/// every (re)connect all loops are woken, because hints sent while disconnected are lost.
pub(crate) async fn listen(
    store: Arc<dyn Store>,
    board: Arc<WakeBoard>,
    clock: Arc<dyn Clock>,
    stopping: CancellationToken,
) {
    const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
    loop {
        let Some(connecting) = store.wake_ups() else {
            return; // this store has no wake-ups: polling alone
        };
        let connected = tokio::select! {
            connected = connecting => connected,
            () = stopping.cancelled() => return,
        };
        match connected {
            Ok(mut wake_ups) => {
                board.wake_all();
                loop {
                    let next = tokio::select! {
                        next = wake_ups.next() => next,
                        () = stopping.cancelled() => return,
                    };
                    match next {
                        Ok(Some(subscription)) => board.wake(subscription),
                        Ok(None) => board.wake_all(),
                        Err(error) => {
                            tracing::warn!(%error, "wake-up listener failed; polling until it reconnects");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for wake-ups; polling until it connects");
            }
        }
        tokio::select! {
            () = clock.sleep(RECONNECT_PAUSE) => {}
            () = stopping.cancelled() => return,
        }
    }
}
