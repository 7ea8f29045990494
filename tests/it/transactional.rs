//! Handlers that take `Tx`: their writes and the fenced completion commit together, or not at all;
//! batch handlers that fail single events with `BatchOutcome`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use osa_events::Outgoing;
use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

use crate::support::{Db, eventually};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.tx.order")]
struct Order {
    n: i32,
}

const WAIT: Duration = Duration::from_secs(20);

async fn with_ledger(db: &Db) {
    sqlx::query("create table ledger (n int not null)")
        .execute(db.pool())
        .await
        .unwrap();
}

async fn ledger(db: &Db) -> Vec<i32> {
    sqlx::query_scalar("select n from ledger order by n")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

async fn publish_orders(db: &Db, count: i32) {
    let batch: Vec<Outgoing> = (0..count)
        .map(|n| Outgoing::new(&Order { n }).unwrap())
        .collect();
    osa_events::publish_batch(db.pool(), &batch).await.unwrap();
}

/// Writes `n` to the ledger, in the handler's transaction.
async fn write(tx: &mut Tx, n: i32) -> Result<(), sqlx::Error> {
    sqlx::query("insert into ledger (n) values ($1)")
        .bind(n)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Runs `handler` in a fresh database over `count` orders until no delivery is left, and returns
/// the ledger then.
async fn ledger_once_drained(handler: &str, count: i32) -> Vec<i32> {
    let db = Db::new().await;
    with_ledger(&db).await;
    let running = db.start(&[handler], Resources::new()).await;
    publish_orders(&db, count).await;
    eventually(WAIT, "every order completed", || async {
        db.deliveries(None).await == 0
    })
    .await;
    running.stop().await;
    ledger(&db).await
}

#[event_handler(name = "tx.record", batch = 8, poll = "20ms")]
async fn record(order: Order, mut tx: Tx) -> Result<(), HandlerError> {
    write(&mut tx, order.n).await?;
    Ok(())
}

#[tokio::test]
async fn writes_commit_together_with_the_completion() {
    assert_eq!(
        ledger_once_drained("tx.record", 20).await,
        (0..20).collect::<Vec<_>>()
    );
}

#[event_handler(name = "tx.flaky", retries = 3, backoff = "10ms", poll = "20ms")]
async fn flaky(order: Order, mut tx: Tx, ctx: Ctx) -> Result<(), HandlerError> {
    write(&mut tx, order.n).await?;
    if ctx.attempt() == 1 {
        return Err(HandlerError::retry(
            "the downstream call failed after the insert",
        ));
    }
    Ok(())
}

#[tokio::test]
async fn a_failed_attempt_rolls_back_its_writes() {
    assert_eq!(
        ledger_once_drained("tx.flaky", 5).await,
        vec![0, 1, 2, 3, 4],
        "each order once, though every first attempt wrote and failed"
    );
}

/// Lets the test take a claim over while the handler runs.
#[derive(Default)]
struct Takeover {
    entered: AtomicUsize,
    proceed: tokio::sync::Notify,
}

#[event_handler(name = "tx.overtaken", poll = "20ms")]
async fn overtaken(
    order: Order,
    mut tx: Tx,
    takeover: State<Takeover>,
) -> Result<(), HandlerError> {
    write(&mut tx, order.n).await?;
    takeover.entered.fetch_add(1, Ordering::SeqCst);
    takeover.proceed.notified().await;
    Ok(())
}

#[tokio::test]
async fn a_stale_claim_rolls_back_the_handlers_writes() {
    let db = Db::new().await;
    with_ledger(&db).await;
    let takeover = Arc::new(Takeover::default());
    let running = db
        .start(
            &["tx.overtaken"],
            Resources::new().with_arc(takeover.clone()),
        )
        .await;
    publish_orders(&db, 1).await;
    eventually(WAIT, "the handler wrote", || async {
        takeover.entered.load(Ordering::SeqCst) == 1
    })
    .await;
    // Another worker takes the delivery over (as after an expiry): a new claim token.
    let foreign = uuid::Uuid::new_v4();
    sqlx::query("update osa_events.deliveries set claim_token = $1, claimed_by = 'other'")
        .bind(foreign)
        .execute(db.pool())
        .await
        .unwrap();
    takeover.proceed.notify_one();
    eventually(WAIT, "the handler's call settled", || async {
        // Settled once the handler's connection is back in the pool and nothing was written.
        running_idle(&db).await
    })
    .await;
    running.stop().await;
    assert!(
        ledger(&db).await.is_empty(),
        "the stale worker's write was rolled back"
    );
    let token: uuid::Uuid = sqlx::query_scalar("select claim_token from osa_events.deliveries")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(token, foreign, "the new holder's claim is untouched");
}

/// Publishes a follow-up and writes a ledger row per order, then waits, so the test can take one
/// of the batch's claims over while it runs.
#[event_handler(name = "tx.batch.overtaken", batch = 10, backoff = "1h", poll = "20ms")]
async fn overtaken_batch(
    orders: Batch<Order>,
    mut tx: Tx,
    takeover: State<Takeover>,
) -> Result<(), HandlerError> {
    let follow_ups = orders
        .iter()
        .map(|order| Outgoing::new(&Counted { n: order.n }))
        .collect::<Result<Vec<_>, _>>()?;
    tx.publish_batch(&follow_ups).await?;
    for order in &orders {
        sqlx::query("insert into ledger (n) values ($1)")
            .bind(order.n)
            .execute(&mut *tx)
            .await?;
    }
    takeover.entered.fetch_add(1, Ordering::SeqCst);
    takeover.proceed.notified().await;
    Ok(())
}

/// What `tx.batch.overtaken` publishes.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.tx.counted")]
struct Counted {
    n: i32,
}

#[tokio::test]
async fn a_tx_batch_whose_claim_is_taken_over_commits_nothing_it_wrote_or_published() {
    let db = Db::new().await;
    with_ledger(&db).await;
    let takeover = Arc::new(Takeover::default());
    let running = db
        .start(
            &["tx.batch.overtaken"],
            Resources::new().with_arc(takeover.clone()),
        )
        .await;
    publish_orders(&db, 3).await;
    eventually(WAIT, "the batch ran", || async {
        takeover.entered.load(Ordering::SeqCst) == 1
    })
    .await;
    // Another worker takes one delivery of the batch over (as after an expiry).
    let foreign = uuid::Uuid::new_v4();
    let taken: i64 = sqlx::query_scalar(
        "update osa_events.deliveries set claim_token = $1, claimed_by = 'other' \
         where event_position = (select min(event_position) from osa_events.deliveries) \
         returning event_position",
    )
    .bind(foreign)
    .fetch_one(db.pool())
    .await
    .unwrap();
    takeover.proceed.notify_one();
    eventually(WAIT, "the batch settled", || async {
        running_idle(&db).await && db.deliveries(Some("pending")).await == 2
    })
    .await;
    running.stop().await;

    assert!(
        ledger(&db).await.is_empty(),
        "the batch's writes rolled back"
    );
    let counted: i64 = sqlx::query_scalar(
        "select count(*) from osa_events.events where event_type = 'test.tx.counted'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(counted, 0, "the batch's follow-ups rolled back");
    let rows: Vec<(i64, String, Option<uuid::Uuid>, Option<String>)> = sqlx::query_as(
        "select event_position, status, claim_token, last_error from osa_events.deliveries \
         order by event_position",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 3, "nothing completed");
    for (position, status, token, last_error) in rows {
        if position == taken {
            assert_eq!(
                (status.as_str(), token),
                ("claimed", Some(foreign)),
                "the new holder's claim is untouched"
            );
        } else {
            assert_eq!(status, "pending", "retried by the batch's worker");
            let error = last_error.unwrap();
            assert!(error.contains("taken over"), "{error}");
        }
    }
}

/// No transaction of the runtime is open in this database any more.
async fn running_idle(db: &Db) -> bool {
    let open: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity where datname = current_database() \
         and state like 'idle in transaction%'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    open == 0
}

#[event_handler(name = "tx.batch", batch = 50, poll = "20ms")]
async fn record_batch(orders: Batch<Order>, mut tx: Tx) -> Result<BatchOutcome, HandlerError> {
    let mut outcome = BatchOutcome::new();
    for (index, order) in orders.iter().enumerate() {
        if order.n % 3 == 0 {
            outcome.fail(
                index,
                HandlerError::permanent(format!("order {} is void", order.n)),
            );
            continue;
        }
        write(&mut tx, order.n).await?;
    }
    Ok(outcome)
}

#[tokio::test]
async fn a_batch_handler_fails_single_events_and_commits_the_rest() {
    let db = Db::new().await;
    with_ledger(&db).await;
    let running = db.start(&["tx.batch"], Resources::new()).await;
    publish_orders(&db, 12).await;
    eventually(WAIT, "the batch settled", || async {
        db.deliveries(Some("dead")).await == 4 && db.deliveries(None).await == 4
    })
    .await;
    running.stop().await;
    assert_eq!(ledger(&db).await, vec![1, 2, 4, 5, 7, 8, 10, 11]);
    assert!(
        db.dead_letters()
            .await
            .iter()
            .all(|(attempts, error)| *attempts == 1 && error.contains("is void"))
    );
}

/// Writes a row for every order, then fails the orders divisible by 3 on their first attempt.
#[event_handler(
    name = "tx.batch.writes_then_fails",
    batch = 50,
    retries = 1,
    backoff = "10ms",
    poll = "20ms"
)]
async fn write_then_fail(orders: Batch<Order>, mut tx: Tx) -> Result<BatchOutcome, HandlerError> {
    let mut outcome = BatchOutcome::new();
    for (index, (ctx, order)) in orders.iter_with_ctx().enumerate() {
        write(&mut tx, order.n).await?;
        if order.n % 3 == 0 && ctx.attempt() == 1 {
            outcome.fail(index, HandlerError::retry("downstream refused it"));
        }
    }
    Ok(outcome)
}

#[tokio::test]
async fn a_tx_batch_commits_its_writes_for_events_it_marks_failed() {
    assert_eq!(
        ledger_once_drained("tx.batch.writes_then_fails", 6).await,
        vec![0, 0, 1, 2, 3, 3, 4, 5],
        "the writes for the failed orders 0 and 3 committed with the batch, and again on retry"
    );
}

/// Writes `10 n + attempt` for every order, then miscounts on the first attempt: an index past the
/// end of the batch.
#[event_handler(
    name = "tx.batch.miscounting",
    batch = 50,
    retries = 1,
    backoff = "10ms",
    poll = "20ms"
)]
async fn miscount(orders: Batch<Order>, mut tx: Tx) -> Result<BatchOutcome, HandlerError> {
    let mut outcome = BatchOutcome::new();
    let mut first_attempt = false;
    for (ctx, order) in orders.iter_with_ctx() {
        first_attempt |= ctx.attempt() == 1;
        write(
            &mut tx,
            order.n * 10 + i32::try_from(ctx.attempt()).unwrap(),
        )
        .await?;
    }
    if first_attempt {
        outcome.fail(orders.len(), HandlerError::permanent("off by one"));
    }
    Ok(outcome)
}

