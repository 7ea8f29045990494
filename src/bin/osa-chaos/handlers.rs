//! The handlers `osa-chaos` runs. Each records its effect in the application's ledger table,
//! `chaos_ledger (handler, seq, pid, attempt, handled_at)`, which the tests create and read:
//!
//! - `chaos.ledger` writes its row in a statement of its own, after the work: a worker killed
//!   between that write and the completion leaves a row the next worker writes again, so the
//!   ledger shows every duplicate at-least-once delivery produces.
//! - `chaos.tx` writes its row through its [`Tx`], which also carries the fenced completion: its
//!   rows must never repeat.
//! - `chaos.slow` sleeps `--work-ms` and then writes through its `Tx`: the shutdown test's handler,
//!   with a long claim timeout so that released claims can be told apart from expired ones.
//! - `chaos.heartbeat` is `chaos.slow` with 1 s claims and batches of 4, so that heartbeats run
//!   between the per-event commits of one batch.
//! - `chaos.poison` succeeds, fails, panics, hangs or fails fatally (stopping the process) as its
//!   event says.
//! - `chaos.deploy` receives only items routed `blue`: the "old version" of the deploy test,
//!   whose "new version" (routed `green`, the same name) runs in the test process.

use std::time::Duration;

use osa_events::prelude::*;
use osa_events_suite::chaos_events::{Item, Keyed, Mode, Poison};
use sqlx::PgPool;

/// What the handlers and the projection share: the pool for the ledger, this process's id, the
/// simulated work.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) pool: PgPool,
    pub(crate) pid: i32,
    pub(crate) work: Duration,
}

impl App {
    /// Simulates `--work-ms` of work.
    pub(crate) async fn work(&self) {
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
    }
}

const RECORD_SQL: &str =
    "insert into chaos_ledger (handler, seq, pid, attempt) values ($1, $2, $3, $4)";

fn attempt(ctx: &Ctx) -> i32 {
    i32::try_from(ctx.attempt()).unwrap_or(i32::MAX)
}

/// Short claims (a killed worker's deliveries come back after 3 s) and retries to spare: a
/// delivery may be claimed by several workers that are killed in turn.
#[event_handler(
    name = "chaos.ledger",
    batch = 16,
    concurrency = 2,
    claim_timeout = "3s",
    retries = 100,
    backoff = "50ms",
    max_backoff = "1s",
    poll = "250ms"
)]
async fn ledger(item: Item, app: State<App>, ctx: Ctx) -> Result<(), HandlerError> {
    app.work().await;
    sqlx::query(RECORD_SQL)
        .bind("chaos.ledger")
        .bind(item.seq)
        .bind(app.pid)
        .bind(attempt(&ctx))
        .execute(&app.pool)
        .await?;
    Ok(())
}

/// The old version of a handler whose routing key changes in a deploy (`tests/it/reliability/deploy.rs`).
#[event_handler(name = "chaos.deploy", routing_key = "blue", poll = "250ms")]
async fn deploy(item: Item, app: State<App>, ctx: Ctx) -> Result<(), HandlerError> {
    sqlx::query(RECORD_SQL)
        .bind("chaos.deploy")
        .bind(item.seq)
        .bind(app.pid)
        .bind(attempt(&ctx))
        .execute(&app.pool)
        .await?;
    Ok(())
}

#[event_handler(
    name = "chaos.tx",
    batch = 16,
    concurrency = 2,
    claim_timeout = "3s",
    retries = 100,
    backoff = "50ms",
    max_backoff = "1s",
    poll = "250ms"
)]
async fn ledger_in_tx(
    item: Item,
    app: State<App>,
    ctx: Ctx,
    mut tx: Tx,
) -> Result<(), HandlerError> {
    record_in_tx("chaos.tx", &item, &app, &ctx, &mut tx).await
}

#[event_handler(
    name = "chaos.slow",
    batch = 8,
    concurrency = 2,
    claim_timeout = "60s",
    retries = 10,
    backoff = "50ms",
    poll = "100ms"
)]
async fn slow(item: Item, app: State<App>, ctx: Ctx, mut tx: Tx) -> Result<(), HandlerError> {
    record_in_tx("chaos.slow", &item, &app, &ctx, &mut tx).await
}

/// A `Tx` handler whose batch outlives several heartbeats (1 s claims are renewed every 333 ms):
/// the heartbeat test's handler.
#[event_handler(
    name = "chaos.heartbeat",
    batch = 4,
    claim_timeout = "1s",
    retries = 10,
    backoff = "50ms",
    poll = "100ms"
)]
async fn heartbeat(item: Item, app: State<App>, ctx: Ctx, mut tx: Tx) -> Result<(), HandlerError> {
    record_in_tx("chaos.heartbeat", &item, &app, &ctx, &mut tx).await
}

