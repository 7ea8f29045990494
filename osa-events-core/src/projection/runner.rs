//! The projection loop: become leader, then apply batch after batch with the checkpoint in the
//! same transaction, until shutdown or lost leadership.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ProjectionSpec;
use super::store::{Leadership, ProjectionStore};
use crate::Clock;
use crate::envelope::cause::{self, Cause};
use crate::handler::Invoker;
use crate::handler::error::HandlerError;
use crate::handler::extract::{Call, TxSlot};
use crate::handler::invoke::{BatchFuture, InvokerKind, panic_message};
use crate::health::ProjectionWatch;
use crate::spans::{self, Recorded};
use crate::store::Delivery;
use crate::upkeep::ActivityCounter;
use crate::worker::call::out_of_range;

/// How long a follower waits for the leadership in one attempt; a store that can (PostgreSQL's lock
/// queue) hands it over the moment the leader goes.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);
/// The least time between two attempts, for stores that return before the wait is over.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(crate) struct ProjectionRunner {
    pub(crate) spec: ProjectionSpec,
    /// The name in the store: the spec's, qualified by the runtime's namespace.
    pub(crate) name: &'static str,
    pub(crate) invoker: Arc<Invoker>,
    pub(crate) store: Arc<dyn ProjectionStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) process: String,
    pub(crate) stopping: CancellationToken,
    /// Where the loop records leadership, batches and store errors, for the runtime's health.
    pub(crate) health: ProjectionWatch,
    /// The projection's counts for the activity history: events applied, batches failed.
    pub(crate) activity: Arc<ActivityCounter>,
}

/// Why a batch was not applied.
pub(crate) enum BatchError {
    /// The handler failed, or an event did not decode: retried with backoff, checkpoint unchanged.
    Failed(String),
    /// The store failed or the leadership is lost: stop leading, follow, try again.
    Store(crate::Error),
}

impl From<crate::Error> for BatchError {
    fn from(error: crate::Error) -> Self {
        // Any store error inside a batch may mean a broken session: give the leadership up.
        BatchError::Store(error)
    }
}

impl ProjectionRunner {
    pub(crate) async fn run(self) {
        while !self.stopping.is_cancelled() {
            let attempt_started = self.clock.now();
            let attempt = tokio::select! {
                attempt = self.store.try_lead(self.name, &self.process, FOLLOW_WAIT) => attempt,
                () = self.stopping.cancelled() => break,
            };
            match attempt {
                Ok(Some(leadership)) => {
                    self.health.leading(true);
                    tracing::info!(projection = self.spec.name(), "leading the projection");
                    let leadership = self.lead(leadership).await;
                    leadership.resign().await;
                    self.health.resigned();
                    if !self.stopping.is_cancelled() {
                        tracing::warn!(
                            projection = self.spec.name(),
                            "lost the projection's leadership; following"
                        );
                    }
                }
                Ok(None) => self.health.leading(false),
                Err(error) => {
                    self.health.store_failed(&error);
                    tracing::warn!(projection = self.spec.name(), %error, "cannot try for leadership");
                }
            }
            let spent = self.clock.now().saturating_duration_since(attempt_started);
            self.pause(FOLLOW_INTERVAL.saturating_sub(spent)).await;
        }
    }

    /// Applies batches until shutdown or a store error; hands the leadership back to resign.
    async fn lead(&self, mut leadership: Box<dyn Leadership>) -> Box<dyn Leadership> {
        let mut failures: u32 = 0;
        while !self.stopping.is_cancelled() {
            let applied = apply_next_batch(
                &self.spec,
                &self.invoker,
                &mut *leadership,
                failures + 1,
                &*self.clock,
            )
            .await;
            match applied {
                Ok(0) => {
                    failures = 0;
                    self.health.applied();
                    self.pause(self.spec.poll()).await;
                }
                Ok(applied) => {
                    failures = 0;
                    self.health.applied();
                    self.activity.add(applied as u64, 0, 0);
                }
                Err(BatchError::Failed(error)) => {
                    failures = failures.saturating_add(1);
                    self.health.batch_failed(&error);
                    self.activity.add(0, 1, 0);
                    let delay = retry_delay(&self.spec, failures);
                    tracing::warn!(projection = self.spec.name(), %error, failures, retry_in = ?delay, "projection batch failed; checkpoint not advanced");
                    let stored = crate::store::storable_text(&error);
                    if let Err(error) = leadership.record_failure(&stored).await {
                        tracing::warn!(projection = self.spec.name(), %error, "cannot record the failure");
                    }
                    self.pause(delay).await;
                }
                Err(BatchError::Store(error)) => {
                    self.health.store_failed(&error);
                    tracing::warn!(projection = self.spec.name(), %error, "projection store failed");
                    break;
                }
            }
        }
        leadership
    }

