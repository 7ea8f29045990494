//! [`HealthReport`]: what a probe reads, built from the board in one pass.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use super::board::{HandlerCell, HealthBoard, Phase, ProjectionCell, lock};
use std::time::Duration;

use tokio::time::Instant;

/// Where the runtime is in its life, in a [`HealthReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunState {
    /// Built, but [`Runtime::run`](crate::Runtime::run) was not called yet.
    NotStarted,
    /// In `run`: registering the subscriptions and starting the loops.
    Starting,
    /// Every loop was started.
    Running,
    /// Shutdown began: nothing more is claimed, running handlers finish.
    Stopping,
    /// `run` returned (or was dropped).
    Stopped,
}

impl From<Phase> for RunState {
    fn from(phase: Phase) -> Self {
        match phase {
            Phase::NotStarted => RunState::NotStarted,
            Phase::Starting => RunState::Starting,
            Phase::Running => RunState::Running,
            Phase::Stopping => RunState::Stopping,
            Phase::Stopped => RunState::Stopped,
        }
    }
}

impl RunState {
    /// Why a runtime in this state is not live, unless it is running.
    fn not_running(self) -> Option<&'static str> {
        match self {
            RunState::NotStarted => Some("the runtime has not started (`Runtime::run` not called)"),
            RunState::Starting => Some("the runtime is starting: registering its subscriptions"),
            RunState::Running => None,
            RunState::Stopping => Some("the runtime is shutting down"),
            RunState::Stopped => Some("the runtime has stopped"),
        }
    }
}

/// A runtime's health at one moment, from [`Health::report`](super::Health::report).
///
/// Serializes (with serde) to the JSON a probe endpoint returns; times are RFC 3339 strings in
/// UTC, absent times `null`:
///
/// ```json
/// {
///   "state": "running", "live": true, "ready": false,
///   "reasons": ["handler `index.search`: its last 3 claims failed: database error: …"],
///   "handlers": [{
///     "name": "index.search", "loops_expected": 2, "loops_alive": 2, "loops_stuck": 0,
///     "restarts": 0, "last_claim_at": "2026-12-14T09:30:12.345Z",
///     "claim_failures": 3, "last_claim_error": "database error: …"
///   }],
///   "projections": [{
///     "name": "order_totals", "alive": true, "restarts": 0, "leader": true,
///     "last_batch_at": "2026-12-14T09:30:12.101Z", "store_failures": 0, "batch_failures": 0,
///     "last_error": null
///   }]
/// }
/// ```
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// Where the runtime is in its life.
    pub state: RunState,
    /// Whether the runtime is running with every claim loop and projection loop alive, and no
    /// claim loop stuck (see [the rules](super#live)).
    pub live: bool,
    /// Whether it is live, and the store answers: every handler's last claim round trip and every
    /// projection's last store call succeeded (see [the rules](super#ready)).
    pub ready: bool,
    /// Why it is not live or not ready, one lower-case line each; empty when it is both.
    pub reasons: Vec<String>,
    /// One entry per handler this runtime runs, sorted by name.
    pub handlers: Vec<HandlerHealth>,
    /// One entry per projection this runtime runs, sorted by name.
    pub projections: Vec<ProjectionHealth>,
}

/// One handler's claim loops, in a [`HealthReport`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct HandlerHealth {
    /// The handler's stored name: its `#[event_handler(name = ...)]`, qualified by the runtime's
    /// namespace (`billing@on_order_placed`), as the metrics, the operations API and the
    /// command-line tool name it.
    pub name: String,
    /// The claim loops this process runs for it: its `concurrency`.
    pub loops_expected: u32,
    /// The claim loops alive: started, and not dead waiting for their restart.
    pub loops_alive: u32,
    /// The loops alive whose current step has overrun its limit (see [the rules](super#stuck)).
    pub loops_stuck: u32,
    /// How often a loop of the handler died and was started again.
    pub restarts: u64,
    /// When a claim round trip of the handler last succeeded (whether or not it claimed
    /// anything); `None` before the first.
    #[serde(serialize_with = "rfc3339")]
    pub last_claim_at: Option<SystemTime>,
    /// Claim round trips that failed since the last that succeeded: 0 when the store answers.
    pub claim_failures: u32,
    /// The error of the last claim round trip that failed, kept after the store recovers. Store
    /// errors only: no payload or event values.
    pub last_claim_error: Option<String>,
}

/// One projection's loop, in a [`HealthReport`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ProjectionHealth {
    /// The projection's stored name: its `#[projection(name = ...)]`, qualified by the runtime's
    /// namespace, as the metrics and the operations API name it.
    pub name: &'static str,
    /// Whether its loop is alive: started, and not dead waiting for its restart.
    pub alive: bool,
    /// How often its loop died and was started again.
    pub restarts: u64,
    /// Whether this process leads the projection (one process of the fleet does; the others
    /// follow, ready to take over).
    pub leader: bool,
    /// When this process, leading, last applied a batch or found nothing new to apply; `None`
    /// while it has not led.
    #[serde(serialize_with = "rfc3339")]
    pub last_batch_at: Option<SystemTime>,
    /// Store calls (leadership attempts, batch reads and commits) that failed since the store
    /// last answered: 0 when the store answers.
    pub store_failures: u32,
    /// Batches that failed in the projection since the last one applied (the checkpoint does not
    /// move; the batch is retried with backoff).
    pub batch_failures: u32,
    /// The last error, of the store or of a batch, kept after recovery.
    pub last_error: Option<String>,
}