#[tokio::test]
async fn an_out_of_range_batch_outcome_index_rolls_the_whole_tx_batch_back() {
    assert_eq!(
        ledger_once_drained("tx.batch.miscounting", 4).await,
        vec![2, 12, 22, 32],
        "attempt 1 failed as a whole and rolled back; attempt 2 wrote each order once"
    );
}

/// Holds its transaction's connection for a while, as a slow handler would.
#[event_handler(
    name = "tx.starved",
    concurrency = 8,
    batch = 1,
    retries = 0,
    poll = "20ms"
)]
async fn hold_the_connection(order: Order, mut tx: Tx) -> Result<(), HandlerError> {
    write(&mut tx, order.n).await?;
    tokio::time::sleep(Duration::from_millis(250)).await;
    Ok(())
}

#[tokio::test]
async fn a_starved_pool_makes_tx_handlers_wait_instead_of_burning_attempts() {
    let logs = osa_events_fixtures::logs::Logs::capture();
    let db = Db::new().await;
    with_ledger(&db).await;
    // 8 claim loops, each holding a connection while its handler runs, on a pool of 2.
    let small = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(200))
        .connect_with((*db.pool().connect_options()).clone())
        .await
        .unwrap();
    let starved = Db::from_pool(small);
    let running = starved.start(&["tx.starved"], Resources::new()).await;
    publish_orders(&db, 16).await;
    eventually(WAIT, "every order handled or one dead", || async {
        db.deliveries(None).await == 0 || db.deliveries(Some("dead")).await > 0
    })
    .await;
    running.stop().await;

    assert_eq!(
        db.dead_letters().await,
        [],
        "no delivery lost its only attempt to the pool"
    );
    assert_eq!(ledger(&db).await, (0..16).collect::<Vec<_>>(), "each once");
    let warnings: Vec<String> = logs
        .at("WARN")
        .into_iter()
        .filter(|line| line.contains("the connection pool is too small"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning at start-up: {warnings:#?}");
    assert!(
        warnings[0].contains("max_connections=2") && warnings[0].contains("needed=9"),
        "{}",
        warnings[0]
    );
    assert!(
        !logs
            .lines_with("no database connection for the handler's transaction; waiting")
            .is_empty(),
        "the pool did starve handlers in this test"
    );
}
