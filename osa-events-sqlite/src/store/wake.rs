//! Wake-ups within the process: a commit that published (or an operation that made work due)
//! wakes this process's workers at once, naming the subscriptions that have new work. Other
//! processes sharing the file find the work at their next poll: SQLite has no notifications
//! across processes.
//!
//! Publishing is seen at its commit, whichever connection of the store's pool runs it (the
//! store's own transactions, or one an application began with
//! [`SqliteStore::begin`](super::SqliteStore::begin)): each connection of the pool carries a commit
//! hook and a rollback hook, and is known by its SQLite handle in a registry of this process.
//! Publishing notes the subscriptions it delivered to on its connection's entry; the commit hook
//! sends them out, a rollback forgets them. The hint goes out as the commit begins; a worker it
//! wakes claims with `BEGIN IMMEDIATE`, which waits for that commit's lock, so it sees what was
//! published. A connection from elsewhere (not the store's pool) publishes without wake-ups.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use futures_util::future::BoxFuture;
use osa_events_core::Result;
use osa_events_core::store::{SubscriptionId, WakeSource};
use sqlx::SqliteConnection;
use tokio::sync::broadcast;

/// How many hints a slow listener may fall behind before it is told to look everywhere.
const BACKLOG: usize = 1024;

/// The process's wake-up channel for one store (its pool).
#[derive(Debug, Clone)]
pub(crate) struct WakeHub {
    sender: broadcast::Sender<Option<SubscriptionId>>,
}

/// The subscriptions a connection's open transaction published to, sent out at its commit.
struct Published {
    hub: WakeHub,
    subscriptions: Mutex<BTreeSet<i32>>,
}

impl Published {
    fn take(&self) -> BTreeSet<i32> {
        std::mem::take(
            &mut *self
                .subscriptions
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

/// The connections of this process whose commits wake workers, by SQLite handle address. An entry
/// lives as long as its connection's hooks hold it.
static WATCHED: LazyLock<Mutex<HashMap<usize, Weak<Published>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// How many [`Listener`]s this process has, of any store: with none, a publish has nobody to
/// wake and skips noting its subscriptions (a round trip to the connection's thread). A listener
/// that starts after that publish looks at every subscription once it is connected (the runtime
/// wakes all its loops then), so the skipped hint loses nothing.
static LISTENERS: AtomicUsize = AtomicUsize::new(0);

fn watched() -> std::sync::MutexGuard<'static, HashMap<usize, Weak<Published>>> {
    WATCHED.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WakeHub {
    pub(crate) fn new() -> Self {
        Self {
            sender: broadcast::Sender::new(BACKLOG),
        }
    }

    /// Wakes the workers of `subscription` (`None`: of every subscription) in this process.
    pub(crate) fn wake(&self, subscription: Option<SubscriptionId>) {
        // No receiver: nobody listens yet, which is no error.
        let _ = self.sender.send(subscription);
    }

    /// A source of wake-ups for [`Store::wake_ups`](osa_events_core::store::Store::wake_ups).
    pub(crate) fn source(&self) -> Listener {
        LISTENERS.fetch_add(1, Ordering::SeqCst);
        Listener {
            receiver: self.sender.subscribe(),
        }
    }

    /// Installs the hooks that wake this hub when a transaction of `conn` that published commits,
    /// and registers the connection.
    pub(crate) async fn watch_commits(&self, conn: &mut SqliteConnection) -> sqlx::Result<()> {
        let published = Arc::new(Published {
            hub: self.clone(),
            subscriptions: Mutex::new(BTreeSet::new()),
        });
        let mut handle = conn.lock_handle().await?;
        let key = handle.as_raw_handle().as_ptr() as usize;
        let committed = Arc::clone(&published);
        handle.set_commit_hook(move || {
            for subscription in committed.take() {
                committed.hub.wake(Some(SubscriptionId(subscription)));
            }
            true
        });
        let rolled_back = Arc::clone(&published);
        handle.set_rollback_hook(move || {
            rolled_back.take();
        });
        let mut watched = watched();
        watched.retain(|_, entry| entry.strong_count() > 0);
        watched.insert(key, Arc::downgrade(&published));
        Ok(())
    }
}

/// Notes that the open transaction of `conn` (or the statement, outside one) delivered to
/// `subscriptions`, so its commit wakes their workers.
pub(crate) async fn note_published(
    conn: &mut SqliteConnection,
    subscriptions: impl IntoIterator<Item = i32>,
) -> sqlx::Result<()> {
    let mut subscriptions = subscriptions.into_iter().peekable();
    if subscriptions.peek().is_none() || LISTENERS.load(Ordering::SeqCst) == 0 {
        return Ok(());
    }
    let key = conn.lock_handle().await?.as_raw_handle().as_ptr() as usize;
    let entry = watched().get(&key).and_then(Weak::upgrade);
    if let Some(published) = entry {
        published
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(subscriptions);
    }
    Ok(())
}

/// One runtime's view of the hub.
pub(crate) struct Listener {
    receiver: broadcast::Receiver<Option<SubscriptionId>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        LISTENERS.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WakeSource for Listener {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<SubscriptionId>>> {
        Box::pin(async move {
            match self.receiver.recv().await {
                Ok(subscription) => Ok(subscription),
                // Hints were dropped: every subscription should look.
                Err(broadcast::error::RecvError::Lagged(_)) => Ok(None),
                // The hub lives as long as the store; without it, polling goes on alone.
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        })
    }
}
