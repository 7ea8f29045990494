//! Leadership across processes: a lease on the projection's `checkpoints` row.
//!
//! SQLite has no sessions to hold a lock for a process, so the leader holds a lease: `leader`
//! (its holder's name), `lease_token` (fresh and random for every leadership) and `lease_until`
//! (store time, `unixepoch('subsec')`, plus [`LEASE`]). A candidate takes the row when its lease is
//! free (released, or never taken) or has expired, in one statement under the write lock, so two
//! candidates never both take it. The token is the leadership: every write of the leader names it
//! (`where lease_token = ?`), so once another leader has taken the row, the old one's writes match
//! nothing, and the old leader learns that it is deposed.
//!
//! The leader keeps its lease alive with a renewal task every [`LEASE`]` / 3`, also while it
//! idles between batches, and with every batch it commits. A leader that resigns or is dropped
//! releases the lease at once; one whose process dies (or stops renewing) loses it when it
//! expires, and a candidate takes it then.
//!
//! # The lease: 10 s
//!
//! [`LEASE`] bounds how long a projection stands still after its leader's process died: another
//! process takes it over within 10 s (`tests/it/sqlite_order.rs` kills a leader and measures it),
//! the order of what PostgreSQL's keepalive takes to end a vanished leader's session (about 6 s).
//! Shorter, and a leader whose renewals are held up (a busy disk, a machine under load, another
//! writer holding the lock for seconds) loses the projection for nothing; the renewal runs every
//! 3.3 s, so two renewals in a row can fail and the lease still holds. A leader that stays
//! deposed only for a moment costs a resign and a new leadership, never a wrong write: every write
//! is fenced by the token.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::SqliteStore;
use osa_events_core::Result;

/// How long a lease lasts without being renewed (see the [module docs](self)).
pub(super) const LEASE: Duration = Duration::from_secs(10);

/// How often a candidate looks at a lease another leader holds.
const POLL: Duration = Duration::from_millis(50);

/// Whether the lease of projection `?1` is free or expired (or the projection has no row yet): a
/// read, so a waiting candidate never takes the write lock for nothing.
const FREE_SQL: &str = r#"
select not exists (
    select 1 from checkpoints
    where name = ?1 and lease_token is not null and lease_until > unixepoch('subsec')
)
"#;

/// Takes the lease of projection `?1` for holder `?2` with token `?3` for `?4` seconds, if it is
/// free or expired, creating the checkpoint at the beginning if it has none; one row changed when
/// it took it.
const TAKE_SQL: &str = r#"
insert into checkpoints (name, leader, lease_token, lease_until)
values (?1, ?2, ?3, unixepoch('subsec') + ?4)
on conflict (name) do update
set leader = excluded.leader, lease_token = excluded.lease_token,
    lease_until = excluded.lease_until
where checkpoints.lease_token is null or checkpoints.lease_until is null
   or checkpoints.lease_until <= unixepoch('subsec')
"#;

/// Extends the lease of `?1` held by token `?2` to `?3` seconds from now.
const RENEW_SQL: &str = r#"
update checkpoints set lease_until = unixepoch('subsec') + ?3
where name = ?1 and lease_token = ?2
"#;

/// Gives the lease of `?1` held by token `?2` up.
const RELEASE_SQL: &str = r#"
update checkpoints set leader = null, lease_token = null, lease_until = null
where name = ?1 and lease_token = ?2
"#;

/// A lease taken on projection `name`, renewed in the background until it is released or lost.
#[derive(Debug)]
pub(super) struct Lease {
    pub(super) store: SqliteStore,
    pub(super) name: &'static str,
    /// The lease's token, as stored: 32 hex digits.
    pub(super) token: String,
    /// Set once any write finds the token gone: the lease is lost for good.
    lost: Arc<AtomicBool>,
    /// The renewal task; `None` once released.
    renewal: Option<JoinHandle<()>>,
}

