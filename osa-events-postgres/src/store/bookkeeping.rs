//! Relaxed bookkeeping: the store's claims, completions and heartbeats committed with
//! `synchronous_commit = off` (see [`PgStore::relaxed_bookkeeping`](super::PgStore::relaxed_bookkeeping)).

use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgConnection, PgPool};

use super::keepalive;

/// For the sessions of the relaxed pool: one simple-protocol query, no prepared statement.
const RELAX_SESSION_SQL: &str = "set synchronous_commit = off";

/// For one bookkeeping transaction behind a transaction-mode pooler, where a session setting
/// would stay behind on a server session other clients share.
pub(super) const RELAX_TRANSACTION_SQL: &str = "set local synchronous_commit = off";

/// A pool like `pool` (same server, credentials, size and acquire timeout, keepalives), whose
/// sessions commit asynchronously. Lazy: it connects on first use, so a store that never claims
/// (a publisher) opens none of its connections.
pub(super) fn relaxed_pool(pool: &PgPool) -> PgPool {
    let options = pool.options();
    PgPoolOptions::new()
        .max_connections(options.get_max_connections())
        .acquire_timeout(options.get_acquire_timeout())
        .after_connect(relax)
        .connect_lazy_with((*pool.connect_options()).clone())
}

fn relax(conn: &mut PgConnection, _: PoolConnectionMetadata) -> BoxFuture<'_, sqlx::Result<()>> {
    Box::pin(async move {
        keepalive::set(conn).await?;
        conn.execute(RELAX_SESSION_SQL).await?;
        Ok(())
    })
}