/// Serializes a time as RFC 3339 (UTC, milliseconds), `None` as `null`.
fn rfc3339<S: Serializer>(time: &Option<SystemTime>, serializer: S) -> Result<S::Ok, S::Error> {
    match time {
        // Before 1970 only with a wall clock set wrong; humantime cannot print it.
        Some(time) if *time >= SystemTime::UNIX_EPOCH => {
            serializer.collect_str(&humantime::format_rfc3339_millis(*time))
        }
        _ => serializer.serialize_none(),
    }
}

/// `duration` for a reason's text: whole seconds from one second on (`2m 5s`), else
/// milliseconds.
fn short(duration: Duration) -> String {
    let rounded = if duration >= Duration::from_secs(1) {
        Duration::from_secs(duration.as_secs())
    } else {
        Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    };
    humantime::format_duration(rounded).to_string()
}

/// The report of `board` now.
pub(super) fn report(board: &HealthBoard) -> HealthReport {
    let state = RunState::from(board.phase());
    let running = state == RunState::Running;
    let mut not_live: Vec<String> = state.not_running().map(str::to_owned).into_iter().collect();
    let mut not_ready = Vec::new();
    let now = board.now();
    let handlers = board
        .handlers
        .iter()
        .map(|cell| handler(board, cell, now, running, &mut not_live, &mut not_ready))
        .collect();
    let projections = board
        .projections
        .iter()
        .map(|cell| projection(board, cell, running, &mut not_live, &mut not_ready))
        .collect();
    let live = not_live.is_empty();
    let ready = live && not_ready.is_empty();
    not_live.extend(not_ready);
    HealthReport {
        state,
        live,
        ready,
        reasons: not_live,
        handlers,
        projections,
    }
}

/// `cell`'s entry at `now`; while `running`, its problems go to `not_live` and `not_ready`.
fn handler(
    board: &HealthBoard,
    cell: &HandlerCell,
    now: Instant,
    running: bool,
    not_live: &mut Vec<String>,
    not_ready: &mut Vec<String>,
) -> HandlerHealth {
    let name = cell.stored_name.as_str();
    let loops_alive = cell.loops_alive();
    let loops_expected = u32::try_from(cell.loops.len()).unwrap_or(u32::MAX);
    let mut loops_stuck = 0;
    for (slot, loop_cell) in cell.loops.iter().enumerate() {
        if !loop_cell.alive.load(Ordering::Acquire) {
            continue;
        }
        let step = *lock(&loop_cell.step);
        if let Some(ran) = step.overrun(now) {
            loops_stuck += 1;
            if running {
                let limit = step.limit.map(short).unwrap_or_default();
                not_live.push(format!(
                    "handler `{name}`: claim loop {slot} is stuck in {} for {} (its limit is {limit})",
                    step.kind.describe(),
                    short(ran)
                ));
            }
        }
    }
    if running && loops_alive < loops_expected {
        not_live.push(format!(
            "handler `{name}`: {loops_alive} of {loops_expected} claim loops alive (a loop died and waits for its restart)"
        ));
    }
    let claims = lock(&cell.claims);
    if running {
        if claims.failures > 0 {
            let error = claims.last_error.as_deref().unwrap_or("unknown error");
            not_ready.push(match claims.failures {
                1 => format!("handler `{name}`: its last claim failed: {error}"),
                n => format!("handler `{name}`: its last {n} claims failed: {error}"),
            });
        } else if claims.last_success.is_none() {
            not_ready.push(format!(
                "handler `{name}`: no claim round trip has succeeded yet"
            ));
        }
    }
    HandlerHealth {
        name: name.to_owned(),
        loops_expected,
        loops_alive,
        loops_stuck,
        restarts: cell.restarts.load(Ordering::Relaxed),
        last_claim_at: claims.last_success.map(|at| board.wall(at)),
        claim_failures: claims.failures,
        last_claim_error: claims.last_error.clone(),
    }
}

/// `cell`'s entry; while `running`, its problems go to `not_live` and `not_ready`.
fn projection(
    board: &HealthBoard,
    cell: &ProjectionCell,
    running: bool,
    not_live: &mut Vec<String>,
    not_ready: &mut Vec<String>,
) -> ProjectionHealth {
    let name = cell.stored_name;
    let alive = cell.alive.load(Ordering::Acquire);
    if running && !alive {
        not_live.push(format!(
            "projection `{name}`: its loop is not alive (it died and waits for its restart)"
        ));
    }
    let record = lock(&cell.record);
    if running {
        if record.store_failures > 0 {
            let error = record.last_error.as_deref().unwrap_or("unknown error");
            not_ready.push(match record.store_failures {
                1 => format!("projection `{name}`: its last store call failed: {error}"),
                n => format!("projection `{name}`: its last {n} store calls failed: {error}"),
            });
        } else if !record.answered {
            not_ready.push(format!(
                "projection `{name}`: the store has not answered it yet"
            ));
        }
    }
    ProjectionHealth {
        name,
        alive,
        restarts: cell.restarts.load(Ordering::Relaxed),
        leader: record.leader,
        last_batch_at: record.last_batch.map(|at| board.wall(at)),
        store_failures: record.store_failures,
        batch_failures: record.batch_failures,
        last_error: record.last_error.clone(),
    }
}
