//! The simulation's model of the claim protocol: what every store call and handler call must
//! find, given everything that happened before. Each observation is checked against it, and
//! recorded in the trace.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use osa_events::store::{Delivery, Failure, Fence};
use tokio::time::Instant;
use uuid::Uuid;

use super::{Behaviour, Rng, SimStats};
use crate::FakeClock;

/// Everything the store wrapper, the probe and the scheduler share, behind one lock.
pub(super) struct Model {
    pub(super) clock: FakeClock,
    started: Instant,
    /// The scheduler's step number, for the trace.
    pub(super) step: u64,
    /// The worker being polled; store calls and handler calls are attributed to it.
    pub(super) current: Option<usize>,
    /// Per worker: not stalled or crashed since its last claim, so its claims must be live.
    pub(super) healthy: Vec<bool>,
    claims: BTreeMap<i64, Claim>,
    attempts: BTreeMap<i64, u32>,
    not_before: BTreeMap<i64, Instant>,
    pub(super) done: BTreeSet<i64>,
    pub(super) dead: BTreeSet<i64>,
    /// Claims (position, attempt) whose handler call succeeded.
    succeeded: BTreeSet<(i64, u32)>,
    probed: bool,
    /// Handler calls under way: position -> (worker, attempt).
    inside: BTreeMap<i64, Vec<(usize, u32)>>,
    pub(super) trace: Vec<String>,
    pub(super) violations: Vec<String>,
    pub(super) stats: SimStats,
    probe_rng: Rng,
    pub(super) behaviour: Behaviour,
    pub(super) max_attempts: u32,
}

/// The live claim of a delivery, as the model knows it.
struct Claim {
    token: Uuid,
    worker: Option<usize>,
    attempt: u32,
    expires: Instant,
}

/// What a handler call is to do: how long it takes, and how it ends.
pub(super) struct Plan {
    pub(super) duration: Duration,
    pub(super) outcome: Planned,
}

/// How a probed handler call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Planned {
    Ok,
    Retry,
    Permanent,
}

impl Model {
    pub(super) fn new(clock: FakeClock, seed: u64, workers: usize, behaviour: Behaviour) -> Self {
        Self {
            started: clock.now(),
            clock,
            step: 0,
            current: None,
            healthy: vec![true; workers],
            claims: BTreeMap::new(),
            attempts: BTreeMap::new(),
            not_before: BTreeMap::new(),
            done: BTreeSet::new(),
            dead: BTreeSet::new(),
            succeeded: BTreeSet::new(),
            probed: false,
            inside: BTreeMap::new(),
            trace: Vec::new(),
            violations: Vec::new(),
            stats: SimStats::default(),
            probe_rng: Rng::fork(seed, 2),
            behaviour,
            max_attempts: u32::MAX,
        }
    }

    /// Appends a trace line: step, fake time, worker, what happened.
    pub(super) fn log(&mut self, who: Option<usize>, what: impl AsRef<str>) {
        let at = self.clock.now() - self.started;
        let who = who.map_or_else(|| "--".to_owned(), |w| format!("w{w}"));
        let line = format!(
            "{:>6} +{:>4}.{:03}s {who:>3}  {}",
            self.step,
            at.as_secs(),
            at.subsec_millis(),
            what.as_ref()
        );
        self.trace.push(line);
    }

    pub(super) fn violation(&mut self, what: String) {
        self.log(self.current, format!("VIOLATION: {what}"));
        self.violations.push(what);
    }

    fn since_start(&self, instant: Instant) -> String {
        let at = instant.saturating_duration_since(self.started);
        format!("+{}.{:03}s", at.as_secs(), at.subsec_millis())
    }

    /// Whether `worker` holds a claim, live or not, in the model.
    pub(super) fn holds_claims(&self, worker: usize) -> bool {
        self.claims.values().any(|c| c.worker == Some(worker))
    }

