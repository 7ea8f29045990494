//! The board the loops write and a probe reads: where the runtime is in its life, one cell per
//! handler (with one per claim loop) and one per projection.
//!
//! Loops write through their watch ([`ClaimLoopWatch`], [`ProjectionWatch`]): a few uncontended
//! locks and atomics per claim round trip or projection batch, never per event, and never a store
//! query. A probe only reads.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::loop_metrics::{self, LoopMetrics};
use super::stuck::{self, Step, StepKind};
use crate::handler::HandlerSpec;
use crate::projection::ProjectionSpec;
use crate::worker::supervise::Watched;
use crate::{Clock, Error};

/// Where the runtime is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Built; [`Runtime::run`](crate::Runtime::run) not called yet.
    NotStarted = 0,
    /// In `run`, registering the subscriptions and starting the loops.
    Starting = 1,
    /// Every loop started.
    Running = 2,
    /// Shutdown began: no new claims, running handlers finishing.
    Stopping = 3,
    /// `run` returned (or its future was dropped).
    Stopped = 4,
}

impl Phase {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Phase::NotStarted,
            1 => Phase::Starting,
            2 => Phase::Running,
            3 => Phase::Stopping,
            _ => Phase::Stopped,
        }
    }
}

/// The shared state of one runtime's health.
pub(crate) struct HealthBoard {
    clock: Arc<dyn Clock>,
    /// The runtime clock's instant and the wall clock's time when the board was made: report
    /// times are the wall time then plus the runtime clock's time since.
    epoch: Instant,
    epoch_wall: SystemTime,
    phase: AtomicU8,
    pub(super) handlers: Box<[HandlerCell]>,
    pub(super) projections: Box<[ProjectionCell]>,
}

/// One handler's cell.
pub(super) struct HandlerCell {
    pub(super) spec: HandlerSpec,
    /// The subscription's name (qualified by the namespace): the metrics' `handler` label.
    pub(super) stored_name: String,
    /// Whether the handler takes a `Tx` (its batches have no time limit, see [`stuck`]).
    transactional: bool,
    pub(super) loops: Box<[LoopCell]>,
    pub(super) claims: Mutex<ClaimRecord>,
    pub(super) restarts: AtomicU64,
    /// Held while the loops gauge is computed and set, so concurrent updates cannot leave an
    /// older count behind.
    gauge: Mutex<()>,
}

/// The claims of one handler, over all its loops.
#[derive(Default)]
pub(super) struct ClaimRecord {
    pub(super) last_success: Option<Instant>,
    /// Failed claim round trips since the last that succeeded.
    pub(super) failures: u32,
    pub(super) last_error: Option<String>,
}

/// One claim loop's cell.
pub(super) struct LoopCell {
    pub(super) alive: AtomicBool,
    pub(super) step: Mutex<Step>,
}

/// One projection's cell.
pub(super) struct ProjectionCell {
    pub(super) spec: ProjectionSpec,
    /// The checkpoint's name (qualified by the namespace), as the report names it.
    pub(super) stored_name: &'static str,
    pub(super) alive: AtomicBool,
    pub(super) restarts: AtomicU64,
    pub(super) record: Mutex<ProjectionRecord>,
}

/// What one projection's loop last did.
#[derive(Default)]
pub(super) struct ProjectionRecord {
    pub(super) leader: bool,
    /// Whether the store has answered the loop at least once.
    pub(super) answered: bool,
    pub(super) last_batch: Option<Instant>,
    /// Failed store calls (leadership attempts, batch reads and commits) since the last answer.
    pub(super) store_failures: u32,
    /// Failed batches (the projection failed, the store answered) since the last applied one.
    pub(super) batch_failures: u32,
    pub(super) last_error: Option<String>,
}

