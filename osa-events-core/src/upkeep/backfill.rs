//! Copying a new handler's history into its deliveries, chunk by chunk
//! ([`Operations::backfill`](crate::operations::Operations::backfill)).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::pause;
use crate::Clock;
use crate::operations::BackfillStep;
use crate::store::{Store, SubscriptionId};
use crate::worker::wake::WakeBoard;

/// Events of the log one step reads.
const CHUNK: u32 = 1_000;
/// The pause after a step that could copy nothing yet.
const WAIT: Duration = Duration::from_millis(100);
/// The pause after a failed step.
const RETRY: Duration = Duration::from_secs(1);

/// Runs the backfill of `handler` to its end (at once when none is pending), waking its claim
/// loops after each copied chunk.
pub(crate) async fn backfill(
    store: Arc<dyn Store>,
    handler: String,
    subscription: SubscriptionId,
    board: Arc<WakeBoard>,
    clock: Arc<dyn Clock>,
    stopping: CancellationToken,
) {
    let mut copied = 0u64;
    while !stopping.is_cancelled() {
        let Some(operations) = store.operations() else {
            return;
        };
        let pause_for = match operations.backfill(&handler, CHUNK).await {
            Ok(BackfillStep::Done) => {
                if copied > 0 {
                    tracing::info!(%handler, copied, "backfill done: the handler has its history");
                }
                return;
            }
            Ok(BackfillStep::Waiting) => WAIT,
            Ok(BackfillStep::Copied {
                delivered,
                through,
                end,
            }) => {
                copied += delivered;
                tracing::debug!(%handler, delivered, through, end, "backfill: copied a chunk");
                if delivered > 0 {
                    board.wake(subscription);
                }
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, %handler, "backfill step failed; retrying");
                RETRY
            }
        };
        if !pause(&clock, pause_for, &stopping).await {
            return;
        }
    }
}