    pub(super) fn on_claim(&mut self, timeout: Duration, claimed: &[Delivery]) {
        let who = self.current;
        if let Some(w) = who {
            self.healthy[w] = true;
        }
        if claimed.is_empty() {
            return;
        }
        let now = self.clock.now();
        let mut line = String::from("claim ->");
        for delivery in claimed {
            let p = delivery.fence.position;
            let _ = write!(line, " {p}@{}", delivery.attempt);
            if self.done.contains(&p) || self.dead.contains(&p) {
                self.violation(format!(
                    "position {p} was claimed after it was completed or dead"
                ));
            }
            if let Some(&not_before) = self.not_before.get(&p)
                && now < not_before
            {
                let due = self.since_start(not_before);
                self.violation(format!(
                    "position {p} was claimed before its backoff ended at {due}"
                ));
            }
            if let Some(previous) = self.claims.get(&p) {
                if previous.expires > now {
                    let until = self.since_start(previous.expires);
                    let holder = previous
                        .worker
                        .map_or("the test".into(), |w| format!("w{w}"));
                    self.violation(format!(
                        "position {p} was claimed while {holder} held it until {until}"
                    ));
                } else {
                    self.stats.reclaims += 1;
                }
            }
            let expected = self.attempts.get(&p).copied().unwrap_or(0) + 1;
            if delivery.attempt != expected {
                self.violation(format!(
                    "position {p} was claimed as attempt {}, expected {expected}",
                    delivery.attempt
                ));
            }
            self.attempts.insert(p, delivery.attempt);
            self.claims.insert(
                p,
                Claim {
                    token: delivery.fence.token,
                    worker: who,
                    attempt: delivery.attempt,
                    expires: now + timeout,
                },
            );
            self.stats.claims += 1;
        }
        self.log(who, line);
    }

    /// Whether `fence` is the current claim of its delivery, i.e. a fenced write must take it.
    fn current_claim(&self, fence: &Fence) -> Option<&Claim> {
        self.claims
            .get(&fence.position)
            .filter(|claim| claim.token == fence.token)
    }

    pub(super) fn on_complete(&mut self, done: &[Fence], written: u64) {
        if done.is_empty() {
            return;
        }
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for fence in done {
            let p = fence.position;
            match self.current_claim(fence).map(|claim| claim.attempt) {
                Some(attempt) => {
                    if self.probed && !self.succeeded.contains(&(p, attempt)) {
                        self.violation(format!(
                            "position {p} attempt {attempt} was completed, but its handler call \
                             did not succeed"
                        ));
                    }
                    self.claims.remove(&p);
                    self.done.insert(p);
                    accepted.push(p);
                }
                None => refused.push(p),
            }
        }
        self.stats.completed += accepted.len() as u64;
        self.stats.refused_completions += refused.len() as u64;
        self.log(
            self.current,
            format!("complete {accepted:?} refused {refused:?} (store wrote {written})"),
        );
        if written != accepted.len() as u64 {
            self.violation(format!(
                "the store completed {written} of {:?}; only {accepted:?} still held their claims",
                positions(done)
            ));
        }
    }

    pub(super) fn on_fail(&mut self, failures: &[Failure], written: u64) {
        if failures.is_empty() {
            return;
        }
        let now = self.clock.now();
        let mut accepted = 0u64;
        let mut line = String::from("fail");
        for failure in failures {
            let p = failure.fence.position;
            if self.current_claim(&failure.fence).is_none() {
                let _ = write!(line, " {p}:refused");
                self.stats.refused_failures += 1;
                continue;
            }
            accepted += 1;
            self.claims.remove(&p);
            match failure.retry_in {
                Some(delay) => {
                    let _ = write!(line, " {p}:retry-in-{}ms", delay.as_millis());
                    self.not_before.insert(p, now + delay);
                    self.stats.retried += 1;
                }
                None => {
                    let _ = write!(line, " {p}:dead");
                    self.dead.insert(p);
                    self.stats.dead += 1;
                }
            }
        }
        self.log(self.current, line);
        if written != accepted {
            self.violation(format!(
                "the store failed {written} of {:?}; {accepted} still held their claims",
                positions(&failures.iter().map(|f| f.fence).collect::<Vec<_>>())
            ));
        }
    }

    pub(super) fn on_extend(&mut self, claims: &[Fence], timeout: Duration, held: &[i64]) {
        let now = self.clock.now();
        let expected: Vec<i64> = claims
            .iter()
            .filter(|fence| self.current_claim(fence).is_some())
            .map(|fence| fence.position)
            .collect();
        self.stats.extends += 1;
        self.log(
            self.current,
            format!("extend {:?} -> held {held:?}", positions(claims)),
        );
        if sorted(held) != sorted(&expected) {
            self.violation(format!(
                "extend of {:?} held {held:?}; the model expected {expected:?}",
                positions(claims)
            ));
        }
        if let Some(w) = self.current
            && self.healthy[w]
            && expected.len() < claims.len()
        {
            self.violation(format!(
                "w{w} never stalled, yet lost claims of {:?}: its heartbeat came too late",
                positions(claims)
            ));
        }
        for p in held {
            if let Some(claim) = self.claims.get_mut(p) {
                claim.expires = now + timeout;
            }
        }
    }

