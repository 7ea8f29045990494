//! Making the server notice within seconds that one of our clients is gone.
//!
//! Every connection osa-events opens itself (the worker pool of [`PgStore::connect`] and each
//! projection leader's session) sets, for its session: TCP keepalives every second after 3 idle
//! seconds, given up after 3 unanswered probes, and at most 5 s of unacknowledged data
//! (`tcp_user_timeout`). Without them, when a client's machine dies or the network between
//! drops every packet, the server keeps the session for hours, and with it whatever the session
//! holds: a projection's advisory lock, or an open `Tx` handler's transaction and its row locks,
//! which a worker that takes the delivery over would wait on. With them the server ends such a
//! session in about 6 s (5.4-5.7 s measured, RELIABILITY.md). No effect on Unix sockets, where
//! a dead process always closes its end.
//!
//! See [`tcp_keepalives_idle`](https://www.postgresql.org/docs/current/runtime-config-connection.html#GUC-TCP-KEEPALIVES-IDLE)
//! and the settings after it in the PostgreSQL manual.
//!
//! [`PgStore::connect`]: super::PgStore::connect

use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::{Executor, PgConnection};

/// The session settings, sent as one simple-protocol query (a constant string executed without
/// arguments): no prepared statement, so it also works through a pooler in transaction mode,
/// where it reaches some server session, harmlessly.
const KEEPALIVE_SQL: &str = "set tcp_keepalives_idle = 3; \
     set tcp_keepalives_interval = 1; \
     set tcp_keepalives_count = 3; \
     set tcp_user_timeout = 5000";

/// Applies the settings to `conn`'s session.
pub(crate) async fn set(conn: &mut PgConnection) -> sqlx::Result<()> {
    conn.execute(KEEPALIVE_SQL).await?;
    Ok(())
}

/// [`set`], in the shape of [`PgPoolOptions::after_connect`](sqlx::postgres::PgPoolOptions::after_connect).
pub(crate) fn after_connect(
    conn: &mut PgConnection,
    _: PoolConnectionMetadata,
) -> BoxFuture<'_, sqlx::Result<()>> {
    Box::pin(set(conn))
}
