//! [`Attempt`]: one handler call as the harness saw it, and what became of it.

use std::fmt;
use std::time::Duration;

use osa_events::__private::StepReport;
use osa_events::Event;
use uuid::Uuid;

/// One attempt at one delivery: a handler was run on an event (alone, or within a batch), and
/// this is how it ended. [`Harness`](super::Harness) records one per claimed delivery, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// The handler's name.
    pub handler: &'static str,
    /// The event's id.
    pub event_id: Uuid,
    /// The event's type name.
    pub event_type: String,
    /// The event's position in the log (its delivery's key within the handler's subscription).
    pub position: i64,
    /// Which attempt this was: 1 for the first, 2 for the first retry, and so on.
    pub attempt: u32,
    /// When the delivery was claimed, in fake time since the harness was built.
    pub at: Duration,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The event's payload, as JSON text; [`event`](Self::event) decodes it.
    pub payload: String,
}

/// How an [`Attempt`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// The handler succeeded and the delivery was completed (for a handler that takes a `Tx`,
    /// in its transaction, which committed with what it published).
    Handled,
    /// The handler failed with a retryable error; the delivery is due again after `retry_in`.
    ///
    /// Also a deferral, whose attempt is not counted (the next attempt has the same number): an
    /// event version newer than the handler's, or the handler's own
    /// [`HandlerError::retry_after`](osa_events::HandlerError::retry_after), whose delay is
    /// `retry_in` (at most [`HandlerError::MAX_RETRY_AFTER`](osa_events::HandlerError::MAX_RETRY_AFTER)).
    Retried {
        /// The error, as recorded for operators (event, position, attempt and cause).
        error: String,
        /// The backoff before the next attempt.
        retry_in: Duration,
    },
    /// The delivery is dead: a permanent error, the last allowed attempt, or a payload that does
    /// not decode. The error is kept for a human.
    DeadLettered {
        /// The error, as recorded in the dead letter.
        error: String,
    },
    /// The handler succeeded, but the store refused the completion: the claim had been taken
    /// over meanwhile, so the event is handled again. For a handler that takes a `Tx`, its
    /// transaction was rolled back: nothing it published exists.
    CompletionRefused,
    /// The batch was abandoned before this delivery's outcome was known (its claim was lost);
    /// the delivery is claimed again when its claim expires.
    Unfinished,
    /// The handler failed fatally ([`HandlerError::fatal`](osa_events::HandlerError::fatal)) in
    /// this delivery's call, or in an earlier call of the same claim: the delivery was given back
    /// unfailed (pending and due at once, the attempt not counted), and a runtime would stop and
    /// return the error ([`Error::Fatal`](osa_events::Error::Fatal)).
    /// [`Harness::drain`](super::Harness::drain) panics with it.
    Fatal {
        /// The fatal error, as the runtime would return it: handler, event and cause.
        error: String,
    },
}

impl Attempt {
    /// Decodes the event.
    ///
    /// # Panics
    ///
    /// When the payload is not an `E`: another event type, or a payload that does not decode.
    #[track_caller]
    pub fn event<E: Event>(&self) -> E {
        assert_eq!(
            self.event_type,
            E::NAME,
            "attempt at position {} is a `{}` event, not a `{}`",
            self.position,
            self.event_type,
            E::NAME
        );
        serde_json::from_str(&self.payload).unwrap_or_else(|error| {
            panic!(
                "the payload at position {} does not decode as `{}`: {error}",
                self.position,
                E::NAME
            )
        })
    }

    /// Whether the handler succeeded and the delivery is done.
    pub fn is_handled(&self) -> bool {
        self.outcome == AttemptOutcome::Handled
    }

    /// Whether the attempt failed and will be retried.
    pub fn is_retried(&self) -> bool {
        matches!(self.outcome, AttemptOutcome::Retried { .. })
    }

    /// Whether the attempt made the delivery a dead letter.
    pub fn is_dead_lettered(&self) -> bool {
        matches!(self.outcome, AttemptOutcome::DeadLettered { .. })
    }

    /// Whether the handler failed fatally and the delivery was given back.
    pub fn is_fatal(&self) -> bool {
        matches!(self.outcome, AttemptOutcome::Fatal { .. })
    }

    /// The error of a failed attempt (retried, dead-lettered or fatal).
    pub fn error(&self) -> Option<&str> {
        match &self.outcome {
            AttemptOutcome::Retried { error, .. }
            | AttemptOutcome::DeadLettered { error }
            | AttemptOutcome::Fatal { error } => Some(error),
            _ => None,
        }
    }
}

/// One line: time, handler, position, attempt, outcome.
impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "+{}  {}  position {}  attempt {}  ",
            seconds(self.at),
            self.handler,
            self.position,
            self.attempt
        )?;
        match &self.outcome {
            AttemptOutcome::Handled => f.write_str("handled"),
            AttemptOutcome::Retried { error, retry_in } => {
                write!(f, "retried in {}: {error}", seconds(*retry_in))
            }
            AttemptOutcome::DeadLettered { error } => write!(f, "dead-lettered: {error}"),
            AttemptOutcome::CompletionRefused => {
                f.write_str("handled, but the completion was refused (claim taken over)")
            }
            AttemptOutcome::Unfinished => f.write_str("unfinished (claim lost)"),
            AttemptOutcome::Fatal { error } => write!(f, "given back, fatal: {error}"),
        }
    }
}

/// `1.250s`: fake durations are exact, so milliseconds say it all.
pub(super) fn seconds(duration: Duration) -> String {
    format!("{}.{:03}s", duration.as_secs(), duration.subsec_millis())
}

/// The attempts of one step: one per claimed delivery, in claim order.
pub(super) fn attempts_of(
    handler: &'static str,
    at: Duration,
    report: &StepReport,
) -> Vec<Attempt> {
    let refused = report.completions_written < report.completed.len() as u64;
    report
        .claimed
        .iter()
        .map(|delivery| {
            let failure = report
                .failures
                .iter()
                .find(|failure| failure.fence == delivery.fence);
            let fatal = report
                .fatal
                .as_ref()
                .filter(|_| report.given_back.contains(&delivery.fence));
            let outcome = match (fatal, failure) {
                (Some(fatal), _) => AttemptOutcome::Fatal {
                    error: fatal.to_string(),
                },
                (None, Some(failure)) => match failure.retry_in {
                    Some(retry_in) => AttemptOutcome::Retried {
                        error: failure.error.clone(),
                        retry_in,
                    },
                    None => AttemptOutcome::DeadLettered {
                        error: failure.error.clone(),
                    },
                },
                // A `Tx` handler's deliveries are completed in its transaction, exactly.
                (None, None) if report.completed_in_tx.contains(&delivery.fence) => {
                    AttemptOutcome::Handled
                }
                (None, None) if report.refused_in_tx.contains(&delivery.fence) => {
                    AttemptOutcome::CompletionRefused
                }
                (None, None) if report.completed.contains(&delivery.fence) => {
                    // The store reports a count: with any refusal, the batch's attempts cannot
                    // be told apart, so each is reported as refused.
                    if refused {
                        AttemptOutcome::CompletionRefused
                    } else {
                        AttemptOutcome::Handled
                    }
                }
                (None, None) => AttemptOutcome::Unfinished,
            };
            Attempt {
                handler,
                event_id: delivery.event_id,
                event_type: delivery.event_type.clone(),
                position: delivery.fence.position,
                attempt: delivery.attempt,
                at,
                outcome,
                payload: delivery.payload.clone(),
            }
        })
        .collect()
}
