//! Running one claimed batch: handler calls under a heartbeat, then one write per outcome kind.

use std::pin::pin;

use tracing::{Instrument, Span};

use super::Worker;
use super::backoff::{self, Jitter};
use super::call::{CallSpans, Outcome};
use super::heartbeat::{self, Lost, Settled};
use crate::handler::error::HandlerError;
use crate::spans::{self, Recorded, Tally};
use crate::store::{Delivery, Failure, Fence};

/// What became of a processed batch, as far as the caller still has to know (and, for the
/// test-util stepper's report, what a `Tx` handler's transaction settled).
pub(super) struct Processed {
    /// The fences of the succeeded deliveries, whose completion the caller writes.
    pub(super) completed: Vec<Fence>,
    /// The fences of the deliveries a `Tx` handler's committed transaction completed.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    pub(super) completed_in_tx: Vec<Fence>,
    /// The fences of the deliveries whose `Tx` handler succeeded but whose claim was taken over
    /// before its transaction could complete it (rolled back).
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    pub(super) refused_in_tx: Vec<Fence>,
    /// The failures, already written (also for the exhausted deliveries, which were not run).
    /// Only the stepper of the `test-util` feature reports them.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    pub(super) failures: Vec<Failure>,
    /// The fences of the deliveries given back because the handler failed fatally, already
    /// written: those of the fatal call (with its error kept), and those not yet called. Only the
    /// stepper of the `test-util` feature reports them.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    pub(super) given_back: Vec<Fence>,
}

/// How the handler calls of a batch ended.
enum Ended {
    Finished,
    ClaimsLost(Lost),
    Aborted,
}

impl Worker {
    /// Runs the batch and records its failures; returns the fences of the succeeded deliveries,
    /// whose completion the caller writes (alone, or together with the next claim), and the
    /// failures it wrote (which only the test-util stepper reports).
    pub(super) async fn process(
        &self,
        deliveries: Vec<Delivery>,
        claimed_at: tokio::time::Instant,
        jitter: &mut Jitter,
    ) -> Processed {
        let span = spans::receive(self.spec.name(), self.spec.event_type(), &deliveries);
        self.process_in_span(deliveries, claimed_at, jitter)
            .instrument(span)
            .await
    }

