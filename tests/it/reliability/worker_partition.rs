//! 9. Worker partition: the network between a worker and PostgreSQL drops every packet while its
//!    `Tx` handler runs; the worker cancels the handler before its claim expires, the server ends
//!    its sessions within seconds, and another worker takes the delivery over and completes it.
//!
//! Two runtimes in this process, each with its own pool: the first (`a`) claims the event and
//! its handler takes a row lock in its transaction and then works for a minute; once a heartbeat
//! has extended the claim, the test cuts every connection of `a` with iptables
//! (`osa_events_fixtures::pg::Partition`). `a`'s pool is built from `PgStore::pool_options` with at
//! most 2 connections, all cut, so it cannot reach the server at all, as in a real partition.
//! Nothing fails and nothing answers: only the bound on each claim extension makes `a` give up and
//! cancel the handler (before the claim it last extended expires), and only the keepalive
//! settings of the pool's sessions make the server end `a`'s open transaction, whose row lock
//! the second runtime (`b`), taking the delivery over, waits on. The event must be handled once:
//! `a`'s writes rolled back, `b`'s committed.
//!
//! Cutting a connection needs root and iptables (installed with apt when missing): outside CI a
//! machine without them skips the test with a note; under `CI=true` it fails.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use osa_events::prelude::*;
use osa_events::{PgStore, Runtime};
use osa_events_fixtures::pg::{Partition, TestDatabase, unless_unavailable};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;

use super::{eventually, report, serial};

const HANDLER: &str = "partition.worker";
/// The application name of `a`'s sessions, to find them in `pg_stat_activity`.
const CUT_APP: &str = "osa-events worker partition a";
/// From the cut until `b` has completed the delivery: the claim's expiry (3 s after the last
/// extension), then the server ending `a`'s session (3 idle seconds, 3 probes a second apart),
/// then `b`'s next poll.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(15);

const DDL: &str =
    "create table partition_counter (id int primary key, n int not null, last_by text);
     insert into partition_counter values (1, 0, null)";

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.partition.job")]
struct Job {
    n: u32,
}

/// One runtime's handler calls, in wall-clock time (comparable with the database's on this
/// machine).
#[derive(Debug)]
struct Worker {
    name: &'static str,
    work: Duration,
    started: Mutex<Vec<SystemTime>>,
    cancelled: Mutex<Vec<SystemTime>>,
    finished: Mutex<Vec<SystemTime>>,
}

impl Worker {
    fn new(name: &'static str, work: Duration) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            name,
            work,
            started: Mutex::default(),
            cancelled: Mutex::default(),
            finished: Mutex::default(),
        })
    }

    fn times(list: &Mutex<Vec<SystemTime>>) -> Vec<SystemTime> {
        list.lock().unwrap().clone()
    }
}

/// Records a cancellation when dropped before it is finished.
struct Call<'a>(&'a Worker, bool);

impl Drop for Call<'_> {
    fn drop(&mut self) {
        let list = if self.1 {
            &self.0.finished
        } else {
            &self.0.cancelled
        };
        list.lock().unwrap().push(SystemTime::now());
    }
}

#[event_handler(
    name = "partition.worker",
    batch = 1,
    claim_timeout = "3s",
    poll = "100ms"
)]
async fn locked_and_slow(_job: Job, mut tx: Tx, worker: State<Worker>) -> Result<(), HandlerError> {
    // Unnamed statements: this test does not depend on the statement cache of either pool.
    sqlx::query("update partition_counter set n = n + 1, last_by = $1 where id = 1")
        .persistent(false)
        .bind(worker.name)
        .execute(&mut *tx)
        .await?;
    worker.started.lock().unwrap().push(SystemTime::now());
    let mut call = Call(&worker, false);
    tokio::time::sleep(worker.work).await;
    call.1 = true;
    Ok(())
}

async fn start(store: PgStore, worker: std::sync::Arc<Worker>) -> CancellationToken {
    let shutdown = CancellationToken::new();
    let runtime = Runtime::builder(store)
        .only([HANDLER])
        .resources(Resources::new().with_arc(worker))
        .handle_signals(false)
        .shutdown_token(shutdown.clone())
        .build()
        .expect("runtime builds");
    runtime.register().await.expect("subscription registers");
    // A cut-off runtime may not return in time; the test's end drops it.
    tokio::spawn(runtime.run());
    shutdown
}

