//! The claim loop: claim a batch, run the handler, write the outcomes, repeat; sleep when idle.
//! A batch handler with `linger` holds a short claim for more before it is called ([`linger`]).
//!
//! One [`Worker`] is one claim loop of one handler; a handler with `concurrency = n` has `n` of
//! them per process. Loops coordinate only through the store (row locks), so any number of them
//! may run on any number of machines.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Clock;
use crate::handler::{HandlerSpec, Invoker};
use crate::health::ClaimLoopWatch;
use crate::metrics::HandlerMetrics;
use crate::store::{ClaimRequest, Fence, Store, SubscriptionId};

mod backoff;
mod batch;
pub(crate) mod call;
pub(crate) mod fatal;
mod heartbeat;
mod linger;
#[cfg(feature = "test-util")]
pub(crate) mod step;
pub(crate) mod supervise;
pub(crate) mod wake;

/// One claim loop of one handler.
#[derive(Clone)]
pub(crate) struct Worker {
    pub(crate) spec: HandlerSpec,
    pub(crate) subscription: SubscriptionId,
    pub(crate) invoker: Arc<Invoker>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Recorded in `claimed_by`: host, process and loop.
    pub(crate) name: String,
    pub(crate) wake: watch::Receiver<u64>,
    /// Graceful shutdown: claim nothing more.
    pub(crate) stopping: CancellationToken,
    /// End of the grace period: stop handlers and release their claims.
    pub(crate) aborting: CancellationToken,
    /// Where a fatal handler error goes: it keeps the error for the runtime and cancels
    /// `stopping`.
    pub(crate) fatal: fatal::FatalStop,
    /// Where the loop records its steps and claims, for the runtime's health.
    pub(crate) health: ClaimLoopWatch,
    /// The handler's metric handles, resolved when the runtime started running.
    pub(crate) metrics: HandlerMetrics,
}

impl Worker {
    pub(crate) async fn run(self) {
        self.run_with(backoff::jitter_from_entropy()).await;
    }

    /// The claim loop with a given source of retry jitter: seeded by the
    /// [`Stepper`](step::Stepper), so that a simulation's retry delays repeat with its seed.
    async fn run_with(mut self, mut jitter: backoff::Jitter) {
        let mut store_errors: u32 = 0;
        // Completions of the last batch, written together with the next claim: after a full
        // batch more work is likely, so one statement (one commit) does both.
        let mut completed: Vec<Fence> = Vec::new();
        while !self.stopping.is_cancelled() {
            let claimed_at = self.clock.now();
            self.health.claiming();
            match self.claim(&completed, self.spec.batch()).await {
                Ok(mut deliveries) => {
                    store_errors = 0;
                    completed.clear();
                    if !deliveries.is_empty() {
                        self.health.processing();
                    }
                    if self.lingers_after(deliveries.len()) {
                        self.linger(&mut deliveries, claimed_at).await;
                    }
                    let full = deliveries.len() >= self.spec.batch() as usize;
                    if !deliveries.is_empty() {
                        completed = self
                            .process(deliveries, claimed_at, &mut jitter)
                            .await
                            .completed;
                    }
                    if !full || self.stopping.is_cancelled() {
                        self.write_completions(&completed).await;
                        completed.clear();
                        self.health.waiting(self.spec.poll());
                        self.idle().await;
                    }
                }
                Err(error) => {
                    // Completions not written yet are retried with the next claim; if their
                    // claims expire meanwhile, the fenced write refuses them (handled again).
                    store_errors = store_errors.saturating_add(1);
                    let pause = error_pause(store_errors, self.spec.poll());
                    tracing::warn!(
                        handler = self.spec.name(),
                        %error,
                        retry_in = ?pause,
                        "claim failed"
                    );
                    self.health.waiting(pause);
                    self.pause(pause).await;
                }
            }
        }
        self.write_completions(&completed).await;
    }

    /// Claims up to `limit` deliveries (a batch, or what a lingering batch still lacks),
    /// completing `completed` in the same round trip when there are any; records the round
    /// trip's success or failure for the runtime's health.
    async fn claim(
        &self,
        completed: &[Fence],
        limit: u32,
    ) -> crate::Result<Vec<crate::store::Delivery>> {
        let claimed = self.claim_round_trip(completed, limit).await;
        match &claimed {
            Ok(_) => self.health.claim_succeeded(),
            Err(error) => self.health.claim_failed(error),
        }
        claimed
    }

    async fn claim_round_trip(
        &self,
        completed: &[Fence],
        limit: u32,
    ) -> crate::Result<Vec<crate::store::Delivery>> {
        let request = ClaimRequest {
            subscription: self.subscription,
            limit,
            claim_timeout: self.spec.claim_timeout(),
            worker: &self.name,
        };
        if completed.is_empty() {
            return self.store.claim(request).await;
        }
        let (written, claimed) = self.store.complete_and_claim(completed, request).await?;
        self.check_completed(completed.len(), written);
        Ok(claimed)
    }

    /// Waits for a wake-up, the poll interval, or shutdown, whichever comes first.
    async fn idle(&mut self) {
        let poll = self.clock.sleep(self.spec.poll());
        tokio::select! {
            () = poll => {}
            changed = self.wake.changed() => {
                if changed.is_err() {
                    // The board is gone (runtime shutting down): fall back to the poll interval.
                    self.pause(self.spec.poll()).await;
                }
            }
            () = self.stopping.cancelled() => {}
        }
    }

    async fn pause(&self, duration: Duration) {
        tokio::select! {
            () = self.clock.sleep(duration) => {}
            () = self.stopping.cancelled() => {}
        }
    }
}

/// After consecutive store errors, wait longer each time (100 ms doubling), but never longer than
/// the larger of the poll interval and 5 s, so a recovered database is used again soon.
fn error_pause(consecutive_errors: u32, poll: Duration) -> Duration {
    let cap = poll.max(Duration::from_secs(5));
    let exponent = consecutive_errors.saturating_sub(1).min(16);
    Duration::from_millis(100)
        .saturating_mul(1 << exponent)
        .min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pauses_grow_and_are_capped() {
        let poll = Duration::from_millis(500);
        assert_eq!(error_pause(1, poll), Duration::from_millis(100));
        assert_eq!(error_pause(2, poll), Duration::from_millis(200));
        assert_eq!(error_pause(30, poll), Duration::from_secs(5));
        assert_eq!(
            error_pause(30, Duration::from_secs(20)),
            Duration::from_secs(20)
        );
    }
}
