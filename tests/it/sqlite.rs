//! The SQLite store through the runtime and the facade, beyond the contract suite: `Tx` handlers
//! with their own statements, publishing that fails half-way, wake-ups within the process, and
//! choosing a store from a URL. Each test has a temporary file of its own; none needs a server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use osa_events::prelude::*;
use osa_events::{AnyStore, Error, Outgoing, Runtime, SqliteStore};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::support::eventually;

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.sqlite.order")]
struct Order {
    n: i64,
}

/// What `tx_ledger` publishes for each order it handles (no handler receives it).
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.sqlite.follow_up")]
struct FollowUp {
    n: i64,
}

const WAIT: Duration = Duration::from_secs(20);

/// What the handlers write through and count with.
#[derive(Debug, Default)]
struct Calls {
    calls: AtomicUsize,
}

/// Writes the order into `ledger` through its `Tx`, so the row commits with the completion; fails
/// the first attempt of order 3 after writing, so that row must not survive.
#[event_handler(
    name = "test.sqlite.tx_ledger",
    batch = 4,
    poll = "5s",
    backoff = "10ms"
)]
async fn tx_ledger(
    order: Order,
    mut tx: Tx,
    calls: State<Calls>,
    ctx: Ctx,
) -> Result<(), HandlerError> {
    calls.calls.fetch_add(1, Ordering::SeqCst);
    sqlx::query("insert into ledger (n, attempt) values (?, ?)")
        .bind(order.n)
        .bind(i64::from(ctx.attempt()))
        .execute(tx.sqlite().await.map_err(HandlerError::retry)?)
        .await
        .map_err(HandlerError::retry)?;
    tx.publish(&FollowUp { n: order.n })
        .await
        .map_err(HandlerError::retry)?;
    if order.n == 3 && ctx.attempt() == 1 {
        return Err(HandlerError::retry(
            "the first attempt of order 3 fails after its write",
        ));
    }
    Ok(())
}