    async fn process_in_span(
        &self,
        deliveries: Vec<Delivery>,
        claimed_at: tokio::time::Instant,
        jitter: &mut Jitter,
    ) -> Processed {
        let max_attempts = self.spec.retries().saturating_add(1);
        let claimed = deliveries.len();
        self.metrics.claimed(claimed);
        // A claim beyond the last allowed attempt means earlier claims expired unfinished (the
        // worker crashed or hung): give up instead of running the handler again.
        let (exhausted, runnable): (Vec<Delivery>, Vec<Delivery>) = deliveries
            .into_iter()
            .partition(|delivery| delivery.attempt > max_attempts);
        let mut failures: Vec<Failure> = exhausted.iter().map(|d| self.exhausted(d)).collect();

        let fences: Vec<Fence> = runnable.iter().map(|delivery| delivery.fence).collect();
        let mut outcomes: Vec<Option<Outcome>> = runnable.iter().map(|_| None).collect();
        let mut call_spans = CallSpans::default();
        let settled = Settled::new(runnable.len());
        let ended = {
            let calls =
                pin!(self.call_handler(&runnable, &mut outcomes, &mut call_spans, &settled));
            let heartbeat = pin!(heartbeat::keep(
                &*self.store,
                self.subscription,
                &fences,
                &settled,
                self.spec.claim_timeout(),
                &*self.clock,
                claimed_at,
            ));
            tokio::select! {
                biased;
                () = calls => Ended::Finished,
                lost = heartbeat => Ended::ClaimsLost(lost),
                () = self.aborting.cancelled() => Ended::Aborted,
            }
        };

        let mut tally = Tally::default();
        for _ in &exhausted {
            tally.add(Recorded::DeadLettered);
        }
        let mut completed = Vec::new();
        let mut completed_in_tx = Vec::new();
        let mut refused_in_tx = Vec::new();
        let mut unfinished = Vec::new();
        let mut deferred = Vec::new();
        let mut given_back = Vec::new();
        let mut fatal: Option<crate::Error> = None;
        let mut first_error_type = None;
        // A fatal error stops the runtime: what the handler was not called for is given back.
        let stops = outcomes.iter().flatten().any(Outcome::is_fatal);
        for (index, (delivery, outcome)) in runnable.iter().zip(outcomes).enumerate() {
            let (recorded, error_type) = match outcome {
                Some(Outcome::Succeeded) => {
                    completed.push(delivery.fence);
                    (Recorded::Completed, None)
                }
                Some(Outcome::Failed(error)) if error.is_deferred() => {
                    deferred.push(self.deferral(delivery, &error, jitter));
                    (Recorded::Deferred, None)
                }
                Some(Outcome::Failed(error)) if error.retry_delay().is_some() => {
                    deferred.push(self.snooze(delivery, &error));
                    (Recorded::Deferred, None)
                }
                Some(Outcome::Failed(error)) if error.is_fatal() => {
                    let error_type = error.error_type();
                    // Given back due now, with the error kept: a deferral without a delay.
                    given_back.push(self.given_back(delivery, &error));
                    if fatal.is_none() {
                        fatal = Some(crate::Error::Fatal {
                            handler: self.spec.name().to_owned(),
                            event_type: delivery.event_type.clone(),
                            event_id: delivery.event_id,
                            position: delivery.fence.position,
                            source: error.into_source(),
                        });
                    }
                    (Recorded::Released, Some(error_type))
                }
                Some(Outcome::Failed(error)) => {
                    let failure = self.failure(delivery, &error, jitter);
                    let recorded = if failure.retry_in.is_some() {
                        Recorded::Retried
                    } else {
                        Recorded::DeadLettered
                    };
                    failures.push(failure);
                    (recorded, Some(error.error_type()))
                }
                Some(Outcome::CompletedInTx) => {
                    completed_in_tx.push(delivery.fence);
                    (Recorded::Completed, None)
                }
                Some(Outcome::Lost) => {
                    refused_in_tx.push(delivery.fence);
                    (Recorded::Lost, None)
                }
                None => {
                    unfinished.push(delivery.fence);
                    match ended {
                        Ended::Aborted => (Recorded::Released, None),
                        Ended::Finished if stops => (Recorded::Released, None),
                        Ended::Finished | Ended::ClaimsLost(_) => (Recorded::Lost, None),
                    }
                }
            };
            if let Some(span) = call_spans.each.get(index).and_then(Option::as_ref) {
                spans::record_outcome(span, recorded, error_type);
            }
            first_error_type = first_error_type.or(error_type);
            tally.add(recorded);
        }
        if let Some(span) = &call_spans.batch {
            spans::record_outcome(span, tally.summary(), first_error_type);
        }
        tally.record_on(&Span::current());
        self.metrics.outcomes(&tally);
        self.log_batch(&tally, claimed, failures.first());
        if let Some(fatal) = fatal {
            // First, so that no claim loop of this runtime claims more meanwhile.
            self.fatal.raise(fatal);
        }
        self.write_failures(&failures).await;
        self.write_deferrals(&deferred).await;
        // A fatal call's deliveries go back with its error: deferrals due now (a write of its
        // own, only ever once before the runtime stops).
        self.write_deferrals(&given_back).await;
        failures.extend(deferred);
        let mut given_back: Vec<Fence> = given_back.iter().map(|failure| failure.fence).collect();
        match ended {
            Ended::Finished if stops => {
                self.release(&unfinished).await;
                given_back.extend(unfinished);
            }
            Ended::Finished => {}
            Ended::Aborted => self.release(&unfinished).await,
            Ended::ClaimsLost(lost) => tracing::warn!(
                handler = self.spec.name(),
                unfinished = unfinished.len(),
                reason = ?lost,
                "abandoned the batch: its claims could not be kept; the deliveries will be claimed again"
            ),
        }
        Processed {
            completed,
            completed_in_tx,
            refused_in_tx,
            failures,
            given_back,
        }
    }

