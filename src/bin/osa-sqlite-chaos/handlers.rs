//! The handlers `osa-sqlite-chaos` runs, `osa-chaos`'s `chaos.ledger` and `chaos.tx` on SQLite.
//! Each records its effect in the ledger table of the same database file,
//! `chaos_ledger (handler, seq, pid, attempt, handled_at)`, which the test creates and reads:
//!
//! - `chaos.ledger` writes its row in a statement of its own on the store's pool, after the work:
//!   a worker killed between that write and the completion leaves a row the next worker writes
//!   again, so the ledger shows every duplicate at-least-once delivery produces.
//! - `chaos.tx` writes its row through its [`Tx`] (`tx.sqlite()`), which also carries the fenced
//!   completion: its rows must never repeat.
//!
//! The settings are `osa-chaos`'s: short claims (a killed worker's deliveries come back after 3 s)
//! and retries to spare (a delivery may be claimed by several workers that are killed in turn).

use osa_events::SqliteStore;
use osa_events::prelude::*;
use osa_events_suite::chaos_events::Item;

/// What the handlers share: the store, whose pool `chaos.ledger` writes through, and this
/// process's id.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) store: SqliteStore,
    pub(crate) pid: i64,
}

const RECORD_SQL: &str =
    "insert into chaos_ledger (handler, seq, pid, attempt) values (?1, ?2, ?3, ?4)";

fn attempt(ctx: &Ctx) -> i64 {
    i64::from(ctx.attempt())
}

#[event_handler(
    name = "chaos.ledger",
    batch = 16,
    concurrency = 2,
    claim_timeout = "3s",
    retries = 100,
    backoff = "50ms",
    max_backoff = "1s",
    poll = "250ms"
)]
async fn ledger(item: Item, app: State<App>, ctx: Ctx) -> Result<(), HandlerError> {
    sqlx::query(RECORD_SQL)
        .bind("chaos.ledger")
        .bind(item.seq)
        .bind(app.pid)
        .bind(attempt(&ctx))
        .execute(app.store.pool())
        .await?;
    Ok(())
}

#[event_handler(
    name = "chaos.tx",
    batch = 16,
    concurrency = 2,
    claim_timeout = "3s",
    retries = 100,
    backoff = "50ms",
    max_backoff = "1s",
    poll = "250ms"
)]
async fn ledger_in_tx(
    item: Item,
    app: State<App>,
    ctx: Ctx,
    mut tx: Tx,
) -> Result<(), HandlerError> {
    // From `tx.sqlite()` on, the transaction holds SQLite's write lock until it commits with the
    // completion: the row and the completion land together or not at all.
    sqlx::query(RECORD_SQL)
        .bind("chaos.tx")
        .bind(item.seq)
        .bind(app.pid)
        .bind(attempt(&ctx))
        .execute(tx.sqlite().await?)
        .await?;
    Ok(())
}