/// Two retries with short backoff, and a timeout the `hang` events blow through.
#[event_handler(
    name = "chaos.poison",
    batch = 8,
    concurrency = 4,
    retries = 2,
    backoff = "20ms",
    max_backoff = "100ms",
    timeout = "300ms",
    poll = "100ms"
)]
async fn poison(event: Poison, app: State<App>, ctx: Ctx) -> Result<(), HandlerError> {
    match event.mode {
        Mode::Ok => {
            sqlx::query(RECORD_SQL)
                .bind("chaos.poison")
                .bind(event.seq)
                .bind(app.pid)
                .bind(attempt(&ctx))
                .execute(&app.pool)
                .await?;
            Ok(())
        }
        Mode::Fail => Err(HandlerError::retry(format!(
            "poison {}: the backend rejects it every time",
            event.seq
        ))),
        Mode::Permanent => Err(HandlerError::permanent(format!(
            "poison {}: malformed beyond repair",
            event.seq
        ))),
        Mode::Panic => panic!("poison {}: the handler hit a bug", event.seq),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
        Mode::Fatal => Err(HandlerError::fatal(format!(
            "poison {}: the worker's schema is wrong",
            event.seq
        ))),
    }
}

/// The ordering test's handler: eight claim loops, ordered by the event's key, with failures.
///
/// It writes a `chaos.ordered.start` row in a statement of its own as it starts (every call
/// shows, those of killed workers too), fails about one attempt in eight with a retryable error,
/// and writes its `chaos.ordered` row through its `Tx` (exactly once, with the completion). Per
/// key, the rows of both must follow `n`.
#[event_handler(
    name = "chaos.ordered",
    ordered = "block",
    batch = 16,
    concurrency = 8,
    claim_timeout = "3s",
    retries = 100,
    backoff = "20ms",
    max_backoff = "200ms",
    poll = "250ms"
)]
async fn ordered(keyed: Keyed, app: State<App>, ctx: Ctx, tx: Tx) -> Result<(), HandlerError> {
    record_in_order("chaos.ordered", &keyed, &app, &ctx, Some(tx)).await
}

/// [`ordered`] with batches of 2 and without a `Tx`, so the runtime completes a full batch with
/// its next claim, and PostgreSQL hands a key's next delivery on to the loop that completed its
/// head (its key turns); a `Tx` handler completes each delivery in its own transaction instead.
/// Its rows are `chaos.ordered.turns` and `chaos.ordered.turns.start`, the effect written in a
/// statement of its own: at least once, so a killed worker's effect may repeat, never out of
/// order.
#[event_handler(
    name = "chaos.ordered.turns",
    ordered = "block",
    batch = 2,
    concurrency = 8,
    claim_timeout = "3s",
    retries = 100,
    backoff = "20ms",
    max_backoff = "200ms",
    poll = "250ms"
)]
async fn ordered_in_turns(keyed: Keyed, app: State<App>, ctx: Ctx) -> Result<(), HandlerError> {
    record_in_order("chaos.ordered.turns", &keyed, &app, &ctx, None).await
}

/// What the ordered handlers do: a `<handler>.start` row in a statement of its own, a chosen
/// failure of about one attempt in eight, then the `<handler>` row, through `tx` when there is
/// one (exactly once, with the completion).
async fn record_in_order(
    handler: &str,
    keyed: &Keyed,
    app: &App,
    ctx: &Ctx,
    tx: Option<Tx>,
) -> Result<(), HandlerError> {
    sqlx::query(RECORD_SQL)
        .bind(format!("{handler}.start"))
        .bind(keyed.seq())
        .bind(app.pid)
        .bind(attempt(ctx))
        .execute(&app.pool)
        .await?;
    // A failure chosen by the event and the attempt: about one attempt in eight, retried.
    let roll = (keyed.key * 31 + keyed.n * 17 + i64::from(attempt(ctx)) * 7) % 8;
    if roll == 0 {
        return Err(HandlerError::retry(format!(
            "key {} event {}: a chosen failure of attempt {}",
            keyed.key,
            keyed.n,
            ctx.attempt()
        )));
    }
    app.work().await;
    let effect = sqlx::query(RECORD_SQL)
        .bind(handler)
        .bind(keyed.seq())
        .bind(app.pid)
        .bind(attempt(ctx));
    match tx {
        Some(mut tx) => effect.execute(&mut *tx).await?,
        None => effect.execute(&app.pool).await?,
    };
    Ok(())
}

/// What the `Tx` handlers do: after the configured work, write one ledger row through the
/// handler's transaction, so it commits exactly once with the delivery's completion.
async fn record_in_tx(
    handler: &str,
    item: &Item,
    app: &App,
    ctx: &Ctx,
    tx: &mut Tx,
) -> Result<(), HandlerError> {
    app.work().await;
    sqlx::query(RECORD_SQL)
        .bind(handler)
        .bind(item.seq)
        .bind(app.pid)
        .bind(attempt(ctx))
        .execute(&mut **tx)
        .await?;
    Ok(())
}