    fn failure(&self, delivery: &Delivery, error: &HandlerError, jitter: &mut Jitter) -> Failure {
        let max_attempts = self.spec.retries().saturating_add(1);
        let give_up = error.is_permanent() || delivery.attempt >= max_attempts;
        let retry_in = (!give_up).then(|| {
            backoff::delay(
                self.spec.backoff(),
                self.spec.max_backoff(),
                delivery.attempt,
                jitter,
            )
        });
        let message = crate::operations::failure_message(
            &delivery.event_type,
            delivery.event_id,
            delivery.fence.position,
            delivery.attempt,
            max_attempts,
            error,
        );
        // A retry at DEBUG; a dead letter has its own WARN line, and the batch a summary
        // (`log_batch`).
        match retry_in {
            Some(delay) => {
                tracing::debug!(handler = self.spec.name(), retry_in = ?delay, "{message}")
            }
            None => self.log_dead_letter(delivery, error),
        }
        Failure {
            fence: delivery.fence,
            error: message,
            retry_in,
        }
    }

    /// A delivery this process cannot take yet: due again after the first retry delay, with the
    /// attempt not counted, however many attempts it has had.
    fn deferral(&self, delivery: &Delivery, error: &HandlerError, jitter: &mut Jitter) -> Failure {
        let delay = backoff::delay(self.spec.backoff(), self.spec.max_backoff(), 1, jitter);
        let message = format!(
            "`{}` event {} (position {}), not attempted: {}",
            delivery.event_type, delivery.event_id, delivery.fence.position, error
        );
        tracing::warn!(handler = self.spec.name(), retry_in = ?delay, "{message}");
        Failure {
            fence: delivery.fence,
            error: message,
            retry_in: Some(delay),
        }
    }

    /// A delivery whose handler asked to be called again after a delay
    /// ([`HandlerError::retry_after`]): due again then (at most
    /// [`HandlerError::MAX_RETRY_AFTER`]), with the attempt not counted.
    fn snooze(&self, delivery: &Delivery, error: &HandlerError) -> Failure {
        let asked = error.retry_delay().unwrap_or_default();
        let delay = asked.min(HandlerError::MAX_RETRY_AFTER);
        if delay < asked {
            tracing::warn!(
                handler = self.spec.name(),
                asked = ?asked,
                retry_in = ?delay,
                "the handler asked to retry after more than the longest delay; waiting that long instead"
            );
        }
        let message = format!(
            "`{}` event {} (position {}), attempt {} not counted: retry after {}: {}",
            delivery.event_type,
            delivery.event_id,
            delivery.fence.position,
            delivery.attempt,
            super::call::display_duration(delay),
            error
        );
        // An expected outcome, at DEBUG; the batch has its INFO summary (`log_batch`).
        tracing::debug!(handler = self.spec.name(), retry_in = ?delay, "{message}");
        Failure {
            fence: delivery.fence,
            error: message,
            retry_in: Some(delay),
        }
    }

    /// A delivery whose handler failed fatally ([`HandlerError::fatal`]): given back due now,
    /// with the attempt not counted and the error kept for whoever claims it next.
    fn given_back(&self, delivery: &Delivery, error: &HandlerError) -> Failure {
        let message = format!(
            "`{}` event {} (position {}), attempt {} not counted: handler `{}` stopped the runtime with a fatal error: {}",
            delivery.event_type,
            delivery.event_id,
            delivery.fence.position,
            delivery.attempt,
            self.spec.name(),
            error
        );
        Failure {
            fence: delivery.fence,
            error: message,
            retry_in: None,
        }
    }

