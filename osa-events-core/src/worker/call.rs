//! Calling a handler for a claimed batch: per event or per batch, guarded against panics and
//! timeouts, and for transactional handlers completed inside the handler's own transaction.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tracing::{Instrument, Span};

use super::Worker;
use super::heartbeat::Settled;
use crate::envelope::cause::{self, Cause};
use crate::handler::error::{HandlerError, Origin};
use crate::handler::extract::{Call, CallTx, TxSlot};
use crate::handler::invoke::{BatchFn, EachFn, InvokerKind, panic_message};
use crate::spans;
use crate::store::{Delivery, Fence};

/// What became of one delivery.
pub(super) enum Outcome {
    /// The handler succeeded; the completion is still to be written.
    Succeeded,
    /// The handler succeeded and its transaction committed the completion.
    CompletedInTx,
    /// The handler failed (or its transaction could not be committed).
    Failed(HandlerError),
    /// The claim was taken over before the handler's transaction could complete it; everything
    /// was rolled back and there is nothing to write.
    Lost,
}

impl Outcome {
    /// Whether the delivery no longer holds a claim to keep alive: completed in the handler's
    /// transaction, or taken over.
    pub(super) fn left_the_claim(&self) -> bool {
        matches!(self, Outcome::CompletedInTx | Outcome::Lost)
    }

    /// Whether the handler failed with [`HandlerError::fatal`].
    pub(super) fn is_fatal(&self) -> bool {
        matches!(self, Outcome::Failed(error) if error.is_fatal())
    }
}

/// The process spans of one batch's handler calls, kept open until the outcomes are known so
/// that each can record its own.
#[derive(Default)]
pub(super) struct CallSpans {
    /// A per-event handler's span of each delivery (by index), once its call began; empty
    /// while the spans are disabled.
    pub(super) each: Vec<Option<Span>>,
    /// A batch handler's one span.
    pub(super) batch: Option<Span>,
}

impl Worker {
    /// Calls the handler for the batch, recording each outcome as soon as it is known, so a
    /// shutdown mid-batch releases only what did not finish.
    pub(super) async fn call_handler(
        &self,
        deliveries: &[Delivery],
        outcomes: &mut [Option<Outcome>],
        spans: &mut CallSpans,
        settled: &Settled,
    ) {
        match &self.invoker.kind {
            InvokerKind::Each(call) => {
                for (index, delivery) in deliveries.iter().enumerate() {
                    let span = spans::process_event(self.spec.name(), delivery);
                    if !span.is_disabled() {
                        // Kept to record the outcome once it is known (a disabled span records
                        // nothing: keep none, as at INFO).
                        spans.each.resize_with(deliveries.len(), || None);
                        spans.each[index] = Some(span.clone());
                    }
                    let outcome = cause::scope(
                        Some(Cause::of_delivery(delivery)),
                        self.call_each(call, delivery),
                    )
                    .instrument(span)
                    .await;
                    if outcome.left_the_claim() {
                        settled.mark(index);
                    }
                    let fatal = outcome.is_fatal();
                    outcomes[index] = Some(outcome);
                    if fatal {
                        // The runtime stops: the rest of the claim is given back uncalled.
                        break;
                    }
                }
            }
            InvokerKind::Batch(call) => {
                self.call_batch(call, deliveries, outcomes, &mut spans.batch)
                    .await;
                for (index, outcome) in outcomes.iter().enumerate() {
                    if outcome.as_ref().is_some_and(Outcome::left_the_claim) {
                        settled.mark(index);
                    }
                }
            }
        }
    }

    async fn call_each(&self, call: &EachFn, delivery: &Delivery) -> Outcome {
        let (tx, slot) = self.open_tx().await;
        let mut parts = Call::new(std::slice::from_ref(delivery), tx);
        let future = match call(&mut parts) {
            Ok(future) => future,
            Err(error) => return Outcome::Failed(error),
        };
        drop(parts);
        self.metrics.call_starts([delivery]);
        match (self.metrics.time_call(self.guard(future)).await, slot) {
            (Err(error), _) => Outcome::Failed(error),
            (Ok(()), None) => Outcome::Succeeded,
            (Ok(()), Some(slot)) => match self.commit(slot, &[delivery.fence]).await {
                Ok(true) => Outcome::CompletedInTx,
                Ok(false) => Outcome::Lost,
                Err(error) => Outcome::Failed(error),
            },
        }
    }

