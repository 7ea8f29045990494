//! Not public API: driving handlers one claim-loop iteration at a time, for the harness and the
//! deterministic simulator of `osa-events-testing`.
//!
//! [`Runtime::run`](crate::Runtime::run) spawns every claim loop on tokio and lets them go. A test
//! that must control time and interleaving takes a [`Stepper`] from `Runtime::into_stepper`
//! instead, and either runs single iterations ([`Stepper::step`]) or polls the real claim loops
//! itself, in an order it chooses ([`Stepper::claim_loop`]). Both run the code the runtime runs:
//! the claim, the handler calls under a heartbeat, the fenced writes of the outcomes. Only the
//! scheduling is the caller's, and the retry jitter is seeded so that retry delays repeat.

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Worker;
use super::backoff::Jitter;
use super::fatal::FatalStop;
use crate::handler::{HandlerSpec, Invoker};
use crate::health::HealthBoard;
use crate::metrics::HandlerMetrics;
use crate::projection::runner::{BatchError, apply_next_batch};
use crate::projection::{Leadership, ProjectionSpec};
use crate::store::{Delivery, Failure, Fence, Store, SubscriptionId};
use crate::{Clock, Error, Result};

/// Not public API: a runtime's handlers, for a test to drive with its own scheduling, built by
/// `Runtime::into_stepper`: single claim-loop iterations ([`step`](Self::step)), or the real
/// claim loops to poll in an order the test chooses ([`claim_loop`](Self::claim_loop)).
pub struct Stepper {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    instance: String,
    handlers: Vec<Stepped>,
    projections: Vec<SteppedProjection>,
}

struct SteppedProjection {
    spec: ProjectionSpec,
    /// The name in the store: the spec's, qualified by the runtime's namespace.
    stored_name: &'static str,
    invoker: Arc<Invoker>,
    /// Taken at the first [`Stepper::project`], kept until the store fails.
    leadership: Option<Box<dyn Leadership>>,
    /// Failed batches in a row: the next batch's attempt is one more.
    failures: u32,
}

/// Not public API: what one [`Stepper::project`] did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ProjectionStep {
    /// How many events the batch applied and committed: 0 when the projection has caught up, or
    /// when the batch failed.
    pub applied: usize,
    /// Why the batch failed (recorded as the projection's last error); its checkpoint did not
    /// move.
    pub failed: Option<String>,
}

struct Stepped {
    spec: HandlerSpec,
    invoker: Arc<Invoker>,
    subscription: SubscriptionId,
    /// The subscription's name (the handler's, qualified by the namespace).
    stored_name: String,
    /// The retry jitter of [`Stepper::step`], carried from one step to the next.
    jitter: Jitter,
}

/// Not public API: what one [`Stepper::step`] did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StepReport {
    /// The deliveries claimed, in claim order (over several claims when the handler lingered);
    /// empty when nothing was due.
    pub claimed: Vec<Delivery>,
    /// The fences of the deliveries whose handler succeeded, whose completion was sent.
    pub completed: Vec<Fence>,
    /// How many of those completions the store accepted: fewer than `completed.len()` when
    /// claims were taken over while the handler ran.
    pub completions_written: u64,
    /// The fences of the deliveries completed inside a `Tx` handler's transaction, which
    /// committed (not in `completed`: there is nothing left to write).
    pub completed_in_tx: Vec<Fence>,
    /// The fences of the deliveries whose `Tx` handler succeeded, but whose claim was taken over
    /// before its transaction completed it: the transaction was rolled back.
    pub refused_in_tx: Vec<Fence>,
    /// The failed attempts recorded: retries (`retry_in` is `Some`) and dead letters, and the
    /// deferrals (a newer event version, a handler's `HandlerError::retry_after`), which are
    /// written with the attempt not counted and a `retry_in`.
    pub failures: Vec<Failure>,
    /// The fences of the deliveries given back because the handler failed fatally: the fatal
    /// call's (pending and due now, the attempt not counted, the error kept as the last error)
    /// and those of the claim the handler was not yet called for (released).
    pub given_back: Vec<Fence>,
    /// The handler's fatal error ([`Error::Fatal`]), when it returned `HandlerError::fatal`: what
    /// [`Runtime::run`](crate::Runtime::run) would return after stopping. The step's completions
    /// are written as usual; what the runtime would have stopped is the caller's to stop.
    pub fatal: Option<Arc<Error>>,
}