    pub(super) fn on_release(&mut self, claims: &[Fence], written: u64) {
        let now = self.clock.now();
        let mut released = 0u64;
        for fence in claims {
            if self.current_claim(fence).is_some() {
                released += 1;
                self.claims.remove(&fence.position);
                self.not_before.insert(fence.position, now);
                if let Some(attempts) = self.attempts.get_mut(&fence.position) {
                    *attempts = attempts.saturating_sub(1);
                }
            }
        }
        self.log(self.current, format!("release {:?}", positions(claims)));
        if written != released {
            self.violation(format!(
                "the store released {written} of {:?}; {released} still held their claims",
                positions(claims)
            ));
        }
    }

    /// Deferred claims are pending after their delay, their attempts given back.
    pub(super) fn on_defer(&mut self, deferred: &[Failure], written: u64) {
        let now = self.clock.now();
        let mut accepted = 0u64;
        for failure in deferred {
            let p = failure.fence.position;
            if self.current_claim(&failure.fence).is_some() {
                accepted += 1;
                self.claims.remove(&p);
                self.not_before
                    .insert(p, now + failure.retry_in.unwrap_or_default());
                if let Some(attempts) = self.attempts.get_mut(&p) {
                    *attempts = attempts.saturating_sub(1);
                }
            }
        }
        let fences: Vec<Fence> = deferred.iter().map(|failure| failure.fence).collect();
        self.log(self.current, format!("defer {:?}", positions(&fences)));
        if written != accepted {
            self.violation(format!(
                "the store deferred {written} of {:?}; {accepted} still held their claims",
                positions(&fences)
            ));
        }
    }

    /// A handler call begins; returns what it is to do.
    pub(super) fn enter(&mut self, position: i64, attempt: u32) -> (Option<usize>, Plan) {
        self.probed = true;
        self.stats.handler_calls += 1;
        let who = self.current;
        self.log(who, format!("handle {position}@{attempt}"));
        if attempt > self.max_attempts {
            self.violation(format!(
                "position {position} was handled at attempt {attempt}, past the last allowed ({})",
                self.max_attempts
            ));
        }
        if let Some(w) = who
            && self.healthy[w]
        {
            let holds = self
                .claims
                .get(&position)
                .is_some_and(|claim| claim.worker == Some(w) && claim.attempt == attempt);
            if !holds {
                self.violation(format!(
                    "w{w} never stalled, yet handles {position}@{attempt} without holding its claim"
                ));
            }
        }
        let others: Vec<(usize, u32)> = self.inside.get(&position).cloned().unwrap_or_default();
        for (other, other_attempt) in others {
            let both_healthy = who.is_some_and(|w| self.healthy[w]) && self.healthy[other];
            if both_healthy {
                self.violation(format!(
                    "position {position} is handled by w{} (attempt {attempt}) and w{other} \
                     (attempt {other_attempt}) at once, and neither has stalled",
                    who.unwrap_or(usize::MAX)
                ));
            } else {
                self.stats.stale_overlaps += 1;
            }
        }
        if let Some(w) = who {
            self.inside.entry(position).or_default().push((w, attempt));
        }
        let behaviour = &self.behaviour;
        let duration = self.probe_rng.duration(behaviour.durations.clone());
        let outcome = if self.probe_rng.chance(behaviour.permanent) {
            Planned::Permanent
        } else if self.probe_rng.chance(behaviour.retry) {
            Planned::Retry
        } else {
            Planned::Ok
        };
        (who, Plan { duration, outcome })
    }

    /// A handler call ended (`None`: it was dropped unfinished, by a crash).
    pub(super) fn exit(
        &mut self,
        who: Option<usize>,
        position: i64,
        attempt: u32,
        outcome: Option<Planned>,
    ) {
        if let Some(w) = who
            && let Some(inside) = self.inside.get_mut(&position)
        {
            inside.retain(|entry| *entry != (w, attempt));
            if inside.is_empty() {
                self.inside.remove(&position);
            }
        }
        if outcome == Some(Planned::Ok) {
            self.succeeded.insert((position, attempt));
        }
        let how = match outcome {
            Some(Planned::Ok) => "ok",
            Some(Planned::Retry) => "retryable error",
            Some(Planned::Permanent) => "permanent error",
            None => "dropped unfinished",
        };
        self.log(who, format!("handled {position}@{attempt}: {how}"));
    }
}

fn positions(fences: &[Fence]) -> Vec<i64> {
    fences.iter().map(|fence| fence.position).collect()
}

fn sorted(positions: &[i64]) -> Vec<i64> {
    let mut positions = positions.to_vec();
    positions.sort_unstable();
    positions
}

#[cfg(test)]
mod tests;
