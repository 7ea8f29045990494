//! Leadership of a projection on PostgreSQL: a session advisory lock on a dedicated connection.
//!
//! The lock is taken with [`pg_try_advisory_lock`](https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADVISORY-LOCKS)
//! on a pool of exactly one connection, separate from the application's pool, so the lock never
//! leaks onto a connection someone else uses. Every batch runs its transaction on that same
//! connection and first checks, inside the transaction, that its session still holds the lock:
//! if the connection was lost (and with it the lock, which another process may hold by now), the
//! check fails, or the transaction dies with the session; either way nothing is written.
//!
//! A leader that dies frees the lock when the server ends its session: at once when its process
//! exits (the kernel closes the socket), and within about 6 s when its machine vanishes or the
//! network fails, thanks to the session's TCP keepalive and user timeout settings (see
//! `store/keepalive.rs`, shared with the worker pool; 5.4–5.7 s in the partition test,
//! `tests/it/reliability/projection_partition.rs`).
//! A follower waits for the lock in PostgreSQL's lock queue (for up to the wait the runner asks
//! for), so it is granted the lock the moment the leader's session ends.
//!
//! Leadership is about efficiency and the order of effects outside the database, not about
//! exactly-once: each batch also locks the checkpoint row (`for update`) before it reads, so two
//! sessions that both believed they led would still apply each event once.
//!
//! # Poolers in transaction mode
//!
//! Session locks do not survive a pooler in transaction mode (PgBouncer `pool_mode =
//! transaction`): each transaction may run on another server session, the lock stays behind on
//! the session that took it, and, since advisory locks are re-entrant within a session, another
//! client that lands on that session "takes" it too. Two checks catch it, each failing with
//! [`Error::Config`] naming the cause:
//!
//! - Taking the lock: a brand-new connection whose session already holds the lock must share
//!   its server session with another client, so it does not take the lock a second time.
//! - Each batch: the leader records its session's process id when it takes the lock. When a
//!   batch runs on another process id while the recorded one still holds the lock, the session
//!   cannot have been lost and retaken: a pooler moved the connection.
//!
//! These statements are unnamed (not cached), so that, behind a pooler, the error names the pooler
//! instead of a prepared statement missing on the new session. Connect projections directly or
//! through session-mode pooling.

use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use super::read::{self, Checkpoint};
use crate::PgTransaction;
use crate::store::keepalive;
use crate::tx::PgStoreTransaction;
use osa_events_core::store::{Advance, Leadership, OpenBatch, ReadAhead, Transaction};
use osa_events_core::{Error, Result};

/// The first half of every projection lock key: "osae" in ASCII. The second half is
/// `hashtext('osa_events.projection:' || name)`.
pub(super) const LOCK_NAMESPACE: i32 = 0x6f73_6165;

/// Takes the lock if it is free.
const TRY_LOCK_SQL: &str =
    "select pg_try_advisory_lock($1, hashtext('osa_events.projection:' || $2))";

/// Waits for the lock, up to the transaction's `lock_timeout` (set by `LOCK_TIMEOUT_SQL`): the
/// waiter is granted the lock the moment its holder's session ends.
const WAIT_LOCK_SQL: &str =
    "select pg_advisory_lock($1, hashtext('osa_events.projection:' || $2))::text";

/// Bounds `WAIT_LOCK_SQL`'s wait, for this transaction only.
const LOCK_TIMEOUT_SQL: &str = "select set_config('lock_timeout', $1, true)";

/// PostgreSQL's `lock_not_available`: the wait for the lock timed out.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Names the session that took the lock. The keepalive settings ([`keepalive`]) are set just
/// before, so the lock is freed when the leader's machine dies without closing its connection,
/// not hours later.
const SESSION_SQL: &str = "select pg_backend_pid()";

/// Whether the session with process id `$3` holds the lock of projection `$2` (session-level
/// advisory locks show in `pg_locks` with `objsubid = 2` for the two-key form), and which session
/// runs the statement: the select list both lock checks start with.
macro_rules! lock_check {
    () => {
        r#"
select exists (
    select 1 from pg_locks
    where locktype = 'advisory' and granted and pid = $3
      and classid = $1::int4::oid
      and objid = hashtext('osa_events.projection:' || $2)::oid
      and objsubid = 2
), pg_backend_pid()"#
    };
}

