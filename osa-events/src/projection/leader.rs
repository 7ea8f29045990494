//! Leadership of a projection: a session advisory lock on a dedicated connection.
//!
//! The lock is taken with [`pg_try_advisory_lock`](https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADVISORY-LOCKS)
//! on a pool of exactly one connection, separate from the application's pool, so the lock never
//! leaks onto a connection someone else uses. Every batch runs its transaction on that same
//! connection and first checks, inside the transaction, that the session still holds the lock: if
//! the connection was lost (and with it the lock, which another process may hold by now), the
//! check fails, or the transaction dies with the session; either way nothing is written.
//!
//! Session locks do not survive PgBouncer in transaction mode: every transaction may run on
//! another server session, so the lock check fails and the projection never leads. Connect
//! projections directly or through session-mode pooling (see [`Leader::acquire`]'s error).

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::Result;

/// The first half of every projection lock key: "osae" in ASCII. The second half is
/// `hashtext('osa_events.projection:' || name)`.
const LOCK_NAMESPACE: i32 = 0x6f73_6165;

const TRY_LOCK_SQL: &str =
    "select pg_try_advisory_lock($1, hashtext('osa_events.projection:' || $2))";

/// Whether this session holds the projection's lock (session-level advisory locks show in
/// `pg_locks` with `objsubid = 2` for the two-key form).
const HOLDS_LOCK_SQL: &str = r#"
select exists (
    select 1 from pg_locks
    where locktype = 'advisory' and granted and pid = pg_backend_pid()
      and classid = $1::int4::oid
      and objid = hashtext('osa_events.projection:' || $2)::oid
      and objsubid = 2
)
"#;

/// The leader's side of a projection: its dedicated connection, holding the lock.
#[derive(Debug)]
pub(crate) struct Leader {
    pub(crate) pool: PgPool,
    name: &'static str,
}

impl Leader {
    /// Tries to become the projection's leader; `Ok(None)` when another session leads.
    pub(crate) async fn acquire(
        options: &PgConnectOptions,
        name: &'static str,
        process: &str,
    ) -> Result<Option<Leader>> {
        let options = options
            .clone()
            .application_name(&format!("osa-events projection {name} {process}"));
        // One connection, never recycled by the pool on its own: recycling would drop the lock.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let (locked,): (bool,) = sqlx::query_as(TRY_LOCK_SQL)
            .bind(LOCK_NAMESPACE)
            .bind(name)
            .fetch_one(&pool)
            .await?;
        if !locked {
            pool.close().await;
            return Ok(None);
        }
        Ok(Some(Leader { pool, name }))
    }

    /// Whether the session of `conn` (the leader's connection, inside a batch transaction) still
    /// holds the lock.
    pub(crate) async fn holds_lock(&self, conn: &mut sqlx::PgConnection) -> Result<bool> {
        let (held,): (bool,) = sqlx::query_as(HOLDS_LOCK_SQL)
            .bind(LOCK_NAMESPACE)
            .bind(self.name)
            .fetch_one(conn)
            .await?;
        Ok(held)
    }

    /// Gives leadership up: closing the connection releases the lock.
    pub(crate) async fn resign(self) {
        self.pool.close().await;
    }
}

/// SQL fragments shared with the status query in `ops`.
pub(crate) const LOCK_HOLDER_SQL: &str = r#"
select a.application_name
from pg_locks l join pg_stat_activity a on a.pid = l.pid
where l.locktype = 'advisory' and l.granted
  and l.classid = $1::int4::oid
  and l.objid = hashtext('osa_events.projection:' || $2)::oid
  and l.objsubid = 2
limit 1
"#;

/// The lock namespace, for `ops`.
pub(crate) const fn lock_namespace() -> i32 {
    LOCK_NAMESPACE
}
