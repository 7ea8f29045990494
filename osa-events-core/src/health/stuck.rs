//! When a claim loop counts as stuck: the step it is in has run longer than the limit fixed as
//! it began. The rule, with its reasons, is in the module docs ("Stuck"); this is it as code.

use std::time::Duration;

use tokio::time::Instant;

use crate::handler::{HandlerSpec, Shape};

/// The least slack a step gets on top of what it may take.
pub(super) const MIN_SLACK: Duration = Duration::from_secs(60);

/// What a claim loop is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StepKind {
    /// Started (or restarted) and not at its first claim yet.
    Starting,
    /// In a claim round trip (with the previous batch's completions, when it has some).
    Claiming,
    /// Running the batch a claim returned, up to the writes of its outcomes.
    Batch,
    /// Idle until the next poll or wake-up, or pausing after a failed claim.
    Waiting,
}

impl StepKind {
    /// The step, as the report's reasons name it.
    pub(super) fn describe(self) -> &'static str {
        match self {
            StepKind::Starting => "starting",
            StepKind::Claiming => "a claim round trip",
            StepKind::Batch => "a batch",
            StepKind::Waiting => "a wait",
        }
    }
}

/// The step a claim loop is in: since when, and how long it may take (`None`: any time).
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    pub(super) kind: StepKind,
    pub(super) since: Instant,
    pub(super) limit: Option<Duration>,
}

impl Step {
    /// A step of `kind` beginning `now` that may take `limit`.
    pub(super) fn new(kind: StepKind, now: Instant, limit: Option<Duration>) -> Self {
        Self {
            kind,
            since: now,
            limit,
        }
    }

    /// How long the step has run, when that is longer than its limit.
    pub(super) fn overrun(&self, now: Instant) -> Option<Duration> {
        let limit = self.limit?;
        let ran = now.saturating_duration_since(self.since);
        (ran > limit).then_some(ran)
    }
}

/// The slack of `spec`'s steps: twice its claim timeout, at least [`MIN_SLACK`].
pub(super) fn slack(spec: &HandlerSpec) -> Duration {
    spec.claim_timeout().saturating_mul(2).max(MIN_SLACK)
}

/// How long a batch of `spec` may take; `None` when it may take any time (no `timeout`, or a
/// handler taking `Tx`).
pub(super) fn batch_limit(spec: &HandlerSpec, transactional: bool) -> Option<Duration> {
    if transactional {
        return None;
    }
    let timeout = spec.timeout()?;
    let calls = match spec.shape() {
        Shape::Each => spec.batch(),
        Shape::Batch => 1,
    };
    Some(
        spec.linger()
            .saturating_add(timeout.saturating_mul(calls))
            .saturating_add(slack(spec)),
    )
}

/// How long a wait of `wait` may take.
pub(super) fn wait_limit(spec: &HandlerSpec, wait: Duration) -> Duration {
    wait.saturating_add(slack(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shape: Shape) -> HandlerSpec {
        HandlerSpec::new("stuck.test", "stuck::test", "stuck.event", 1, shape)
    }

    #[test]
    fn the_slack_is_twice_the_claim_timeout_and_at_least_a_minute() {
        let short = spec(Shape::Each).with_claim_timeout(Duration::from_secs(5));
        assert_eq!(slack(&short), MIN_SLACK);
        let long = spec(Shape::Each).with_claim_timeout(Duration::from_secs(300));
        assert_eq!(slack(&long), Duration::from_secs(600));
    }

    #[test]
    fn a_batch_without_timeout_or_with_tx_is_never_stuck() {
        assert_eq!(batch_limit(&spec(Shape::Each), false), None);
        let timed = spec(Shape::Each).with_timeout(Duration::from_secs(1));
        assert_eq!(batch_limit(&timed, true), None);
    }

    #[test]
    fn a_batch_may_take_a_timeout_per_call_plus_linger_and_slack() {
        let each = spec(Shape::Each)
            .with_batch(10)
            .with_timeout(Duration::from_secs(3))
            .with_claim_timeout(Duration::from_secs(60));
        assert_eq!(
            batch_limit(&each, false),
            Some(Duration::from_secs(30 + 120))
        );
        let batch = spec(Shape::Batch)
            .with_batch(10)
            .with_linger(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(3))
            .with_claim_timeout(Duration::from_secs(60));
        assert_eq!(
            batch_limit(&batch, false),
            Some(Duration::from_secs(2 + 3 + 120))
        );
    }

    #[test]
    fn a_step_overruns_only_past_its_limit() {
        let start = Instant::now();
        let step = Step::new(StepKind::Claiming, start, Some(Duration::from_secs(60)));
        assert_eq!(step.overrun(start + Duration::from_secs(60)), None);
        assert_eq!(
            step.overrun(start + Duration::from_secs(61)),
            Some(Duration::from_secs(61))
        );
        let unbounded = Step::new(StepKind::Batch, start, None);
        assert_eq!(unbounded.overrun(start + Duration::from_secs(86_400)), None);
    }
}