impl Lease {
    /// Takes projection `name`'s lease as `holder`, waiting up to `wait` for the current holder's
    /// to be released or to expire; `Ok(None)` when it still holds.
    pub(super) async fn try_take(
        store: &SqliteStore,
        name: &'static str,
        holder: &str,
        wait: Duration,
    ) -> Result<Option<Lease>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let free: bool = sqlx::query_scalar(FREE_SQL)
                .bind(name)
                .fetch_one(store.pool())
                .await?;
            if free {
                let token = Uuid::new_v4().simple().to_string();
                let taken = sqlx::query(TAKE_SQL)
                    .bind(name)
                    .bind(holder)
                    .bind(&token)
                    .bind(LEASE.as_secs_f64())
                    .execute(store.pool())
                    .await?
                    .rows_affected();
                if taken > 0 {
                    return Ok(Some(Lease::taken(store.clone(), name, token)));
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
    }

    fn taken(store: SqliteStore, name: &'static str, token: String) -> Lease {
        let lost = Arc::new(AtomicBool::new(false));
        let renewal = tokio::spawn(renew_until_lost(
            store.clone(),
            name,
            token.clone(),
            Arc::clone(&lost),
        ));
        Lease {
            store,
            name,
            token,
            lost,
            renewal: Some(renewal),
        }
    }

    /// Whether the lease is known to be lost (or released).
    pub(super) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Records that a write found the token gone: every later call fails.
    pub(super) fn lose(&self) {
        if !self.lost.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                projection = self.name,
                "the projection's lease was taken over: no longer its leader"
            );
        }
    }

    /// Gives the lease up, so another process can take it at once (best effort: a failure leaves
    /// it to expire).
    pub(super) async fn release(mut self) {
        let Some(renewal) = self.renewal.take() else {
            return;
        };
        renewal.abort();
        self.lost.store(true, Ordering::Relaxed);
        release(&self.store, self.name, &self.token).await;
    }
}

/// A lease dropped without [`release`](Lease::release) (a leader that went away mid-batch) is
/// released in the background, when there is a runtime to do it; otherwise it expires.
impl Drop for Lease {
    fn drop(&mut self) {
        let Some(renewal) = self.renewal.take() else {
            return;
        };
        renewal.abort();
        self.lost.store(true, Ordering::Relaxed);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, name, token) = (self.store.clone(), self.name, self.token.clone());
            runtime.spawn(async move { release(&store, name, &token).await });
        }
    }
}

async fn release(store: &SqliteStore, name: &str, token: &str) {
    let released = store
        .timed(async {
            Ok(sqlx::query(RELEASE_SQL)
                .bind(name)
                .bind(token)
                .execute(store.pool())
                .await?)
        })
        .await;
    if let Err(error) = released {
        tracing::warn!(projection = name, %error, "cannot release the projection's lease; it expires within {LEASE:?}");
    }
}

/// Extends the lease held by `token` in `conn`'s write transaction; whether it still held.
pub(super) async fn renew(
    conn: &mut sqlx::SqliteConnection,
    name: &str,
    token: &str,
) -> Result<bool> {
    let renewed = sqlx::query(RENEW_SQL)
        .bind(name)
        .bind(token)
        .bind(LEASE.as_secs_f64())
        .execute(conn)
        .await?;
    Ok(renewed.rows_affected() > 0)
}

/// Renews the lease every third of [`LEASE`] until it is found lost (or the task is aborted).
///
/// A renewal is one statement of its own: it waits for the write lock like any writer (a batch
/// being committed, a publisher), and one that fails (the lock stayed taken past the busy timeout)
/// is retried at the next tick, well before the lease runs out.
async fn renew_until_lost(
    store: SqliteStore,
    name: &'static str,
    token: String,
    lost: Arc<AtomicBool>,
) {
    let mut ticks = tokio::time::interval(LEASE / 3);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let renewed = store
            .timed(async {
                let mut conn = store.pool().acquire().await?;
                renew(&mut conn, name, &token).await
            })
            .await;
        match renewed {
            Ok(true) => {}
            Ok(false) => {
                if !lost.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        projection = name,
                        "the projection's lease was taken over: no longer its leader"
                    );
                }
                return;
            }
            Err(error) => {
                tracing::warn!(projection = name, %error, "cannot renew the projection's lease; retrying");
            }
        }
    }
}