/// Locks `mutex`, whether or not a panicking writer poisoned it: every value it guards is
/// consistent after any single write.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where the runtime is, and what it runs; not the loops' records.
impl std::fmt::Debug for HealthBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthBoard")
            .field("phase", &self.phase())
            .field(
                "handlers",
                &self
                    .handlers
                    .iter()
                    .map(|h| h.spec.name())
                    .collect::<Vec<_>>(),
            )
            .field(
                "projections",
                &self
                    .projections
                    .iter()
                    .map(|p| p.spec.name())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl HealthBoard {
    /// A board for `handlers` (each with its stored name and whether it takes a `Tx`) and
    /// `projections`, in the runtime's order, before `run`.
    pub(crate) fn new(
        clock: Arc<dyn Clock>,
        handlers: impl IntoIterator<Item = (HandlerSpec, String, bool)>,
        projections: impl IntoIterator<Item = (ProjectionSpec, &'static str)>,
    ) -> Self {
        let epoch = clock.now();
        let handlers = handlers
            .into_iter()
            .map(|(spec, stored_name, transactional)| HandlerCell {
                spec,
                stored_name,
                transactional,
                loops: (0..spec.concurrency())
                    .map(|_| LoopCell {
                        alive: AtomicBool::new(false),
                        step: Mutex::new(Step::new(StepKind::Starting, epoch, None)),
                    })
                    .collect(),
                claims: Mutex::new(ClaimRecord::default()),
                restarts: AtomicU64::new(0),
                gauge: Mutex::new(()),
            })
            .collect();
        let projections = projections
            .into_iter()
            .map(|(spec, stored_name)| ProjectionCell {
                spec,
                stored_name,
                alive: AtomicBool::new(false),
                restarts: AtomicU64::new(0),
                record: Mutex::new(ProjectionRecord::default()),
            })
            .collect();
        Self {
            clock,
            epoch,
            epoch_wall: SystemTime::now(),
            phase: AtomicU8::new(Phase::NotStarted as u8),
            handlers,
            projections,
        }
    }

    /// A board of its own for one claim loop of `spec`, which no probe reads: for the claim
    /// loops the test-util stepper drives.
    #[cfg(feature = "test-util")]
    pub(crate) fn detached_claim_loop(spec: HandlerSpec, clock: Arc<dyn Clock>) -> ClaimLoopWatch {
        let board = Arc::new(Self::new(
            clock,
            [(spec, spec.name().to_owned(), false)],
            [],
        ));
        ClaimLoopWatch {
            board,
            handler: 0,
            slot: 0,
            metrics: LoopMetrics::noop(),
        }
    }

    pub(super) fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The wall-clock time of `instant` of the runtime's clock.
    pub(super) fn wall(&self, instant: Instant) -> SystemTime {
        self.epoch_wall + instant.saturating_duration_since(self.epoch)
    }

    pub(super) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Moves the runtime to `phase`.
    pub(crate) fn enter(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Marks claim loop `slot` of handler `handler` alive, as the runtime starts it, and
    /// returns its watch, with its metrics resolved (once for the loop's life).
    pub(crate) fn start_claim_loop(
        self: &Arc<Self>,
        handler: usize,
        slot: usize,
    ) -> ClaimLoopWatch {
        let watch = ClaimLoopWatch {
            board: Arc::clone(self),
            handler,
            slot,
            metrics: LoopMetrics::resolve(&self.handlers[handler].stored_name),
        };
        watch.set_alive(true);
        watch
    }

    /// Marks projection `index`'s loop alive, as the runtime starts it, and returns its watch.
    pub(crate) fn start_projection(self: &Arc<Self>, index: usize) -> ProjectionWatch {
        self.projections[index].alive.store(true, Ordering::Release);
        ProjectionWatch {
            board: Arc::clone(self),
            index,
        }
    }

    /// Sets every handler's loops gauge to its loops alive now.
    pub(super) fn publish_loop_gauges(&self) {
        for cell in &self.handlers {
            cell.publish_loops();
        }
    }
}

impl HandlerCell {
    /// How many of the handler's claim loops are alive.
    pub(super) fn loops_alive(&self) -> u32 {
        let alive = self
            .loops
            .iter()
            .filter(|cell| cell.alive.load(Ordering::Acquire))
            .count();
        u32::try_from(alive).unwrap_or(u32::MAX)
    }

    fn publish_loops(&self) {
        let _one_at_a_time = lock(&self.gauge);
        loop_metrics::set_loops(&self.stored_name, self.loops_alive());
    }
}

/// What one claim loop tells the board: its steps, its claims, its deaths and restarts.
#[derive(Clone)]
pub(crate) struct ClaimLoopWatch {
    board: Arc<HealthBoard>,
    handler: usize,
    slot: usize,
    metrics: LoopMetrics,
}

impl ClaimLoopWatch {
    fn cell(&self) -> &HandlerCell {
        &self.board.handlers[self.handler]
    }

    fn enter(&self, kind: StepKind, limit: Option<Duration>) {
        let step = Step::new(kind, self.board.now(), limit);
        *lock(&self.cell().loops[self.slot].step) = step;
    }

    /// A claim round trip begins.
    pub(crate) fn claiming(&self) {
        self.enter(StepKind::Claiming, Some(stuck::slack(&self.cell().spec)));
    }

    /// The claim round trip returned deliveries: their batch begins.
    pub(crate) fn processing(&self) {
        let cell = self.cell();
        self.enter(
            StepKind::Batch,
            stuck::batch_limit(&cell.spec, cell.transactional),
        );
    }

    /// The loop waits `wait` (idle, or after a failed claim).
    pub(crate) fn waiting(&self, wait: Duration) {
        self.enter(
            StepKind::Waiting,
            Some(stuck::wait_limit(&self.cell().spec, wait)),
        );
    }

    /// A claim round trip succeeded.
    pub(crate) fn claim_succeeded(&self) {
        let now = self.board.now();
        let mut claims = lock(&self.cell().claims);
        claims.last_success = Some(now);
        claims.failures = 0;
    }

    /// A claim round trip failed with `error`.
    pub(crate) fn claim_failed(&self, error: &Error) {
        self.metrics.claim_failed();
        let mut claims = lock(&self.cell().claims);
        claims.failures = claims.failures.saturating_add(1);
        claims.last_error = Some(error.to_string());
    }

    fn set_alive(&self, alive: bool) {
        let cell = self.cell();
        cell.loops[self.slot].alive.store(alive, Ordering::Release);
        cell.publish_loops();
    }
}

impl Watched for ClaimLoopWatch {
    fn died(&self) {
        self.set_alive(false);
    }

    fn restarted(&self) {
        self.enter(StepKind::Starting, None);
        self.cell().restarts.fetch_add(1, Ordering::Relaxed);
        self.metrics.restarted();
        self.set_alive(true);
    }

    fn stopped(&self) {
        self.set_alive(false);
    }
}

/// What one projection's loop tells the board: leadership, batches, store answers, deaths.
#[derive(Clone)]
pub(crate) struct ProjectionWatch {
    board: Arc<HealthBoard>,
    index: usize,
}

impl ProjectionWatch {
    fn cell(&self) -> &ProjectionCell {
        &self.board.projections[self.index]
    }

    fn record(&self) -> MutexGuard<'_, ProjectionRecord> {
        lock(&self.cell().record)
    }

    /// The store answered a leadership attempt: this process now leads the projection or not.
    pub(crate) fn leading(&self, leader: bool) {
        let mut record = self.record();
        record.leader = leader;
        record.answered = true;
        record.store_failures = 0;
    }

    /// The process gave the leadership up (lost, or at shutdown).
    pub(crate) fn resigned(&self) {
        self.record().leader = false;
    }

    /// A batch was applied, or the projection found nothing new to apply.
    pub(crate) fn applied(&self) {
        let now = self.board.now();
        let mut record = self.record();
        record.last_batch = Some(now);
        record.answered = true;
        record.store_failures = 0;
        record.batch_failures = 0;
    }

    /// A batch failed in the projection (the store answered): `error` says why.
    pub(crate) fn batch_failed(&self, error: &str) {
        let mut record = self.record();
        record.answered = true;
        record.store_failures = 0;
        record.batch_failures = record.batch_failures.saturating_add(1);
        record.last_error = Some(error.to_owned());
    }

    /// A store call of the projection failed with `error`.
    pub(crate) fn store_failed(&self, error: &Error) {
        let mut record = self.record();
        record.store_failures = record.store_failures.saturating_add(1);
        record.last_error = Some(error.to_string());
    }
}

impl Watched for ProjectionWatch {
    fn died(&self) {
        self.cell().alive.store(false, Ordering::Release);
        self.resigned();
    }

    fn restarted(&self) {
        self.cell().restarts.fetch_add(1, Ordering::Relaxed);
        self.cell().alive.store(true, Ordering::Release);
    }

    fn stopped(&self) {
        self.cell().alive.store(false, Ordering::Release);
        self.resigned();
    }
}
