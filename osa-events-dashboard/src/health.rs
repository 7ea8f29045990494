//! When a handler or projection is coloured as unhealthy, and why: one rule set for the
//! overview and the detail pages.

use std::time::Duration;

use osa_events_core::ProjectionStatus;
use osa_events_core::operations::{HandlerStatus, Liveness};

/// Due deliveries waiting longer than this make a handler unhealthy.
pub(crate) const STALE: Duration = Duration::from_secs(5 * 60);
/// Due deliveries waiting longer than this make a handler worth a look.
pub(crate) const SLOW: Duration = Duration::from_secs(30);

/// How a handler or projection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Health {
    Ok,
    Warn,
    Bad,
}

impl Health {
    /// The CSS class of a row in this health.
    pub(crate) fn class(self) -> &'static str {
        match self {
            Self::Ok => "health-ok",
            Self::Warn => "health-warn",
            Self::Bad => "health-bad",
        }
    }
}

/// A verdict and the reasons for it (empty when healthy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) health: Health,
    pub(crate) reasons: Vec<String>,
}

impl Verdict {
    fn new() -> Self {
        Self {
            health: Health::Ok,
            reasons: Vec::new(),
        }
    }

    fn add(&mut self, health: Health, reason: String) {
        self.health = self.health.max(health);
        self.reasons.push(reason);
    }
}

/// A handler's verdict, given its failures in the last hour.
pub(crate) fn of_handler(handler: &HandlerStatus, failed_last_hour: u64) -> Verdict {
    let mut verdict = Verdict::new();
    if handler.dead.value() > 0 {
        let noun = if handler.dead.value() == 1 {
            "dead letter"
        } else {
            "dead letters"
        };
        verdict.add(Health::Bad, format!("{} {noun}", handler.dead));
    }
    if handler.liveness == Liveness::Orphan {
        verdict.add(
            Health::Bad,
            "no live node runs it (renamed or removed?)".to_owned(),
        );
    }
    match handler.oldest_due {
        Some(waiting) if waiting > STALE => verdict.add(
            Health::Bad,
            format!(
                "due deliveries waiting {}",
                crate::format::duration(waiting)
            ),
        ),
        Some(waiting) if waiting > SLOW => verdict.add(
            Health::Warn,
            format!(
                "due deliveries waiting {}",
                crate::format::duration(waiting)
            ),
        ),
        _ => {}
    }
    if handler.paused_at.is_some() {
        verdict.add(Health::Warn, "paused".to_owned());
    }
    if handler.liveness == Liveness::Stopped && handler.due.value() > 0 {
        verdict.add(Health::Warn, "work waits and no node runs".to_owned());
    }
    if failed_last_hour > 0 {
        verdict.add(
            Health::Warn,
            format!(
                "{failed_last_hour} failed {} in the last hour",
                if failed_last_hour == 1 {
                    "attempt"
                } else {
                    "attempts"
                }
            ),
        );
    }
    verdict
}

/// A projection's verdict.
pub(crate) fn of_projection(projection: &ProjectionStatus) -> Verdict {
    let mut verdict = Verdict::new();
    if projection.last_error.is_some() {
        verdict.add(Health::Bad, "its last batch failed".to_owned());
    }
    match projection.oldest_unapplied {
        Some(behind) if behind > STALE => verdict.add(
            Health::Bad,
            format!("{} behind", crate::format::duration(behind)),
        ),
        Some(behind) if behind > SLOW => verdict.add(
            Health::Warn,
            format!("{} behind", crate::format::duration(behind)),
        ),
        _ => {}
    }
    if projection.leader.is_none() && projection.lag > 0 {
        verdict.add(Health::Warn, "events wait and no node leads it".to_owned());
    }
    verdict
}
