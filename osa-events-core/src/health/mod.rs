//! Health for probes: whether a runtime is live and ready, from [`Runtime::health`].
//!
//! Take the [`Health`] handle before [`Runtime::run`] consumes the runtime, and give it to the
//! probe endpoints (Kubernetes' `livenessProbe` and `readinessProbe`, a load balancer's health
//! check). [`Health::report`] reads what the runtime's loops record as they go (a few locks and
//! atomics per claim round trip or projection batch, never per event) and never queries the
//! store, so a probe costs microseconds and answers when the database does not.
//!
//! # Live
//!
//! The runtime is running ([`RunState::Running`]: [`run`](crate::Runtime::run) registered the
//! subscriptions and started every loop, and shutdown has not begun), every claim loop and every
//! projection loop is alive, and no claim loop is stuck. A loop that died (a panic in a store, a
//! clock, or a loop that returned before shutdown) is not alive while it waits for its
//! supervised restart (100 ms after a first death, doubling with each death in a row, at most
//! 30 s), and alive again once restarted. A process that is not live should be restarted.
//!
//! # Stuck
//!
//! A claim loop goes round three steps, each with a limit fixed as it begins; a loop is stuck
//! when its current step has run longer than its limit:
//!
//! | step | stuck once it has run longer than |
//! | --- | --- |
//! | claim round trip (with the previous batch's completions, if any) | the slack |
//! | batch (lingering, handler calls, writing the outcomes) of a handler with a `timeout` and without `Tx` | `linger` + calls × `timeout` + the slack |
//! | batch of a handler without a `timeout`, or taking `Tx` | never |
//! | wait (idle for `poll`, or pausing after a failed claim) | the wait + the slack |
//!
//! The slack is twice the handler's `claim_timeout`, at least one minute. Calls are `batch` for
//! a per-event handler, 1 for a batch handler. A handler without a `timeout` may rightly run for
//! hours (the heartbeat keeps its claims, and cancels the call when it cannot), and one taking
//! `Tx` waits for a database connection for as long as the heartbeat keeps its claims: time
//! alone cannot tell a stuck batch of theirs from a long one. The limits are generous on
//! purpose: a failed liveness probe gets the process restarted, which a slow database must not
//! cause. Projection loops are judged alive or not; they have no stuck rule.
//!
//! # Ready
//!
//! Live, and the store answers:
//! - every handler's most recent claim round trip succeeded (whether it claimed anything or not).
//!   An idle loop claims at least every `poll`, so this is fresh; before a handler's first
//!   successful claim the runtime is not ready;
//! - every projection's most recent store call (a leadership attempt, a batch read or commit)
//!   succeeded, and the store has answered it at least once. A projection batch that fails in the
//!   projection's own code is retried and shown, but does not make the runtime unready: the store
//!   answered.
//!
//! A runtime that is live but not ready is working as designed and waits for its database: it
//! retries its claims with a growing pause (at most the larger of `poll` and 5 s) and becomes
//! ready with the first claim that succeeds. Do not restart it for that.
//!
//! Before `run`, while it registers the subscriptions, once shutdown began and after it returned,
//! the runtime is neither live nor ready, and [`HealthReport::reasons`] says why.
//!
//! # Times
//!
//! Times in the report are wall-clock times measured with the runtime's [`Clock`](crate::Clock):
//! the wall time when the runtime was built plus the runtime clock's time since. Under a fake
//! clock they move with it.
//!
//! # Examples
//!
//! A probe endpoint answers 200 when ready and 503 otherwise, with the report as its body (here
//! with no HTTP framework; the repository's `examples/observability.rs` serves it with axum):
//!
//! ```no_run
//! # async fn example(store: osa_events::PgStore) -> Result<(), osa_events::Error> {
//! use osa_events::Runtime;
//! use osa_events::health::Health;
//!
//! /// The status code and JSON body of `GET /health`.
//! fn probe(health: &Health) -> (u16, String) {
//!     let report = health.report();
//!     let status = if report.ready { 200 } else { 503 };
//!     (status, serde_json::to_string(&report).expect("a report serializes"))
//! }
//!
//! let runtime = Runtime::builder(store).build()?;
//! let health = runtime.health(); // before `run` takes the runtime
//! assert_eq!(probe(&health).0, 503); // not started yet
//! tokio::spawn(async move {
//!     // serve `probe(&health)` on your HTTP server
//! #   let _ = probe(&health);
//! });
//! runtime.run().await
//! # }
//! ```
//!
//! [`Runtime::health`]: crate::Runtime::health
//! [`Runtime::run`]: crate::Runtime::run

mod board;
pub(crate) mod loop_metrics;
mod report;
mod stuck;

use std::sync::Arc;

pub(crate) use board::{ClaimLoopWatch, HealthBoard, Phase, ProjectionWatch};
pub use report::{HandlerHealth, HealthReport, ProjectionHealth, RunState};

/// A handle on a runtime's health, from [`Runtime::health`](crate::Runtime::health): what a
/// liveness or readiness probe reads.
///
/// Cheap to clone (one `Arc`), `Send + Sync`, and valid for the process's life: before
/// [`run`](crate::Runtime::run), while it runs and after it returned. See [the module's
/// docs](self) for what live and ready mean, and an example.
#[derive(Debug, Clone)]
pub struct Health {
    board: Arc<HealthBoard>,
}

impl Health {
    pub(crate) fn new(board: Arc<HealthBoard>) -> Self {
        Self { board }
    }

    /// The runtime's health now: live, ready, why not, and each handler's and projection's
    /// loops. Reads only what the loops recorded (no store query): microseconds.
    pub fn report(&self) -> HealthReport {
        report::report(&self.board)
    }
}

/// Moves the board to [`Phase::Stopped`] when dropped: when `run` returns, by error or not, and
/// when its future is dropped.
pub(crate) struct StoppedOnDrop(pub(crate) Arc<HealthBoard>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.enter(Phase::Stopped);
    }
}