    async fn call_batch(
        &self,
        call: &BatchFn,
        deliveries: &[Delivery],
        outcomes: &mut [Option<Outcome>],
        batch_span: &mut Option<Span>,
    ) {
        let (tx, slot) = self.open_tx().await;
        let mut parts = Call::new(deliveries, tx);
        let call = call(&mut parts);
        drop(parts);
        for (index, error) in call.rejected {
            outcomes[index] = Some(Outcome::Failed(error));
        }
        let Some(future) = call.future else { return };
        let accepted: Vec<&Delivery> = call.accepted.iter().map(|&i| &deliveries[i]).collect();
        self.metrics.call_starts(accepted.iter().copied());
        let span = spans::process_batch(self.spec.name(), Some(self.spec.event_type()), &accepted);
        *batch_span = Some(span.clone());
        let cause = Cause::of_batch(accepted.into_iter());
        let timed = self.metrics.time_call(self.guard(future));
        let reported = match cause::scope(cause, timed).instrument(span).await {
            Ok(reported) => reported,
            Err(error) => {
                spread(error, &call.accepted, outcomes);
                return;
            }
        };
        let mut failures = reported.into_failures();
        // Checked first: a fatal verdict stops the runtime even if others name no event.
        if let Some(fatal) = failures.iter().position(|(_, error)| error.is_fatal()) {
            // One fatal event stops the runtime: none of the call's verdicts is kept, every event
            // of the call is given back, and a `Tx` batch's transaction (dropped with `slot`)
            // rolls back.
            let (_, fatal) = failures.swap_remove(fatal);
            spread(fatal, &call.accepted, outcomes);
            return;
        }
        if let Some(error) = out_of_range(&failures, call.accepted.len()) {
            // The handler's bookkeeping is wrong, so none of its verdicts can be trusted: the
            // whole batch fails, and a `Tx` batch's transaction (dropped with `slot`) rolls back.
            spread(error, &call.accepted, outcomes);
            return;
        }
        for (batch_index, error) in failures {
            outcomes[call.accepted[batch_index]] = Some(Outcome::Failed(error));
        }
        let succeeded: Vec<usize> = call
            .accepted
            .into_iter()
            .filter(|&index| outcomes[index].is_none())
            .collect();
        let Some(slot) = slot else {
            for index in succeeded {
                outcomes[index] = Some(Outcome::Succeeded);
            }
            return;
        };
        let fences: Vec<Fence> = succeeded
            .iter()
            .map(|&index| deliveries[index].fence)
            .collect();
        let committed = self.commit(slot, &fences).await;
        for index in succeeded {
            outcomes[index] = Some(match &committed {
                Ok(true) => Outcome::CompletedInTx,
                // Part of the batch's claims were lost: all was rolled back. The failure write is
                // fenced, so it reaches only the deliveries this worker still holds.
                Ok(false) => Outcome::Failed(HandlerError::retry(
                    "claims of this batch were taken over before it committed; the batch's transaction was rolled back",
                ).with_origin(Origin::Transaction)),
                Err(error) => Outcome::Failed(copy(error)),
            });
        }
    }

