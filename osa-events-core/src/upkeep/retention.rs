//! Periodic retention ([`RuntimeBuilder::retention`](crate::RuntimeBuilder::retention)): a
//! prune pass to its end, then a pause. Every node runs it; the store's retention lock lets one
//! pass work at a time, and a node that finds it taken skips its turn.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::pause;
use crate::Clock;
use crate::operations::Retention;
use crate::store::Store;

/// The pause after a failed step.
const RETRY: Duration = Duration::from_secs(5);

/// Runs a pass now and then every `retention.every`, until shutdown.
pub(crate) async fn keep_retention(
    store: Arc<dyn Store>,
    retention: Retention,
    clock: Arc<dyn Clock>,
    stopping: CancellationToken,
) {
    loop {
        pass(&store, &retention, &clock, &stopping).await;
        if !pause(&clock, retention.every, &stopping).await {
            return;
        }
    }
}

async fn pass(
    store: &Arc<dyn Store>,
    retention: &Retention,
    clock: &Arc<dyn Clock>,
    stopping: &CancellationToken,
) {
    let Some(operations) = store.operations() else {
        return;
    };
    let (mut after, mut events, mut dead) = (0, 0u64, 0u64);
    while !stopping.is_cancelled() {
        match operations.prune(&retention.prune, after).await {
            Ok(step) if step.busy => {
                tracing::debug!("retention: another node is pruning; skipping this pass");
                return;
            }
            Ok(step) => {
                events += step.events;
                dead += step.dead;
                after = step.through;
                if step.done {
                    if events > 0 || dead > 0 {
                        tracing::info!(events, dead, "retention pass done");
                    }
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "retention step failed; retrying");
                if !pause(clock, RETRY, stopping).await {
                    return;
                }
            }
        }
    }
}