    fn exhausted(&self, delivery: &Delivery) -> Failure {
        let message = format!(
            "`{}` event {} (position {}): gave up at claim {} of at most {}: earlier claims expired \
             before the handler finished (a crashed or hung worker); last error: {}",
            delivery.event_type,
            delivery.event_id,
            delivery.fence.position,
            delivery.attempt,
            self.spec.retries().saturating_add(1),
            delivery.last_error.as_deref().unwrap_or("none recorded"),
        );
        self.log_dead_letter(delivery, &message);
        Failure {
            fence: delivery.fence,
            error: message,
            retry_in: None,
        }
    }

    /// The WARN line of one dead letter: which handler, event type and event, after how many
    /// attempts, and why. The error never quotes a payload value (decode errors are redacted); a
    /// handler's own error text is the handler's to keep value-free.
    fn log_dead_letter(&self, delivery: &Delivery, error: &dyn std::fmt::Display) {
        tracing::warn!(
            handler = self.spec.name(),
            event_type = %delivery.event_type,
            event_id = %delivery.event_id,
            position = delivery.fence.position,
            attempts = delivery.attempt,
            %error,
            "dead letter"
        );
    }

    /// One line for the batch: how many of the `claimed` deliveries completed, were retried,
    /// dead-lettered, deferred, released or lost, and the first error. INFO when anything did not
    /// complete, DEBUG otherwise (a busy handler completes hundreds of batches a second).
    fn log_batch(&self, tally: &Tally, claimed: usize, first_failure: Option<&Failure>) {
        let Tally {
            completed,
            retried,
            dead_lettered,
            deferred,
            released,
            lost,
        } = *tally;
        let first_error = first_failure.map(|failure| failure.error.as_str());
        if tally.summary() == Recorded::Completed {
            tracing::debug!(
                handler = self.spec.name(),
                claimed,
                completed,
                "batch handled"
            );
        } else {
            tracing::info!(
                handler = self.spec.name(),
                claimed,
                completed,
                retried,
                dead_lettered,
                deferred,
                released,
                lost,
                first_error,
                "batch handled, not all completed"
            );
        }
    }

    /// Writes completions on their own (when no claim follows at once).
    pub(super) async fn write_completions(&self, completed: &[Fence]) {
        if completed.is_empty() {
            return;
        }
        match self.store.complete(self.subscription, completed).await {
            Ok(written) => self.check_completed(completed.len(), written),
            Err(error) => tracing::warn!(
                handler = self.spec.name(),
                %error,
                "cannot record completions; the claims will expire and the events be handled again"
            ),
        }
    }

    pub(super) fn check_completed(&self, sent: usize, written: u64) {
        if written < sent as u64 {
            tracing::warn!(
                handler = self.spec.name(),
                refused = sent as u64 - written,
                "completions refused: those claims had expired and were taken over; the events may be handled twice"
            );
        }
    }

    async fn write_deferrals(&self, deferred: &[Failure]) {
        if deferred.is_empty() {
            return;
        }
        if let Err(error) = self.store.defer(self.subscription, deferred).await {
            tracing::warn!(
                handler = self.spec.name(),
                %error,
                "cannot give back deferred deliveries; the claims will expire and count as failed attempts"
            );
        }
    }

    async fn write_failures(&self, failures: &[Failure]) {
        if failures.is_empty() {
            return;
        }
        if let Err(error) = self.store.fail(self.subscription, failures).await {
            tracing::warn!(
                handler = self.spec.name(),
                %error,
                "cannot record failures; the claims will expire and count as failed attempts"
            );
        }
    }

    async fn release(&self, unfinished: &[Fence]) {
        if unfinished.is_empty() {
            return;
        }
        match self.store.release(self.subscription, unfinished).await {
            Ok(released) => tracing::info!(
                handler = self.spec.name(),
                released,
                "released unfinished claims at shutdown"
            ),
            Err(error) => tracing::warn!(
                handler = self.spec.name(),
                %error,
                "cannot release claims at shutdown; they will be reclaimed when they expire"
            ),
        }
    }
}
