//! `HandlerError::fatal` on PostgreSQL: the runtime stops and `run` returns `Error::Fatal`, the
//! fatal delivery is pending again with its attempt given back and the error kept, the other
//! handler's running call finishes in the grace period and nothing more is claimed; a `Tx` batch
//! with one fatal event rolls back everything it wrote. A panic stays a failed attempt.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::prelude::*;
use osa_events::{BatchOutcome, Error, Outgoing, Runtime};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::support::{Db, eventually};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.fatal.job")]
struct Job {
    n: i32,
}

const WAIT: Duration = Duration::from_secs(20);

/// The application's own error: `Error::Fatal`'s source downcasts to it.
#[derive(Debug)]
struct SchemaMismatch;

impl std::fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("table `records` has no column `title`")
    }
}

impl std::error::Error for SchemaMismatch {}

/// The jobs `fatal.each` was called for.
#[derive(Default)]
struct Calls(Mutex<Vec<i32>>);

/// Job 2 is fatal; job 7 panics.
#[event_handler(name = "fatal.each", retries = 3, backoff = "10s", poll = "20ms")]
async fn each(job: Job, calls: State<Calls>) -> Result<(), HandlerError> {
    calls.0.lock().unwrap().push(job.n);
    match job.n {
        2 => Err(HandlerError::fatal(SchemaMismatch)),
        7 => panic!("job 7 hit a bug"),
        _ => Ok(()),
    }
}

/// A slow handler: its call has begun when `started` is notified, and ends when `release` is.
#[derive(Default)]
struct Slow {
    started: Notify,
    release: Notify,
    finished: AtomicU32,
}

