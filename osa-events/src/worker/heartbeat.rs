//! Keeping a batch's claims alive while its handlers run.
//!
//! Every third of the claim timeout the claims are extended to a full timeout from the database's
//! `now()`. If extending keeps failing (database unreachable), the heartbeat gives up shortly
//! before the last confirmed expiry, so the worker stops the handlers before another worker could
//! legitimately take the deliveries over.

use std::time::Duration;

use crate::Clock;
use crate::store::{Fence, Store, SubscriptionId};

/// Why a heartbeat stopped: the batch must be abandoned.
#[derive(Debug)]
pub(crate) enum Lost {
    /// Every claim of the batch has been taken over by another worker.
    TakenOver,
    /// The claims could not be extended in time.
    Unreachable,
}

/// Runs until the batch's claims are lost; never returns while they are held. `claimed_at` is a
/// local instant taken before the claim was sent, so the local estimate of the expiry is never
/// later than the database's.
pub(crate) async fn keep(
    store: &dyn Store,
    subscription: SubscriptionId,
    fences: &[Fence],
    claim_timeout: Duration,
    clock: &dyn Clock,
    claimed_at: tokio::time::Instant,
) -> Lost {
    let interval = claim_timeout / 3;
    let margin = claim_timeout / 10;
    let mut held: Vec<Fence> = fences.to_vec();
    let mut held_until = claimed_at + claim_timeout;
    let mut failing = false;
    loop {
        let give_up_at = held_until - margin;
        let now = clock.now();
        if now >= give_up_at {
            return Lost::Unreachable;
        }
        let pause = if failing { interval / 4 } else { interval };
        clock.sleep(pause.min(give_up_at - now)).await;
        if clock.now() >= give_up_at {
            continue;
        }
        let sent_at = clock.now();
        match store.extend(subscription, &held, claim_timeout).await {
            Ok(still_held) => {
                failing = false;
                held_until = sent_at + claim_timeout;
                if still_held.len() < held.len() {
                    tracing::warn!(
                        lost = held.len() - still_held.len(),
                        "claims were taken over by another worker; their completions will be refused"
                    );
                    held.retain(|fence| still_held.contains(&fence.position));
                    if held.is_empty() {
                        return Lost::TakenOver;
                    }
                }
            }
            Err(error) => {
                failing = true;
                tracing::warn!(%error, "cannot extend claims; retrying until they would expire");
            }
        }
    }
}