/// The lock check alone.
const CHECK_LOCK_SQL: &str = lock_check!();

/// A read-ahead batch's checkpoint, in one autocommit statement: the lock check, and the move
/// from `($6, $7)` to `($4, $5)` only while the lock holds and the checkpoint is still at
/// `($6, $7)` (a reset meanwhile stands). Returns the check and how many rows moved.
const COMMIT_AHEAD_SQL: &str = concat!(
    "with lock (held, pid) as (",
    lock_check!(),
    r#"
), moved as (
    update osa_events.checkpoints
    set position = $4, commit_seq = $5, last_error = null, failed_at = null, updated_at = now()
    where name = $2 and position = $6 and commit_seq = $7 and (select held from lock)
    returning 1
)
select held, pid, (select count(*) from moved) from lock
"#
);

/// What an idle poll needs, in one read-only autocommit statement: the lock check, the commit
/// high-water mark (its exclusive lock lasts only this statement) and the checkpoint, unlocked.
const PROBE_SQL: &str = concat!(
    lock_check!(),
    r#", osa_events.commit_high_water(), k.position, k.commit_seq
from osa_events.checkpoints k where k.name = $2
"#
);

/// Creates the checkpoint at the beginning if there is none, and names its leader.
const CLAIM_CHECKPOINT_SQL: &str = r#"
insert into osa_events.checkpoints (name, position, commit_seq, leader) values ($1, 0, 0, $2)
on conflict (name) do update set leader = excluded.leader
"#;

const RECORD_FAILURE_SQL: &str =
    "update osa_events.checkpoints set last_error = $2, failed_at = now() where name = $1";

/// Whether this session already holds the projection's lock.
const HELD_HERE_SQL: &str = r#"
select exists (
    select 1 from pg_locks
    where locktype = 'advisory' and granted and pid = pg_backend_pid()
      and classid = $1::int4::oid
      and objid = hashtext('osa_events.projection:' || $2)::oid
      and objsubid = 2
)
"#;

/// The error for a leader behind a pooler in transaction mode; `seen` says how it showed.
fn pooler_error(name: &str, seen: &str) -> Error {
    Error::Config(
        format!(
            "projection `{name}`: {seen}: a connection pooler in transaction mode (PgBouncer \
             `pool_mode = transaction`) is between this process and PostgreSQL. Session advisory \
             locks cannot work through it; connect projections directly or through a session-mode \
             pool"
        )
        .into(),
    )
}

