//! `osa-nats-chaos consume`: the handler `chaos.js` on a JetStream stream, recording each job it
//! handles in the application's ledger table, `chaos_ledger (handler, seq, pid, attempt,
//! handled_at)`, which the tests create and read.
//!
//! The row is written in a statement of its own, after the work and before the acknowledgement:
//! a consumer killed between the two leaves a row that the consumer JetStream redelivers the job
//! to writes again, so the ledger shows every duplicate that at-least-once delivery produces.
//! Poison jobs fail with a permanent error and end on the handler's dead-letter subject.

use std::time::Duration;

use osa_events::nats::{Connect, JetStreamStore};
use osa_events::prelude::*;
use osa_events::{PgStore, Runtime};
use osa_events_suite::chaos_events::Job;
use sqlx::PgPool;

use crate::Failure;

/// How the consumer runs.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The stream to consume.
    pub(crate) stream: String,
    /// Simulated work per job.
    pub(crate) work: Duration,
    /// The runtime's grace period on SIGTERM.
    pub(crate) grace: Duration,
}

/// What the handler needs: the pool for the ledger, this process's id, the simulated work.
#[derive(Debug)]
struct App {
    pool: PgPool,
    pid: i32,
    work: Duration,
}

const RECORD_SQL: &str =
    "insert into chaos_ledger (handler, seq, pid, attempt) values ($1, $2, $3, $4)";

/// Short claims (a killed consumer's messages come back after the 2 s ack wait), a few retries,
/// a short backoff. It starts from now (the default), so the test publishes once the first
/// consumer has created the durable consumer.
#[event_handler(
    name = "chaos.js",
    batch = 16,
    concurrency = 2,
    claim_timeout = "2s",
    retries = 3,
    backoff = "50ms",
    max_backoff = "200ms",
    poll = "100ms"
)]
async fn record(job: Job, app: State<App>, ctx: Ctx) -> Result<(), HandlerError> {
    if job.poison {
        return Err(HandlerError::permanent(format!(
            "job {}: poison, refused for good",
            job.seq
        )));
    }
    if !app.work.is_zero() {
        tokio::time::sleep(app.work).await;
    }
    sqlx::query(RECORD_SQL)
        .bind("chaos.js")
        .bind(job.seq)
        .bind(app.pid)
        .bind(i32::try_from(ctx.attempt()).unwrap_or(i32::MAX))
        .execute(&app.pool)
        .await?;
    Ok(())
}

/// Runs `chaos.js` until `shutdown` is cancelled.
pub(crate) async fn run(
    database_url: &str,
    nats_url: &str,
    plan: Plan,
    shutdown: osa_events::CancellationToken,
) -> Result<(), Failure> {
    let connected = async {
        let ledger = PgStore::connect(database_url).await?;
        let store = JetStreamStore::builder(Connect::url(nats_url), plan.stream)
            .connect()
            .await?;
        Ok::<_, osa_events::Error>((ledger, store))
    };
    let (ledger, store) = tokio::select! {
        connected = connected => connected?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let app = App {
        pool: ledger.pool().clone(),
        pid: i32::try_from(std::process::id())?,
        work: plan.work,
    };
    Runtime::builder(store)
        .resources(Resources::new().with(app))
        .only(["chaos.js"])
        .grace_period(plan.grace)
        .handle_signals(false)
        .shutdown_token(shutdown)
        .build()?
        .run()
        .await?;
    Ok(())
}
