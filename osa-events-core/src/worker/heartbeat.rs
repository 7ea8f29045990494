//! Keeping a batch's claims alive while its handlers run.
//!
//! Every third of the claim timeout (`HEARTBEATS_PER_CLAIM_TIMEOUT` in the option limits, which
//! also bound `linger` by it) the claims are extended to a full timeout from the database's
//! `now()`. If extending keeps failing or hangs (database unreachable, or a network that drops
//! every packet), the heartbeat gives up shortly before the last confirmed expiry, so the worker
//! stops the handlers before another worker could legitimately take the deliveries over: every
//! extension is awaited only until that point (DESIGN.md, claim protocol item 9).
//!
//! Deliveries that already left the claim (completed inside a `Tx` handler's transaction, or found
//! taken over) are [`Settled`]: they are not extended any more, and their missing rows are not
//! mistaken for takeovers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::Clock;
use crate::handler::limits::HEARTBEATS_PER_CLAIM_TIMEOUT;
use crate::store::{Fence, Store, SubscriptionId};

/// Why a heartbeat stopped: the batch must be abandoned.
#[derive(Debug)]
pub(crate) enum Lost {
    /// Every unsettled claim of the batch has been taken over by another worker.
    TakenOver,
    /// The claims could not be extended in time.
    Unreachable,
}

/// Which deliveries of a batch no longer hold a claim to keep, by index in the batch. Shared
/// between the handler calls (which mark) and the heartbeat (which reads) of one batch.
#[derive(Debug)]
pub(crate) struct Settled(Vec<AtomicBool>);

impl Settled {
    pub(crate) fn new(len: usize) -> Self {
        Self((0..len).map(|_| AtomicBool::new(false)).collect())
    }

    pub(crate) fn mark(&self, index: usize) {
        self.0[index].store(true, Ordering::Release);
    }

    fn is_settled(&self, index: usize) -> bool {
        self.0[index].load(Ordering::Acquire)
    }
}

/// Runs until the batch's claims are lost; never returns while they are held. `claimed_at` is a
/// local instant taken before the claim was sent (the first claim, for a batch that lingered over
/// several), so the local estimate of the expiry is never later than the database's.
pub(crate) async fn keep(
    store: &dyn Store,
    subscription: SubscriptionId,
    fences: &[Fence],
    settled: &Settled,
    claim_timeout: Duration,
    clock: &dyn Clock,
    claimed_at: tokio::time::Instant,
) -> Lost {
    let interval = claim_timeout / HEARTBEATS_PER_CLAIM_TIMEOUT;
    let margin = claim_timeout / 10;
    let mut taken_over: HashSet<usize> = HashSet::new();
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
        let active: Vec<usize> = (0..fences.len())
            .filter(|&index| !settled.is_settled(index) && !taken_over.contains(&index))
            .collect();
        let sent_at = clock.now();
        if active.is_empty() {
            // Nothing left to keep: the batch is writing its outcomes.
            held_until = sent_at + claim_timeout;
            continue;
        }
        let claims: Vec<Fence> = active.iter().map(|&index| fences[index]).collect();
        // Bounded by the give-up point: an extension that hangs (a network black hole, a dead
        // server that never answers) must not keep the handlers running past the claims' expiry.
        let extended = tokio::select! {
            biased;
            extended = store.extend(subscription, &claims, claim_timeout) => extended,
            () = clock.sleep(give_up_at.saturating_duration_since(sent_at)) => {
                tracing::warn!(
                    claims = claims.len(),
                    "extending the claims got no answer before they would expire; stopping the handlers"
                );
                return Lost::Unreachable;
            }
        };
        match extended {
            Ok(still_held) => {
                failing = false;
                held_until = sent_at + claim_timeout;
                // A delivery may have settled while the extension was in flight: only the
                // unsettled ones whose rows did not answer were taken over.
                let lost: Vec<usize> = active
                    .into_iter()
                    .filter(|&index| {
                        !still_held.contains(&fences[index].position) && !settled.is_settled(index)
                    })
                    .collect();
                if !lost.is_empty() {
                    tracing::warn!(
                        lost = lost.len(),
                        "claims were taken over by another worker; their completions will be refused"
                    );
                    taken_over.extend(lost);
                    if (0..fences.len())
                        .all(|index| settled.is_settled(index) || taken_over.contains(&index))
                    {
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
