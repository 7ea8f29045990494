//! `osa-chaos publish`: many concurrent publishers, each publishing batches in its own
//! transaction, riding out database errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use osa_events::Outgoing;
use osa_events_suite::chaos_events;
use osa_events_testing::Rng;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// What to publish, and how fast.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// The first event's `seq`.
    pub(crate) first: i64,
    /// How many events.
    pub(crate) events: i64,
    /// Concurrent publishing tasks.
    pub(crate) publishers: usize,
    /// Events per transaction.
    pub(crate) batch: usize,
    /// Events per second over all publishers; 0 for as fast as possible.
    pub(crate) rate: f64,
    /// Filler bytes per event.
    pub(crate) pad: usize,
    /// How long each transaction stays open after its publish, as if the application did more
    /// work in it before committing.
    pub(crate) hold: Duration,
    /// Up to this much longer, different for each transaction (fixed by its first event), so
    /// that concurrent transactions commit in another order than they began.
    pub(crate) hold_jitter: Duration,
}

impl Plan {
    /// How long the transaction whose first event is `first` stays open.
    fn hold_for(&self, first: i64) -> Duration {
        // A well-spread fraction of the jitter per transaction, the same on every run.
        self.hold + self.hold_jitter.mul_f64(Rng::new(first as u64).unit())
    }
}

/// What the publishers did, printed on stdout for the test to read.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Events the store reported as new (a batch whose commit failed ambiguously and was
    /// republished may count as 0 the second time: its events already existed).
    pub(crate) published: AtomicU64,
    /// Transactions committed.
    pub(crate) batches: AtomicU64,
    /// Failed attempts that were retried.
    pub(crate) retries: AtomicU64,
}

/// Publishes `plan.events` events with deterministic ids, retrying every failed transaction with
/// capped exponential backoff until it commits. Once `stop` is cancelled no publisher starts
/// another transaction; those under way still commit.
///
/// # Errors
///
/// The first error no retry can fix: a statement the database refuses outright (SQLSTATE class 42,
/// e.g. a missing privilege) or an authentication failure (class 28).
pub(crate) async fn run(
    pool: PgPool,
    plan: Plan,
    stop: CancellationToken,
) -> Result<Arc<Summary>, osa_events::Error> {
    let summary = Arc::new(Summary::default());
    let next = Arc::new(AtomicI64::new(plan.first));
    let started = Instant::now();
    let tasks: Vec<_> = (0..plan.publishers.max(1))
        .map(|_| {
            let pool = pool.clone();
            let next = Arc::clone(&next);
            let summary = Arc::clone(&summary);
            let stop = stop.clone();
            tokio::spawn(async move {
                let end = plan.first + plan.events;
                loop {
                    let start = next.fetch_add(plan.batch as i64, Ordering::SeqCst);
                    if start >= end || stop.is_cancelled() {
                        return Ok::<(), osa_events::Error>(());
                    }
                    if plan.rate > 0.0 {
                        let due = started
                            + Duration::from_secs_f64((start - plan.first) as f64 / plan.rate);
                        tokio::select! {
                            () = tokio::time::sleep_until(due.into()) => {}
                            () = stop.cancelled() => return Ok(()),
                        }
                    }
                    let batch: Vec<Outgoing> = (start..end.min(start + plan.batch as i64))
                        .map(|seq| chaos_events::item(seq, plan.pad))
                        .collect();
                    publish_until_committed(&pool, &batch, plan.hold_for(start), &summary).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a publisher task panicked")?;
    }
    Ok(summary)
}

async fn publish_until_committed(
    pool: &PgPool,
    batch: &[Outgoing],
    hold: Duration,
    summary: &Summary,
) -> Result<(), osa_events::Error> {
    let mut failures: u32 = 0;
    loop {
        match publish_once(pool, batch, hold).await {
            Ok(published) => {
                summary.published.fetch_add(published, Ordering::Relaxed);
                summary.batches.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(error) if is_fatal(&error) => return Err(error),
            Err(error) => {
                failures += 1;
                summary.retries.fetch_add(1, Ordering::Relaxed);
                let pause =
                    Duration::from_millis(50 << failures.min(5)).min(Duration::from_secs(2));
                tracing::warn!(%error, attempt = failures, retry_in = ?pause, "publish failed; retrying the batch with the same event ids");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Refused outright (class 42: syntax or access rule violation) or not authenticated (class 28):
/// retrying would fail the same way.
fn is_fatal(error: &osa_events::Error) -> bool {
    match error.backend::<sqlx::Error>() {
        Some(sqlx::Error::Database(error)) => error
            .code()
            .is_some_and(|code| code.starts_with("42") || code.starts_with("28")),
        _ => false,
    }
}

async fn publish_once(
    pool: &PgPool,
    batch: &[Outgoing],
    hold: Duration,
) -> Result<u64, osa_events::Error> {
    let mut tx = pool.begin().await?;
    let published = osa_events::publish_batch(&mut *tx, batch).await?;
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    tx.commit().await?;
    Ok(published.events)
}