/// Takes projection `name`'s lock in `tx`: at once if it is free, else waiting up to `wait`.
/// Whether it took it.
async fn take_lock(tx: &mut PgTransaction, name: &str, wait: Duration) -> Result<bool> {
    if wait.is_zero() {
        let locked: bool = sqlx::query_scalar(TRY_LOCK_SQL)
            .persistent(false)
            .bind(LOCK_NAMESPACE)
            .bind(name)
            .fetch_one(&mut **tx)
            .await?;
        return Ok(locked);
    }
    sqlx::query(LOCK_TIMEOUT_SQL)
        .persistent(false)
        .bind(format!("{}ms", wait.as_millis().max(1)))
        .execute(&mut **tx)
        .await?;
    let waited = sqlx::query(WAIT_LOCK_SQL)
        .persistent(false)
        .bind(LOCK_NAMESPACE)
        .bind(name)
        .execute(&mut **tx)
        .await;
    match waited {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(error))
            if error.code().as_deref() == Some(LOCK_NOT_AVAILABLE) =>
        {
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

/// The leadership of one projection: the dedicated connection whose session holds the lock.
#[derive(Debug)]
pub(super) struct PgLeadership {
    pool: PgPool,
    name: &'static str,
    /// The process id of the session that took the lock.
    pid: i32,
    /// The last probe after which everything up to its mark was read and committed: a poll that
    /// probes the same again has nothing to read.
    read_through: Option<read::Probe>,
    /// What `read_through` becomes once the open batch commits.
    pending: Option<read::Probe>,
}

impl PgLeadership {
    /// Tries to take projection `name`'s lock on a new dedicated connection, waiting up to `wait`
    /// for its holder to let go; `Ok(None)` when another session still holds it.
    pub(super) async fn try_take(
        options: &PgConnectOptions,
        name: &'static str,
        holder: &str,
        wait: Duration,
    ) -> Result<Option<PgLeadership>> {
        // Statement logs off: waiting seconds for the lock is this connection's job, not a slow
        // statement worth a warning.
        let options = options
            .clone()
            .application_name(&format!("osa-events projection {name} {holder}"))
            .disable_statement_logging();
        // One connection, never recycled by the pool on its own: recycling would drop the lock.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        // One transaction, so a pooler in transaction mode keeps it on one server session, and
        // unnamed statements, so no two clients of a pooler collide on statement names.
        let mut tx = pool.begin().await?;
        let held_here: bool = sqlx::query_scalar(HELD_HERE_SQL)
            .persistent(false)
            .bind(LOCK_NAMESPACE)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if held_here {
            // This connection is new, so its session cannot have taken the lock: a pooler gave
            // it the session of another client, which leads. Taking the (re-entrant) lock again
            // would make a second leader. Roll back before closing: a pooler closes a server
            // session whose client leaves mid-transaction, and that would end the leader's.
            let _ = tx.rollback().await;
            pool.close().await;
            return Err(pooler_error(
                name,
                "this new connection runs on a server session that already holds the \
                 projection's lock, which another client took",
            ));
        }
        if !take_lock(&mut tx, name, wait).await? {
            let _ = tx.rollback().await;
            pool.close().await;
            return Ok(None);
        }
        // In the lock's transaction, so that behind a pooler they reach the same session.
        keepalive::set(&mut tx).await?;
        let pid: i32 = sqlx::query_scalar(SESSION_SQL)
            .persistent(false)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(CLAIM_CHECKPOINT_SQL)
            .persistent(false)
            .bind(name)
            .bind(holder)
            .execute(&mut *tx)
            .await?;
        // A session lock outlives the transaction that took it; the keepalive settings too.
        tx.commit().await?;
        Ok(Some(PgLeadership {
            pool,
            name,
            pid,
            read_through: None,
            pending: None,
        }))
    }

    /// Fails unless the session of `conn` is the one that took the lock and still holds it.
    async fn confirm(&self, conn: &mut sqlx::PgConnection) -> Result<()> {
        // Unnamed: behind a pooler, a cached statement would not exist on the new session, and
        // the error would not say why.
        let (held, pid): (bool, i32) = sqlx::query_as(CHECK_LOCK_SQL)
            .persistent(false)
            .bind(LOCK_NAMESPACE)
            .bind(self.name)
            .bind(self.pid)
            .fetch_one(conn)
            .await?;
        self.confirmed(held, pid)
    }

    /// Confirms the leadership like [`confirm`](Self::confirm), and reads the high-water mark and
    /// the checkpoint, outside any transaction.
    async fn probe(&self) -> Result<read::Probe> {
        let (held, pid, high_water, position, commit_seq): (bool, i32, i64, i64, i64) =
            sqlx::query_as(PROBE_SQL)
                .persistent(false)
                .bind(LOCK_NAMESPACE)
                .bind(self.name)
                .bind(self.pid)
                .fetch_one(&self.pool)
                .await?;
        self.confirmed(held, pid)?;
        Ok(read::Probe {
            high_water: u64::try_from(high_water).unwrap_or(0),
            checkpoint: read::checkpoint_of(commit_seq, position),
        })
    }

    /// Whether the lock check's answer, `held` by the recorded session and run on session `pid`,
    /// confirms the leadership.
    fn confirmed(&self, held: bool, pid: i32) -> Result<()> {
        match (held, pid == self.pid) {
            (true, true) => Ok(()),
            (true, false) => Err(pooler_error(
                self.name,
                &format!(
                    "this connection now runs on server session {pid}, but the projection's lock \
                     is still held by session {}, which took it",
                    self.pid
                ),
            )),
            (false, _) => Err(Error::NotLeader {
                projection: self.name.to_owned(),
            }),
        }
    }
}

impl Leadership for PgLeadership {
    fn next_batch<'a>(
        &'a mut self,
        event_types: &'static [&'static str],
        limit: u32,
    ) -> BoxFuture<'a, Result<OpenBatch>> {
        Box::pin(async move {
            self.pending = None;
            let probe = self.probe().await?;
            if self.read_through == Some(probe) {
                // Nothing was committed since everything up to this mark was read: idle, and
                // read-only (no transaction, no row lock).
                let at = probe.checkpoint;
                return Ok(OpenBatch {
                    events: Vec::new(),
                    advance: Advance { from: at, to: at },
                    transaction: None,
                });
            }
            let mut tx = self.pool.begin().await?;
            self.confirm(&mut tx).await?;
            let from: Checkpoint = read::checkpoint(&mut tx, self.name).await?;
            let read =
                read::events_after(&mut tx, event_types, from, probe.high_water, limit).await?;
            let settled = read.reached_high_water.then_some(read::Probe {
                high_water: probe.high_water,
                checkpoint: read.to,
            });
            if read.to == from {
                // Nothing to apply or to move: the probe is settled as it stands.
                self.read_through = settled;
            } else {
                self.pending = settled;
            }
            Ok(OpenBatch {
                events: read.events,
                advance: Advance { from, to: read.to },
                // Not behind a transaction-mode pooler: a leader refuses to run there.
                transaction: Some(PgStoreTransaction::boxed(tx, false)),
            })
        })
    }

    fn commit<'a>(
        &'a mut self,
        advance: Advance,
        transaction: Option<Box<dyn Transaction>>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if transaction.is_none() && advance.from == advance.to {
                // An idle poll's batch: nothing was read and nothing moves.
                return Ok(());
            }
            // The batch's transaction still holds the checkpoint row and was opened after the lock
            // was confirmed; a lost session takes the transaction down with it.
            let mut tx = transaction
                .and_then(PgStoreTransaction::unwrap)
                .ok_or_else(|| {
                    Error::Config(
                        format!(
                            "projection `{}`: the batch's PostgreSQL transaction was not handed back",
                            self.name
                        )
                        .into(),
                    )
                })?;
            read::save(&mut tx, self.name, advance.to).await?;
            tx.commit().await?;
            self.read_through = self.pending.take();
            Ok(())
        })
    }

    /// The probe (which confirms the lock and takes the high-water mark), then one read after
    /// `after` up to the mark: a single statement, whose snapshot, taken after the probe, sees
    /// every commit up to the mark, as the batch transaction of `next_batch` does.
    fn read_ahead<'a>(
        &'a mut self,
        event_types: &'static [&'static str],
        after: Checkpoint,
        limit: u32,
    ) -> BoxFuture<'a, Result<Option<ReadAhead>>> {
        Box::pin(async move {
            // The idle shortcut of `next_batch` knows nothing of reads ahead.
            self.pending = None;
            self.read_through = None;
            let probe = self.probe().await?;
            let mut conn = self.pool.acquire().await?;
            let read =
                read::events_after(&mut conn, event_types, after, probe.high_water, limit).await?;
            Ok(Some(ReadAhead {
                events: read.events,
                to: read.to,
            }))
        })
    }

    fn commit_ahead(&mut self, advance: Advance) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move {
            let (held, pid, moved): (bool, i32, i64) = sqlx::query_as(COMMIT_AHEAD_SQL)
                .persistent(false)
                .bind(LOCK_NAMESPACE)
                .bind(self.name)
                .bind(self.pid)
                .bind(advance.to.position)
                .bind(read::signed(advance.to.commit_seq))
                .bind(advance.from.position)
                .bind(read::signed(advance.from.commit_seq))
                .fetch_one(&self.pool)
                .await?;
            self.confirmed(held, pid)?;
            // 0: a reset moved the checkpoint meanwhile, and stands.
            Ok(moved == 1)
        })
    }

    fn record_failure<'a>(&'a mut self, error: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query(RECORD_FAILURE_SQL)
                .persistent(false)
                .bind(self.name)
                .bind(error)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    /// Closing the connection ends the session, which releases the lock.
    fn resign(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.pool.close().await })
    }
}