    /// Runs one handler call, turning a panic or a timeout into a retryable failure.
    fn guard<T: Send + 'static>(
        &self,
        future: BoxFuture<'static, Result<T, HandlerError>>,
    ) -> impl Future<Output = Result<T, HandlerError>> + '_ {
        let caught = AssertUnwindSafe(future).catch_unwind();
        async move {
            let outcome = match self.spec.timeout() {
                None => caught.await,
                Some(limit) => {
                    tokio::select! {
                        // A call that finished by its deadline counts as finished, rather than
                        // a coin toss deciding (so a fake clock gives the same result every run).
                        biased;
                        outcome = caught => outcome,
                        () = self.clock.sleep(limit) => {
                            return Err(HandlerError::retry(format!("the handler timed out after {}", display_duration(limit))).with_origin(Origin::Timeout));
                        }
                    }
                }
            };
            outcome.unwrap_or_else(|panic| {
                Err(HandlerError::retry(format!(
                    "the handler panicked: {}",
                    panic_message(&*panic)
                ))
                .with_origin(Origin::Panic))
            })
        }
    }

    /// A transaction for a handler that takes a `Tx`, with the slot it returns to.
    ///
    /// Without a connection the handler cannot run, and that is no fault of the event: a starved
    /// pool or a database that is down must not use up the delivery's retries. So this waits for
    /// one, trying again after a growing pause, for as long as the batch holds its claims: the
    /// heartbeat keeps them meanwhile, and the batch ends (its claims released at shutdown, or
    /// abandoned when the heartbeat cannot keep them) without a failure being recorded.
    async fn open_tx(&self) -> (Option<CallTx>, Option<TxSlot>) {
        if !self.invoker.transactional {
            return (None, None);
        }
        let transactions = self
            .store
            .transactions()
            .expect("the runtime refuses transactional handlers on stores without transactions");
        let mut failures: u32 = 0;
        let tx = loop {
            match transactions.begin().await {
                Ok(tx) => break tx,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    // A pool that timed out has waited already: queue again at once. Anything
                    // else (the database refused) waits like a failed claim.
                    let retry_in = if matches!(error, crate::Error::PoolTimedOut(_)) {
                        Duration::ZERO
                    } else {
                        super::error_pause(failures, self.spec.poll())
                    };
                    if failures == 1 {
                        tracing::warn!(
                            handler = self.spec.name(),
                            %error,
                            "no database connection for the handler's transaction; waiting for \
                             one (the attempt is not failed)"
                        );
                    } else {
                        tracing::debug!(handler = self.spec.name(), %error, failures, ?retry_in, "still no database connection for the handler's transaction");
                    }
                    if !retry_in.is_zero() {
                        self.clock.sleep(retry_in).await;
                    }
                }
            }
        };
        let (tx, slot) = TxSlot::new(tx);
        (Some(tx), Some(slot))
    }

    /// Completes `fences` in the handler's transaction and commits. `Ok(false)`: some claim was
    /// lost, so everything was rolled back.
    async fn commit(&self, slot: TxSlot, fences: &[Fence]) -> Result<bool, HandlerError> {
        let Some(mut tx) = slot.take_back() else {
            return Err(HandlerError::retry(
                "the handler kept its `Tx` after returning (moved into a task?), so nothing was committed",
            )
            .with_origin(Origin::Transaction));
        };
        let completed = tx
            .complete(self.subscription, fences)
            .await
            .map_err(|error| {
                HandlerError::retry(format!(
                    "cannot complete in the handler's transaction: {error}"
                ))
                .with_origin(Origin::Transaction)
            })?;
        if completed < fences.len() as u64 {
            tracing::warn!(
                handler = self.spec.name(),
                lost = fences.len() as u64 - completed,
                "claims were taken over while the handler ran; its transaction was rolled back"
            );
            return Ok(false); // dropping `tx` rolls it back
        }
        tx.commit().await.map_err(|error| {
            HandlerError::retry(format!("cannot commit the handler's transaction: {error}"))
                .with_origin(Origin::Transaction)
        })?;
        Ok(true)
    }
}

/// The retryable failure of a whole batch whose [`BatchOutcome`](crate::BatchOutcome) marked an
/// index outside it, if one did.
pub(crate) fn out_of_range(
    failures: &[(usize, HandlerError)],
    size: usize,
) -> Option<HandlerError> {
    let &(index, _) = failures.iter().find(|(index, _)| *index >= size)?;
    Some(HandlerError::retry(format!(
        "`BatchOutcome::fail` named index {index}, but the batch has {size} event(s) (indexes 0..{size}); \
         the whole batch failed"
    )))
}

/// One failure copied to each event of a batch (the error itself is not `Clone`): its message,
/// kind (with a `retry_after` delay) and origin.
fn copy(error: &HandlerError) -> HandlerError {
    error.with_same_kind(error.to_string())
}

/// One failure of a whole call, as the outcome of each of its events (`indexes`): the first
/// event keeps the error itself (a fatal error's source stays downcastable), the others a copy.
fn spread(error: HandlerError, indexes: &[usize], outcomes: &mut [Option<Outcome>]) {
    let Some((&first, rest)) = indexes.split_first() else {
        return;
    };
    for &index in rest {
        outcomes[index] = Some(Outcome::Failed(copy(&error)));
    }
    outcomes[first] = Some(Outcome::Failed(error));
}

pub(crate) fn display_duration(duration: std::time::Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}