#[event_handler(name = "fatal.slow", poll = "20ms")]
async fn slow(_job: Job, slow: State<Slow>) -> Result<(), HandlerError> {
    slow.started.notify_one();
    slow.release.notified().await;
    slow.finished.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// Writes every job to the ledger in its transaction, then fails job 0 fatally.
#[event_handler(name = "fatal.tx_batch", batch = 10, poll = "20ms")]
async fn tx_batch(jobs: Batch<Job>, mut tx: Tx) -> Result<BatchOutcome, HandlerError> {
    let mut outcome = BatchOutcome::new();
    for (index, job) in jobs.iter().enumerate() {
        sqlx::query("insert into ledger (n) values ($1)")
            .bind(job.n)
            .execute(&mut *tx)
            .await?;
        if job.n == 0 {
            outcome.fail(index, HandlerError::fatal("the ledger is corrupt"));
        }
    }
    Ok(outcome)
}

/// Starts a runtime of `handlers` on `db`, with its subscriptions registered.
async fn run(
    db: &Db,
    handlers: &[&str],
    resources: Resources,
) -> JoinHandle<osa_events::Result<()>> {
    let runtime = Runtime::builder(db.store.clone())
        .only(handlers.iter().copied())
        .resources(resources)
        .handle_signals(false)
        .build()
        .expect("the runtime builds");
    runtime.register().await.expect("subscriptions register");
    tokio::spawn(runtime.run())
}

/// `(status, attempts, last_error)` of `handler`'s delivery of job `n`.
async fn delivery(db: &Db, handler: &str, n: i32) -> Option<(String, i32, Option<String>)> {
    sqlx::query_as(
        "select d.status, d.attempts, d.last_error from osa_events.deliveries d \
         join osa_events.subscriptions s on s.id = d.subscription_id \
         join osa_events.events e on e.position = d.event_position \
         where s.name = $1 and (e.payload ->> 'n')::int = $2",
    )
    .bind(handler)
    .bind(n)
    .fetch_optional(db.pool())
    .await
    .expect("read the delivery")
}

#[tokio::test]
async fn a_fatal_error_stops_the_runtime_and_gives_the_delivery_back() {
    let db = Db::new().await;
    let calls = Arc::new(Calls::default());
    let slow = Arc::new(Slow::default());
    let running = run(
        &db,
        &["fatal.each", "fatal.slow"],
        Resources::new()
            .with_arc(Arc::clone(&calls))
            .with_arc(Arc::clone(&slow)),
    )
    .await;

    // A panic is a failed attempt, and the runtime goes on.
    osa_events::publish(db.pool(), &Job { n: 7 }).await.unwrap();
    eventually(
        WAIT,
        "job 7's panic recorded as a failed attempt",
        || async {
            delivery(&db, "fatal.each", 7)
                .await
                .is_some_and(|(status, attempts, error)| {
                    status == "pending"
                        && attempts == 1
                        && error
                            .is_some_and(|e| e.contains("the handler panicked: job 7 hit a bug"))
                })
        },
    )
    .await;
    slow.started.notified().await; // `fatal.slow` is mid-call (job 7)
    assert!(!running.is_finished(), "a panic stops nothing");

    osa_events::publish(db.pool(), &Job { n: 2 }).await.unwrap();
    eventually(WAIT, "job 2 given back", || async {
        delivery(&db, "fatal.each", 2)
            .await
            .is_some_and(|(status, attempts, error)| {
                status == "pending" && attempts == 0 && error.is_some()
            })
    })
    .await;
    osa_events::publish(db.pool(), &Job { n: 3 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !running.is_finished(),
        "the other handler's running call is waited for"
    );
    slow.release.notify_one();

    let error = tokio::time::timeout(WAIT, running)
        .await
        .expect("the runtime stops by itself")
        .expect("no panic")
        .expect_err("run returns the fatal error");
    let message = error.to_string();
    assert!(
        message.starts_with(
            "handler `fatal.each` stopped the runtime with a fatal error at `test.fatal.job` event"
        ) && message.ends_with(
            "its deliveries were given back, not failed: table `records` has no column `title`"
        ),
        "{message}"
    );
    let Error::Fatal {
        source, position, ..
    } = &error
    else {
        panic!("not Error::Fatal: {error:?}");
    };
    assert!(
        source.downcast_ref::<SchemaMismatch>().is_some(),
        "{source:?}"
    );
    assert!(message.contains(&format!("(position {position})")));

    assert_eq!(
        slow.finished.load(Ordering::SeqCst),
        1,
        "finished, not aborted"
    );
    let (status, attempts, last_error) = delivery(&db, "fatal.each", 2).await.unwrap();
    assert_eq!((status.as_str(), attempts), ("pending", 0));
    let last_error = last_error.unwrap();
    assert!(
        last_error.contains("attempt 1 not counted: handler `fatal.each` stopped the runtime with a fatal error: table `records` has no column `title`"),
        "{last_error}"
    );
    assert_eq!(
        delivery(&db, "fatal.each", 3).await,
        Some(("pending".into(), 0, None)),
        "nothing claimed once stopping"
    );
    assert_eq!(
        delivery(&db, "fatal.slow", 3).await,
        Some(("pending".into(), 0, None)),
        "the other handler stopped too"
    );
    assert_eq!(
        db.deliveries(Some("claimed")).await,
        0,
        "no claim left held"
    );
    assert_eq!(db.deliveries(Some("dead")).await, 0);
    assert!(!calls.0.lock().unwrap().contains(&3));
}

#[tokio::test]
async fn one_fatal_event_of_a_tx_batch_rolls_back_and_gives_back_the_batch() {
    let db = Db::new().await;
    sqlx::query("create table ledger (n int not null)")
        .execute(db.pool())
        .await
        .unwrap();
    let jobs: Vec<Outgoing> = (0..4).map(|n| Outgoing::new(&Job { n }).unwrap()).collect();
    let running = run(&db, &["fatal.tx_batch"], Resources::new()).await;
    osa_events::publish_batch(db.pool(), &jobs).await.unwrap();

    let error = tokio::time::timeout(WAIT, running)
        .await
        .expect("the runtime stops by itself")
        .expect("no panic")
        .expect_err("run returns the fatal error");
    assert!(
        matches!(&error, Error::Fatal { handler, .. } if handler == "fatal.tx_batch"),
        "{error}"
    );
    assert!(
        error.to_string().ends_with("the ledger is corrupt"),
        "{error}"
    );
    let ledger: i64 = sqlx::query_scalar("select count(*) from ledger")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(ledger, 0, "the batch's transaction rolled back");
    let rows: Vec<(String, i32)> = sqlx::query_as(
        "select status, attempts from osa_events.deliveries order by event_position",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 4, "none completed");
    assert!(
        rows.iter()
            .all(|(status, attempts)| status == "pending" && *attempts == 0),
        "all given back: {rows:?}"
    );
}