impl Stepper {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        instance: String,
        handlers: Vec<(HandlerSpec, Arc<Invoker>, SubscriptionId, String)>,
        projections: Vec<(ProjectionSpec, &'static str, Arc<Invoker>)>,
        jitter_seed: u64,
    ) -> Self {
        let handlers = handlers
            .into_iter()
            .map(|(spec, invoker, subscription, stored_name)| Stepped {
                spec,
                invoker,
                subscription,
                stored_name,
                jitter: Jitter::new(jitter_seed ^ name_hash(spec.name())),
            })
            .collect();
        let projections = projections
            .into_iter()
            .map(|(spec, stored_name, invoker)| SteppedProjection {
                spec,
                stored_name,
                invoker,
                leadership: None,
                failures: 0,
            })
            .collect();
        Self {
            store,
            clock,
            instance,
            handlers,
            projections,
        }
    }

    /// The projections, sorted by name.
    pub fn projections(&self) -> impl Iterator<Item = &ProjectionSpec> {
        self.projections.iter().map(|projection| &projection.spec)
    }

    /// Applies the next batch of projection `name`, as its runner would: leads it first if this
    /// stepper does not yet, applies and commits one batch, or records why it failed.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownHandler`] when this stepper has no such projection,
    /// [`Error::NotLeader`] when another instance leads it, the store's error when reading or
    /// committing fails (the leadership is then given up, and the next call leads again).
    pub async fn project(&mut self, name: &str) -> Result<ProjectionStep> {
        let index = self
            .projections
            .iter()
            .position(|projection| projection.spec.name() == name)
            .ok_or_else(|| Error::UnknownHandler {
                name: name.to_owned(),
                known: self
                    .projections
                    .iter()
                    .map(|projection| projection.spec.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let store = self
            .store
            .projections()
            .ok_or_else(|| Error::Config("this store runs no projections".into()))?;
        let projection = &mut self.projections[index];
        let spec = projection.spec;
        if projection.leadership.is_none() {
            projection.leadership = store
                .try_lead(
                    projection.stored_name,
                    &self.instance,
                    std::time::Duration::ZERO,
                )
                .await?;
        }
        let Some(leadership) = projection.leadership.as_mut() else {
            return Err(Error::NotLeader {
                projection: spec.name().to_owned(),
            });
        };
        let attempt = projection.failures.saturating_add(1);
        let clock = Arc::clone(&self.clock);
        match apply_next_batch(
            &spec,
            &projection.invoker,
            &mut **leadership,
            attempt,
            &*clock,
        )
        .await
        {
            Ok(applied) => {
                projection.failures = 0;
                Ok(ProjectionStep {
                    applied,
                    failed: None,
                })
            }
            Err(BatchError::Failed(error)) => {
                projection.failures = attempt;
                leadership
                    .record_failure(&crate::store::storable_text(&error))
                    .await?;
                Ok(ProjectionStep {
                    applied: 0,
                    failed: Some(error),
                })
            }
            Err(BatchError::Store(error)) => {
                projection.leadership = None;
                Err(error)
            }
        }
    }

    /// The handlers and their subscriptions, sorted by name.
    pub fn handlers(&self) -> impl Iterator<Item = (&HandlerSpec, SubscriptionId)> {
        self.handlers
            .iter()
            .map(|handler| (&handler.spec, handler.subscription))
    }

    /// One iteration of `handler`'s claim loop: claims a batch of due deliveries, runs the handler
    /// on it under a heartbeat, writes the failures and then the completions (alone, not with a
    /// next claim). Returns at once with an empty report when nothing is due.
    ///
    /// A batch handler with `linger` lingers after a short claim as its claim loop does, on the
    /// runtime's clock; no wake-up hint comes, so it claims once more when the linger is over.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownHandler`] when this stepper has no such handler; the store's error when the
    /// claim or the completion fails. A handler's fatal error is not an error of the step: it is
    /// in the report's [`fatal`](StepReport::fatal).
    pub async fn step(&mut self, handler: &str) -> Result<StepReport> {
        let index = self.index(handler)?;
        backfill(
            Arc::clone(&self.store),
            self.handlers[index].stored_name.clone(),
        )
        .await?;
        let (mut worker, _hints) = self.worker(index, format!("{}/{handler}#step", self.instance));
        let jitter = &mut self.handlers[index].jitter;
        let claimed_at = worker.clock.now();
        let mut claimed = worker.claim(&[], worker.spec.batch()).await?;
        if claimed.is_empty() {
            return Ok(StepReport::default());
        }
        if worker.lingers_after(claimed.len()) {
            worker.linger(&mut claimed, claimed_at).await;
        }
        let processed = worker.process(claimed.clone(), claimed_at, jitter).await;
        let completions_written = if processed.completed.is_empty() {
            0
        } else {
            let written = worker
                .store
                .complete(worker.subscription, &processed.completed)
                .await?;
            worker.check_completed(processed.completed.len(), written);
            written
        };
        Ok(StepReport {
            claimed,
            completed: processed.completed,
            completions_written,
            completed_in_tx: processed.completed_in_tx,
            refused_in_tx: processed.refused_in_tx,
            failures: processed.failures,
            given_back: processed.given_back,
            fatal: worker.fatal.take().map(Arc::new),
        })
    }

    /// The real claim loop of `handler`, named `worker` in `claimed_by`, for the caller to poll:
    /// it claims, runs the handler under a heartbeat, completes the batch with the next claim,
    /// and sleeps `poll` on the runtime's clock when idle, forever (there are no wake-up hints),
    /// or until its handler fails fatally (`HandlerError::fatal`): then it gives that call's
    /// deliveries back, writes its completions and ends, as it would in a stopping runtime.
    /// Dropping it is what a crash does: nothing is released, the claims expire.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownHandler`] when this stepper has no such handler.
    pub fn claim_loop(
        &self,
        handler: &str,
        worker: &str,
        jitter_seed: u64,
    ) -> Result<BoxFuture<'static, ()>> {
        let index = self.index(handler)?;
        let (worker, hints) = self.worker(index, worker.to_owned());
        let jitter = Jitter::new(jitter_seed);
        Ok(Box::pin(async move {
            let _hints = hints;
            worker.run_with(jitter).await;
        }))
    }

    fn index(&self, handler: &str) -> Result<usize> {
        self.handlers
            .iter()
            .position(|stepped| stepped.spec.name() == handler)
            .ok_or_else(|| Error::UnknownHandler {
                name: handler.to_owned(),
                known: self
                    .handlers
                    .iter()
                    .map(|stepped| stepped.spec.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// A worker of handler `index`, with the sender of its wake-up channel. No hint is ever sent,
    /// so an idle loop waits its poll interval; keep the sender while the worker runs, or `idle`
    /// takes another (equally timed) path.
    fn worker(&self, index: usize, name: String) -> (Worker, watch::Sender<u64>) {
        let handler = &self.handlers[index];
        let (hints, wake) = watch::channel(0);
        let stopping = CancellationToken::new();
        let worker = Worker {
            spec: handler.spec,
            subscription: handler.subscription,
            invoker: Arc::clone(&handler.invoker),
            store: Arc::clone(&self.store),
            clock: Arc::clone(&self.clock),
            name,
            wake,
            fatal: FatalStop::new(stopping.clone()),
            stopping,
            aborting: CancellationToken::new(),
            health: HealthBoard::detached_claim_loop(handler.spec, Arc::clone(&self.clock)),
            // Stepped claim loops have no upkeep to flush an activity history: a counter of
            // their own, never read.
            metrics: HandlerMetrics::new(
                &handler.stored_name,
                Arc::clone(&self.clock),
                Arc::default(),
            ),
        };
        (worker, hints)
    }
}

impl fmt::Debug for Stepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.handlers.iter().map(|h| h.spec.name()).collect();
        let projections: Vec<&str> = self.projections().map(ProjectionSpec::name).collect();
        f.debug_struct("Stepper")
            .field("instance", &self.instance)
            .field("handlers", &names)
            .field("projections", &projections)
            .finish_non_exhaustive()
    }
}

/// FNV-1a: a stable hash of a handler's name, so that each handler's jitter has its own sequence
/// and adding a handler does not change the others'.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Copies what `handler`'s backfill can copy now (see
/// [`Operations::backfill`](crate::operations::Operations::backfill)), as the runtime's upkeep
/// does between claims: a handler that starts from its history receives it in the harness too.
/// Takes what it needs by value, so a step's future holds no borrow of the stepper.
async fn backfill(store: Arc<dyn Store>, handler: String) -> Result<()> {
    let Some(operations) = store.operations() else {
        return Ok(());
    };
    while let crate::operations::BackfillStep::Copied { .. } =
        operations.backfill(&handler, 1_000).await?
    {}
    Ok(())
}
