//! The projection `osa-chaos` runs: `chaos.projection` applies every `chaos.item` event to the
//! application's table `chaos_projected (position, n, applied_seq, applied_by)`, which the tests
//! create and read.
//!
//! Each event becomes one row, written through the batch's [`Tx`] with the checkpoint. `position`
//! is the primary key, so an event applied twice fails its batch instead of hiding as a second
//! row; `applied_seq` (a `bigserial`) records the order of application, and `applied_by` the
//! process that applied it. After its rows, a batch works `--work-ms` before it returns, so a
//! leader killed mid-run is often killed with written but uncommitted rows; their `applied_seq`
//! values are lost with the rollback and show as a gap.

use osa_events::prelude::*;
use osa_events_suite::chaos_events::Item;

use crate::handlers::App;

const PROJECT_SQL: &str =
    "insert into chaos_projected (position, n, applied_by) values ($1, $2, $3)";

/// Small batches and a short poll, so that a leader is rarely idle; a short backoff, so that a
/// failed batch is retried within the test's time.
#[projection(
    name = "chaos.projection",
    batch = 25,
    poll = "50ms",
    backoff = "50ms",
    max_backoff = "1s"
)]
async fn project(items: Batch<Item>, app: State<App>, mut tx: Tx) -> Result<(), HandlerError> {
    // One statement per event, in the batch's order: `applied_seq` follows the application order.
    for (ctx, item) in items.iter_with_ctx() {
        sqlx::query(PROJECT_SQL)
            .bind(ctx.position())
            .bind(item.seq)
            .bind(app.pid)
            .execute(&mut *tx)
            .await?;
    }
    app.work().await;
    Ok(())
}