/// Counts calls; polls only every 30 s, so a prompt call was woken.
#[event_handler(name = "test.sqlite.woken", poll = "30s")]
async fn woken(_order: Order, calls: State<Calls>) -> Result<(), HandlerError> {
    calls.calls.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

async fn temporary() -> SqliteStore {
    let store = SqliteStore::temporary()
        .await
        .expect("a temporary SQLite file");
    store
        .migrate()
        .await
        .expect("migrations apply to a fresh file");
    store
}

async fn start(
    store: &SqliteStore,
    handler: &'static str,
    calls: Arc<Calls>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<osa_events::Result<()>>,
) {
    let runtime = Runtime::builder(store.clone())
        .only([handler])
        .resources(Resources::new().with_arc(calls))
        .handle_signals(false)
        .build()
        .expect("the runtime builds");
    runtime.register().await.expect("register");
    let shutdown = runtime.shutdown_token();
    (shutdown, tokio::spawn(runtime.run()))
}

async fn publish(store: &SqliteStore, orders: impl IntoIterator<Item = i64>) {
    let batch: Vec<Outgoing> = orders
        .into_iter()
        .map(|n| Outgoing::new(&Order { n }).unwrap())
        .collect();
    let mut tx = store.begin().await.unwrap();
    osa_events::sqlite::publish_batch(&mut tx, &batch)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn open_deliveries(store: &SqliteStore) -> i64 {
    sqlx::query_scalar("select count(*) from deliveries d join subscriptions s on s.id = d.subscription_id where s.name = 'test.sqlite.tx_ledger'")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// A `Tx` handler's own statements, its publishes and its completion commit together: the ledger
/// holds each order once, the failed attempt's row and follow-up are gone, and every follow-up of
/// a completed order exists once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tx_handlers_own_statements_commit_with_its_completion_or_not_at_all() {
    let store = temporary().await;
    sqlx::query("create table ledger (n integer not null, attempt integer not null)")
        .execute(store.pool())
        .await
        .unwrap();
    let calls = Arc::new(Calls::default());
    let (shutdown, running) = start(&store, "test.sqlite.tx_ledger", calls.clone()).await;
    publish(&store, 0..10).await;
    eventually(WAIT, "every order completed", || async {
        open_deliveries(&store).await == 0 && calls.calls.load(Ordering::SeqCst) >= 11
    })
    .await;
    shutdown.cancel();
    running.await.unwrap().unwrap();

    let ledger: Vec<(i64, i64)> = sqlx::query_as("select n, attempt from ledger order by n")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let expected: Vec<(i64, i64)> = (0..10).map(|n| (n, if n == 3 { 2 } else { 1 })).collect();
    assert_eq!(
        ledger, expected,
        "each order once; order 3 from its second attempt"
    );
    let follow_ups: i64 = sqlx::query_scalar(
        "select count(*) from events where event_type = 'test.sqlite.follow_up'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(
        follow_ups, 10,
        "one follow-up per order, none from the failed attempt"
    );
}

/// A `Tx` handler's `tx.sqlite()` on a store that is not SQLite is a clear error, not a panic.
#[tokio::test]
async fn tx_sqlite_on_another_store_is_a_clear_error() {
    let mut harness = osa_events_testing::Harness::builder()
        .only(["test.sqlite.tx_ledger"])
        .resources(Resources::new().with(Calls::default()))
        .build()
        .await
        .expect("the harness builds");
    harness.publish(&Order { n: 1 });
    let attempts = harness.step("test.sqlite.tx_ledger").await;
    let error = attempts
        .iter()
        .find_map(|attempt| attempt.error().map(str::to_owned))
        .expect("the attempt failed with an error");
    assert!(
        error.contains("`tx.sqlite()` is an SQLite connection"),
        "the error says what went wrong: {error}"
    );
}

/// A publish that fails half-way (here: a trigger refuses the deliveries) writes nothing, and the
/// caller's transaction goes on without it; outside a transaction it writes nothing either.
#[tokio::test]
async fn a_failed_publish_writes_nothing_and_the_transaction_goes_on() {
    let store = temporary().await;
    let calls = Arc::new(Calls::default());
    let runtime = Runtime::builder(store.clone())
        .only(["test.sqlite.woken"])
        .resources(Resources::new().with_arc(calls))
        .build()
        .unwrap();
    runtime.register().await.unwrap();
    sqlx::raw_sql(
        "create table mine (n integer); \
         create trigger refuse before insert on deliveries when (select count(*) from mine) > 0 \
         begin select raise(abort, 'refused by the test'); end;",
    )
    .execute(store.pool())
    .await
    .unwrap();

    let mut tx = store.begin().await.unwrap();
    sqlx::query("insert into mine (n) values (1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let failed = osa_events::sqlite::publish(&mut tx, &Order { n: 1 }).await;
    assert!(
        matches!(&failed, Err(Error::Database(_))),
        "the publish fails: {failed:?}"
    );
    sqlx::query("insert into mine (n) values (2)")
        .execute(&mut *tx)
        .await
        .expect("the transaction goes on");
    tx.commit().await.expect("and commits");
    let count = |sql: &'static str| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count("select count(*) from mine").await,
        2,
        "the caller's writes"
    );
    assert_eq!(
        count("select count(*) from events").await,
        0,
        "no event without its deliveries"
    );

    let mut conn = store.pool().acquire().await.unwrap();
    let failed = osa_events::sqlite::publish(&mut conn, &Order { n: 2 }).await;
    assert!(failed.is_err(), "outside a transaction too: {failed:?}");
    assert_eq!(
        count("select count(*) from events").await,
        0,
        "nothing half-written"
    );
}

/// A commit that published wakes this process's workers at once, not at their next poll (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_wakes_the_processs_workers_at_its_commit() {
    let store = temporary().await;
    let calls = Arc::new(Calls::default());
    let (shutdown, running) = start(&store, "test.sqlite.woken", calls.clone()).await;
    // The first (idle) claim has come back empty; the loop now waits for its 30 s poll.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let published = Instant::now();
    publish(&store, [1]).await;
    eventually(Duration::from_secs(5), "the handler was called", || async {
        calls.calls.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(published.elapsed() < Duration::from_secs(5));
    // Published through an application transaction of the pool, not through the store's.
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await.unwrap();
    osa_events::sqlite::publish(&mut tx, &Order { n: 2 })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the handler was called again",
        || async { calls.calls.load(Ordering::SeqCst) == 2 },
    )
    .await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

/// `AnyStore` takes `sqlite:` and `postgres:` URLs, refuses others and in-memory SQLite with
/// errors that say what to do, and describes what it opened.
#[tokio::test]
async fn any_store_picks_the_store_a_url_names() {
    let dir = std::env::temp_dir().join(format!("osa-events-any-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.sqlite");
    let store = AnyStore::from_url(&format!("sqlite://{}", path.display()))
        .await
        .expect("an SQLite URL opens a file");
    store.migrate().await.unwrap();
    assert!(matches!(store, AnyStore::Sqlite(_)));
    assert_eq!(store.describe(), format!("SQLite file {}", path.display()));
    // A regression test: `AnyStore` did not pass `orders_by_key` on, so it refused ordered
    // handlers on SQLite and PostgreSQL alike.
    assert!(osa_events::store::Store::orders_by_key(&store));
    drop(store);
    assert!(path.is_file(), "a named file stays");

    let unknown = AnyStore::from_url("mysql://localhost/app")
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, Error::Config(message) if message.contains("`postgres://`") && message.contains("`sqlite:`") && message.contains("`mysql:`")),
        "{unknown}"
    );
    for memory in ["sqlite::memory:", "sqlite://?mode=memory"] {
        let refused = AnyStore::from_url(memory).await.unwrap_err();
        assert!(
            matches!(&refused, Error::Config(message) if message.contains("in-memory")),
            "{memory}: {refused}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();

    let temporary = SqliteStore::temporary().await.unwrap();
    let file = temporary.path().to_owned();
    let any = AnyStore::from(temporary);
    assert!(
        any.describe().ends_with("(temporary: removed at exit)"),
        "{}",
        any.describe()
    );
    drop(any);
    assert!(!file.exists(), "a temporary file goes with its store");
}