/// The server sessions of `a` in this database.
async fn sessions(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "select pid from pg_stat_activity where application_name = $1 \
         and datname = current_database()",
    )
    .bind(CUT_APP)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// When the delivery's claim expires, by the database's clock.
async fn claim_expiry(pool: &PgPool) -> SystemTime {
    let epoch: f64 = sqlx::query_scalar(
        "select extract(epoch from run_at)::float8 from osa_events.deliveries \
         where status = 'claimed'",
    )
    .fetch_one(pool)
    .await
    .expect("the delivery is claimed");
    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_worker_cancels_its_handler_before_the_claim_expires_and_another_takes_over() {
    let _turn = serial().await;
    let database = TestDatabase::create()
        .await
        .unwrap_or_else(|error| panic!("no test database: {error}"));
    let pool = database.pool().clone();
    let direct = PgStore::from_pool(pool.clone());
    direct.migrate().await.expect("migrations apply");
    sqlx::raw_sql(DDL).execute(&pool).await.unwrap();

    let options: PgConnectOptions = database.url().parse().unwrap();
    let cut_pool = PgStore::pool_options()
        .max_connections(2)
        .connect_with(options.application_name(CUT_APP))
        .await
        .unwrap();
    let a = Worker::new("a", Duration::from_secs(60));
    let a_runtime = start(PgStore::from_pool(cut_pool), a.clone()).await;
    osa_events::publish(&pool, &Job { n: 1 }).await.unwrap();
    eventually(Duration::from_secs(10), "a's handler started", || async {
        !Worker::times(&a.started).is_empty()
    })
    .await;
    // After the first heartbeat (a third of the claim timeout), so the pool holds both its
    // connections: the transaction's and the one the heartbeat extends with.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let pids = sessions(&pool).await;
    assert!(
        pids.len() >= 2,
        "a has its transaction's and its heartbeat's sessions, found {pids:?}"
    );
    let mut partitions = Vec::new();
    for pid in &pids {
        let Some(partition) = unless_unavailable(
            Partition::cut_session(&pool, *pid).await,
            "cutting the worker's connections",
        ) else {
            return;
        };
        partitions.push(partition);
    }
    let cut_at = Instant::now();
    let cut_wall = SystemTime::now();
    // No extension can reach the server any more: this is the claim's last expiry.
    let expires_at = claim_expiry(&pool).await;

    let b = Worker::new("b", Duration::ZERO);
    let b_runtime = start(PgStore::connect(database.url()).await.unwrap(), b.clone()).await;
    eventually(TAKEOVER_LIMIT, "b completed the delivery", || async {
        !Worker::times(&b.finished).is_empty()
            && sqlx::query_scalar::<_, i64>("select count(*) from osa_events.deliveries")
                .fetch_one(&pool)
                .await
                .unwrap()
                == 0
    })
    .await;
    let takeover = cut_at.elapsed();
    let a_session_ended = sessions(&pool).await.len() < pids.len();

    let cancelled = Worker::times(&a.cancelled);
    assert_eq!(cancelled.len(), 1, "a's handler was cancelled once");
    let before_expiry = expires_at
        .duration_since(cancelled[0])
        .unwrap_or_else(|late| panic!("a's handler was cancelled {:?} late", late.duration()));
    assert!(
        Worker::times(&a.finished).is_empty(),
        "a's handler finished"
    );
    let b_started = Worker::times(&b.started);
    assert_eq!(b_started.len(), 1);
    assert!(
        b_started[0] >= expires_at,
        "b took over before the claim expired"
    );
    let (n, last_by): (i32, String) =
        sqlx::query_as("select n, last_by from partition_counter where id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (n, last_by.as_str()),
        (1, "b"),
        "a's transaction rolled back, b's committed"
    );
    report(
        "worker_partition",
        &[
            (
                "cancelled_after_cut",
                format!(
                    "{} ms",
                    cancelled[0].duration_since(cut_wall).unwrap().as_millis()
                ),
            ),
            (
                "cancelled_before_expiry",
                format!("{} ms", before_expiry.as_millis()),
            ),
            ("takeover", format!("{} ms", takeover.as_millis())),
            ("a_session_ended", a_session_ended.to_string()),
        ],
    );
    drop(partitions);
    a_runtime.cancel();
    b_runtime.cancel();
}
