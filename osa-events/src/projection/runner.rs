//! The projection loop: become leader, then apply batch after batch with the checkpoint in the
//! same transaction, until shutdown or lost leadership.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use super::ProjectionSpec;
use super::leader::Leader;
use super::read::{self, Checkpoint};
use crate::handler::error::HandlerError;
use crate::handler::extract::{Call, TxSlot};
use crate::handler::invoke::InvokerKind;
use crate::{Clock, Invoker, PgStore};

/// How often a follower tries to take leadership over.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

const RECORD_FAILURE_SQL: &str =
    "update osa_events.checkpoints set last_error = $2, failed_at = now() where name = $1";

pub(crate) struct ProjectionRunner {
    pub(crate) spec: ProjectionSpec,
    pub(crate) invoker: Arc<Invoker>,
    pub(crate) store: PgStore,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) process: String,
    pub(crate) stopping: CancellationToken,
}

/// Why a batch was not applied.
enum BatchError {
    /// The handler failed, or an event did not decode: retried with backoff, checkpoint unchanged.
    Failed(String),
    /// The session lost the lock (or the connection): stop leading.
    LostLeadership(String),
}

impl From<sqlx::Error> for BatchError {
    fn from(error: sqlx::Error) -> Self {
        BatchError::LostLeadership(error.to_string())
    }
}

impl From<crate::Error> for BatchError {
    fn from(error: crate::Error) -> Self {
        // Any database error inside a batch may mean a broken session: re-check leadership.
        BatchError::LostLeadership(error.to_string())
    }
}

impl ProjectionRunner {
    pub(crate) async fn run(self) {
        let options = self.store.pool().connect_options();
        while !self.stopping.is_cancelled() {
            match Leader::acquire(&options, self.spec.name(), &self.process).await {
                Ok(Some(leader)) => {
                    tracing::info!(projection = self.spec.name(), "leading the projection");
                    self.lead(&leader).await;
                    leader.resign().await;
                    if !self.stopping.is_cancelled() {
                        tracing::warn!(
                            projection = self.spec.name(),
                            "lost the projection's leadership; following"
                        );
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(projection = self.spec.name(), %error, "cannot try for leadership");
                }
            }
            self.pause(FOLLOW_INTERVAL).await;
        }
    }

    async fn lead(&self, leader: &Leader) {
        let mut failures: u32 = 0;
        if let Err(error) = self.ensure_checkpoint(leader).await {
            tracing::warn!(projection = self.spec.name(), %error, "cannot create the checkpoint");
            return;
        }
        while !self.stopping.is_cancelled() {
            match self.apply_next_batch(leader, failures + 1).await {
                Ok(0) => {
                    failures = 0;
                    self.pause(self.spec.poll_interval()).await;
                }
                Ok(_) => failures = 0,
                Err(BatchError::Failed(error)) => {
                    failures = failures.saturating_add(1);
                    let delay = retry_delay(&self.spec, failures);
                    tracing::warn!(projection = self.spec.name(), %error, failures, retry_in = ?delay, "projection batch failed; checkpoint not advanced");
                    if let Err(error) = sqlx::query(RECORD_FAILURE_SQL)
                        .bind(self.spec.name())
                        .bind(&error)
                        .execute(&leader.pool)
                        .await
                    {
                        tracing::warn!(projection = self.spec.name(), %error, "cannot record the failure");
                    }
                    self.pause(delay).await;
                }
                Err(BatchError::LostLeadership(error)) => {
                    tracing::warn!(projection = self.spec.name(), %error, "projection session lost");
                    return;
                }
            }
        }
    }

    async fn ensure_checkpoint(&self, leader: &Leader) -> crate::Result<()> {
        let mut conn = leader.pool.acquire().await?;
        read::ensure_checkpoint(&mut conn, self.spec.name()).await
    }

    /// Applies the next batch in one transaction; returns how many events it applied.
    async fn apply_next_batch(&self, leader: &Leader, attempt: u32) -> Result<usize, BatchError> {
        let mut tx = leader.pool.begin().await?;
        if !leader.holds_lock(&mut tx).await? {
            return Err(BatchError::LostLeadership(
                "the session no longer holds the projection's lock".into(),
            ));
        }
        let after: Checkpoint = read::checkpoint(&mut tx, self.spec.name()).await?;
        let (events, last) = read::events_after(
            &mut tx,
            self.spec.event_types(),
            after,
            self.spec.batch_size(),
            attempt,
        )
        .await?;
        if events.is_empty() {
            return Ok(0);
        }
        let InvokerKind::Batch(call) = &self.invoker.kind else {
            unreachable!("#[projection] always builds a batch invoker");
        };
        // The handler writes through the batch's transaction when it takes a `Tx`; it comes back
        // through the slot for the checkpoint and the commit.
        let (handler_tx, kept) = if self.invoker.transactional {
            let (handle, slot) = TxSlot::new(tx);
            (Some(handle), Err(slot))
        } else {
            (None, Ok(tx))
        };
        let mut parts = Call::new(&events, handler_tx);
        let batch = call(&mut parts);
        drop(parts);
        if let Some((index, error)) = batch.rejected.into_iter().next() {
            return Err(BatchError::Failed(format!(
                "event {} (position {}) cannot be applied: {error}",
                events[index].event_id, events[index].fence.position
            )));
        }
        if let Some(future) = batch.future {
            let outcome = AssertUnwindSafe(future)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(HandlerError::retry("the projection panicked")));
            match outcome {
                Ok(reported) if reported.failed_count() == 0 => {}
                Ok(reported) => {
                    let (index, error) = reported.into_failures().remove(0);
                    return Err(BatchError::Failed(format!(
                        "event at batch index {index} failed: {error}"
                    )));
                }
                Err(error) => return Err(BatchError::Failed(error.to_string())),
            }
        }
        let mut tx = match kept {
            Ok(tx) => tx,
            Err(slot) => slot.take_back().ok_or_else(|| {
                BatchError::Failed(
                    "the projection kept its `Tx` after returning, so nothing was committed".into(),
                )
            })?,
        };
        read::save(&mut tx, self.spec.name(), last).await?;
        tx.commit().await?;
        Ok(events.len())
    }

    async fn pause(&self, duration: Duration) {
        tokio::select! {
            () = self.clock.sleep(duration) => {}
            () = self.stopping.cancelled() => {}
        }
    }
}

fn retry_delay(spec: &ProjectionSpec, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(31);
    spec.backoff_base()
        .saturating_mul(1 << exponent)
        .min(spec.backoff_cap())
}
