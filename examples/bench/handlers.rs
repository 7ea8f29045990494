//! The no-op handlers the benchmark runs, one per (batch, concurrency) setting: both are compile-time
//! options of `#[event_handler]`. And three never run, whose subscriptions receive the same events
//! (publish fan-out) or hold a drain's backlog.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "bench.job")]
pub(crate) struct Job {
    pub(crate) n: u64,
    /// Publish time in nanoseconds since the Unix epoch, for latency.
    pub(crate) sent_ns: u64,
}

impl Job {
    pub(crate) fn now(n: u64) -> Job {
        Job {
            n,
            sent_ns: now_ns(),
        }
    }
}

pub(crate) fn now_ns() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    )
    .unwrap_or(u64::MAX)
}

/// Counts handled events and says when `target` is reached.
#[derive(Debug)]
pub(crate) struct Progress {
    handled: AtomicU64,
    target: u64,
    pub(crate) done: tokio::sync::Notify,
    pub(crate) latencies: Mutex<Vec<Duration>>,
}

impl Progress {
    pub(crate) fn new(target: u64) -> Progress {
        Progress {
            handled: AtomicU64::new(0),
            target,
            done: tokio::sync::Notify::new(),
            latencies: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn add(&self, count: u64) {
        if self.handled.fetch_add(count, Ordering::SeqCst) + count >= self.target {
            self.done.notify_one();
        }
    }
}

#[event_handler(name = "bench.b1.c1", batch = 1, poll = "1s")]
async fn b1_c1(_job: Job, progress: State<Progress>) -> Result<(), HandlerError> {
    progress.add(1);
    Ok(())
}

#[event_handler(name = "bench.b1.c4", batch = 1, concurrency = 4, poll = "1s")]
async fn b1_c4(_job: Job, progress: State<Progress>) -> Result<(), HandlerError> {
    progress.add(1);
    Ok(())
}

#[event_handler(name = "bench.b64.c1", batch = 64, poll = "1s")]
async fn b64_c1(_job: Job, progress: State<Progress>) -> Result<(), HandlerError> {
    progress.add(1);
    Ok(())
}

#[event_handler(name = "bench.b64.c4", batch = 64, concurrency = 4, poll = "1s")]
async fn b64_c4(_job: Job, progress: State<Progress>) -> Result<(), HandlerError> {
    progress.add(1);
    Ok(())
}

/// `bench.b64.c4`, ordered by the events' keys: the per-key order's cost.
#[event_handler(
    name = "bench.ordered.b64.c4",
    ordered = "block",
    batch = 64,
    concurrency = 4,
    poll = "1s"
)]
async fn ordered_b64_c4(_job: Job, progress: State<Progress>) -> Result<(), HandlerError> {
    progress.add(1);
    Ok(())
}

#[event_handler(name = "bench.b1000.c4", batch = 1000, concurrency = 4, poll = "1s")]
async fn b1000_c4(_job: Job, progress: State<Progress>) -> Result<(), HandlerError> {
    progress.add(1);
    Ok(())
}

/// A second subscription of the same event, for publish fan-out figures; never run.
#[event_handler(name = "bench.fanout", poll = "1s")]
async fn fanout(_job: Job) -> Result<(), HandlerError> {
    Ok(())
}

/// A third, for fan-out to four subscriptions; never run.
#[event_handler(name = "bench.fanout.2", poll = "1s")]
async fn fanout_2(_job: Job) -> Result<(), HandlerError> {
    Ok(())
}

/// A fourth, for fan-out to four subscriptions; never run.
#[event_handler(name = "bench.fanout.3", poll = "1s")]
async fn fanout_3(_job: Job) -> Result<(), HandlerError> {
    Ok(())
}

#[event_handler(name = "bench.latency", batch = 64, poll = "1s")]
async fn latency(job: Job, progress: State<Progress>) -> Result<(), HandlerError> {
    let waited = Duration::from_nanos(now_ns().saturating_sub(job.sent_ns));
    progress.latencies.lock().unwrap().push(waited);
    progress.add(1);
    Ok(())
}
