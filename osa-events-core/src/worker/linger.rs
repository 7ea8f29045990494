//! Lingering: after a short claim, waiting a little for a fuller batch (the `linger` option).
//!
//! Under a trickle of publishes an idle loop is woken by each one and claims at once, so a batch
//! handler is called with a few events at a time. With `linger`, a claim that returns fewer than
//! `batch` deliveries (but some) is held: the loop claims the rest of the batch whenever a publish
//! wakes it, and once more when `linger` has passed since the first claim; then it calls the
//! handler, at once when the batch is full.
//!
//! What it holds is claimed, so the claims' clock runs while it waits: `linger` is at most a third
//! of the claim timeout (checked by the macro and by `HandlerSpec::validate`, with the heartbeat's
//! own divisor), and the batch's heartbeat reckons the claims' expiry from the first claim. The
//! first extension then comes at most two thirds of the timeout after that claim, before the
//! heartbeat would give the claims up.
//!
//! Shutdown stops the wait at once, with no further claim, and the loop hands what it holds to the
//! handler, as it does with any batch claimed before shutdown began: running handlers get the grace
//! period, and what is unfinished when it ends is released.

use std::time::Duration;

use tokio::time::Instant;

use super::Worker;
use crate::store::Delivery;

/// How a wait for more deliveries ended.
enum Wait {
    /// A publish may have brought more: claim, and wait again if the batch is not full.
    Woken,
    /// The linger is over: claim one last time.
    Over,
    /// Shutdown began: claim nothing more.
    Stopping,
}

impl Worker {
    /// Whether a claim that returned `claimed` deliveries is held for more: some, but fewer than
    /// `batch`, by a handler with a `linger`.
    pub(super) fn lingers_after(&self, claimed: usize) -> bool {
        !self.spec.linger().is_zero() && claimed > 0 && claimed < self.spec.batch() as usize
    }

    /// Tops `held` up towards `batch`: claims the rest whenever the wake-up board signals a
    /// publish and once more when `linger` has passed since `first_claimed_at` (the instant
    /// before the claim that returned `held`), and returns when the batch is full, the linger is
    /// over, shutdown begins or a claim fails (the handler then gets what is held).
    pub(super) async fn linger(&mut self, held: &mut Vec<Delivery>, first_claimed_at: Instant) {
        let batch = self.spec.batch() as usize;
        let until = first_claimed_at + self.spec.linger();
        let mut claims: u32 = 1;
        while held.len() < batch && !self.stopping.is_cancelled() {
            let now = self.clock.now();
            if now >= until {
                // The last claim returned after the linger was over: it was the last one.
                break;
            }
            let last = match self.wait_for_more(until - now).await {
                Wait::Woken => false,
                Wait::Over => true,
                Wait::Stopping => break,
            };
            let wanted = u32::try_from(batch - held.len()).expect("fewer than `batch`, a u32");
            claims += 1;
            match self.claim(&[], wanted).await {
                Ok(more) => held.extend(more),
                Err(error) => {
                    tracing::warn!(
                        handler = self.spec.name(),
                        %error,
                        held = held.len(),
                        "claim failed while lingering for a fuller batch; calling the handler with what it holds"
                    );
                    break;
                }
            }
            if last {
                break;
            }
        }
        tracing::debug!(
            handler = self.spec.name(),
            held = held.len(),
            batch,
            claims,
            lingered = ?self.clock.now().saturating_duration_since(first_claimed_at),
            "lingered for a fuller batch"
        );
    }

    /// Waits up to `remaining` for a wake-up, or for shutdown. Shutdown wins a tie: a publish
    /// announced as shutdown begins is not claimed.
    async fn wait_for_more(&mut self, remaining: Duration) -> Wait {
        let mut over = self.clock.sleep(remaining);
        tokio::select! {
            biased;
            () = self.stopping.cancelled() => Wait::Stopping,
            () = &mut over => Wait::Over,
            changed = self.wake.changed() => match changed {
                Ok(()) => Wait::Woken,
                // The board is gone (the runtime is shutting down): no more hints, so wait the
                // linger out.
                Err(_) => tokio::select! {
                    () = over => Wait::Over,
                    () = self.stopping.cancelled() => Wait::Stopping,
                },
            },
        }
    }
}