    async fn pause(&self, duration: Duration) {
        tokio::select! {
            () = self.clock.sleep(duration) => {}
            () = self.stopping.cancelled() => {}
        }
    }
}

/// Applies the next batch of projection `spec`, with its checkpoint, in one transaction where the
/// store has them; returns how many events it applied. `attempt` is the batch's attempt number
/// (1 unless the previous batches failed).
pub(crate) async fn apply_next_batch(
    spec: &ProjectionSpec,
    invoker: &Invoker,
    leadership: &mut dyn Leadership,
    attempt: u32,
    clock: &dyn Clock,
) -> Result<usize, BatchError> {
    let mut batch = leadership
        .next_batch(spec.event_types(), spec.batch())
        .await?;
    if batch.events.is_empty() {
        // Read past events of other types only: move the cursor, so the next read starts there.
        if batch.advance.to != batch.advance.from {
            leadership.commit(batch.advance, batch.transaction).await?;
        }
        return Ok(0);
    }
    for event in &mut batch.events {
        event.attempt = attempt;
    }
    let InvokerKind::Batch(call) = &invoker.kind else {
        unreachable!("#[projection] always builds a batch invoker");
    };
    // The handler writes through the batch's transaction when it takes a `Tx`; it comes back
    // through the slot for the checkpoint and the commit.
    let (handler_tx, slot) = match batch.transaction.take() {
        Some(tx) if invoker.transactional => {
            let (handle, slot) = TxSlot::new(tx);
            (Some(handle), Some(slot))
        }
        kept => {
            batch.transaction = kept;
            (None, None)
        }
    };
    let mut parts = Call::new(&batch.events, handler_tx);
    let outcome = call(&mut parts);
    drop(parts);
    if let Some((index, error)) = outcome.rejected.into_iter().next() {
        return Err(BatchError::Failed(format!(
            "event {} (position {}) cannot be applied: {error}",
            batch.events[index].event_id, batch.events[index].fence.position
        )));
    }
    let span = spans::process_batch(spec.name(), None, &batch.events.iter().collect::<Vec<_>>());
    let outcome_span = span.clone();
    let applied = apply_in_span(spec, outcome.future, &batch.events, clock)
        .instrument(span)
        .await;
    let recorded = match &applied {
        Ok(()) => Recorded::Completed,
        Err(_) => Recorded::Retried,
    };
    spans::record_outcome(&outcome_span, recorded, None);
    applied?;
    if let Some(slot) = slot {
        batch.transaction = Some(slot.take_back().ok_or_else(|| {
            BatchError::Failed(
                "the projection kept its `Tx` after returning, so nothing was committed".into(),
            )
        })?);
    }
    leadership.commit(batch.advance, batch.transaction).await?;
    Ok(batch.events.len())
}

/// Runs the projection's call over `events` (if any event was accepted), with their cause for
/// what it publishes, guarded against panics and its timeout.
async fn apply_in_span(
    spec: &ProjectionSpec,
    future: Option<BatchFuture>,
    events: &[Delivery],
    clock: &dyn Clock,
) -> Result<(), BatchError> {
    if let Some(future) = future {
        let future = cause::scope(Cause::of_batch(events.iter()), future);
        let caught = AssertUnwindSafe(future).catch_unwind();
        let finished = match spec.timeout() {
            None => caught.await,
            Some(limit) => tokio::select! {
                // A call that finished by its deadline counts as finished (repeatable under a
                // fake clock). A late one is dropped with its `Tx`: the batch rolls back.
                biased;
                finished = caught => finished,
                () = clock.sleep(limit) => {
                    return Err(BatchError::Failed(format!(
                        "the projection timed out after {}; the batch was rolled back",
                        crate::worker::call::display_duration(limit)
                    )));
                }
            },
        };
        let result = finished.unwrap_or_else(|panic| {
            Err(HandlerError::retry(format!(
                "the projection panicked: {}",
                panic_message(&*panic)
            )))
        });
        match result {
            Ok(reported) if reported.failed_count() == 0 => {}
            // A projection cannot skip an event: one failed event fails the whole batch.
            Ok(reported) => {
                let failures = reported.into_failures();
                if let Some(error) = out_of_range(&failures, events.len()) {
                    return Err(BatchError::Failed(error.to_string()));
                }
                let (index, error) = &failures[0];
                let event = &events[*index];
                return Err(BatchError::Failed(format!(
                    "event {} (position {}) failed: {error}",
                    event.event_id, event.fence.position
                )));
            }
            Err(error) => return Err(BatchError::Failed(error.to_string())),
        }
    }
    Ok(())
}

fn retry_delay(spec: &ProjectionSpec, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(31);
    spec.backoff()
        .saturating_mul(1 << exponent)
        .min(spec.max_backoff())
}
