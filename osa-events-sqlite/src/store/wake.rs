//! Wake-ups within the process: a commit that published (or an operation that made work due)
//! wakes this process's workers at once. Other processes sharing the file find the work at their
//! next poll: SQLite has no notifications across processes.
//!
//! Publishing is seen at its commit, whichever connection of the store's pool runs it (the
//! store's own transactions, or one an application began on [`SqliteStore::pool`]): each
//! connection carries an update hook that notes an insert into `events` and a commit hook that,
//! for a transaction that inserted one, sends a wake-up (a rollback forgets the note). The hint
//! goes out as the commit begins; a worker it wakes claims with `BEGIN IMMEDIATE`, which waits
//! for that commit's lock, so it sees what was published.
//!
//! [`SqliteStore::pool`]: super::SqliteStore::pool

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::BoxFuture;
use osa_events_core::Result;
use osa_events_core::store::{SubscriptionId, WakeSource};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteOperation;
use tokio::sync::watch;

/// The process's wake-up channel: a counter of wake-ups, watched by every claim loop's source.
#[derive(Debug, Clone)]
pub(crate) struct WakeHub {
    sender: Arc<watch::Sender<u64>>,
}

impl WakeHub {
    pub(crate) fn new() -> Self {
        Self {
            sender: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Wakes every listening worker of this process (wake-ups in a row merge into one).
    pub(crate) fn wake(&self) {
        self.sender
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// A source of wake-ups for [`Store::wake_ups`](osa_events_core::store::Store::wake_ups).
    pub(crate) fn source(&self) -> Listener {
        let mut receiver = self.sender.subscribe();
        receiver.mark_unchanged();
        Listener { receiver }
    }

    /// Installs the hooks that wake this hub when a transaction of `conn` that published commits.
    pub(crate) async fn watch_commits(&self, conn: &mut SqliteConnection) -> sqlx::Result<()> {
        let published = Arc::new(AtomicBool::new(false));
        let mut handle = conn.lock_handle().await?;
        let noted = Arc::clone(&published);
        handle.set_update_hook(move |change| {
            if change.operation == SqliteOperation::Insert && change.table == "events" {
                noted.store(true, Ordering::Relaxed);
            }
        });
        let committed = Arc::clone(&published);
        let hub = self.clone();
        handle.set_commit_hook(move || {
            if committed.swap(false, Ordering::Relaxed) {
                hub.wake();
            }
            true
        });
        handle.set_rollback_hook(move || published.store(false, Ordering::Relaxed));
        Ok(())
    }
}

/// One claim loop's view of the hub.
pub(crate) struct Listener {
    receiver: watch::Receiver<u64>,
}

impl WakeSource for Listener {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<SubscriptionId>>> {
        Box::pin(async move {
            // The hub lives as long as the store; a closed channel means it is gone, and every
            // subscription should look (polling goes on regardless).
            if self.receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            Ok(None)
        })
    }
}
