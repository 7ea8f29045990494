//! Behind PgBouncer in transaction mode.
//!
//! Handlers work there once the store is told (`PgStore::through_transaction_pooler`): claims,
//! completions, failures, heartbeats, `Tx` handlers and publishes run as unnamed statements in
//! transactions, so the pooler moving clients between server sessions breaks nothing, and
//! wake-ups come from a direct connection (`PgStore::listen_directly`) or from polling.
//!
//! Projections' leadership is a session advisory lock, which such a pooler breaks, so leading
//! through it must fail with the runtime's error naming the pooler, never lead on one server
//! session while the lock sits on another, never make a second leader of a session that already
//! holds the lock, and never move a checkpoint.
use std::time::Duration;

use osa_events::prelude::*;
use osa_events::store::ProjectionStore;
use osa_events::{Error, PgStore, PgUnnamed};
use osa_events_fixtures::pg::{PgBouncer, TestDatabase, unless_unavailable};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Row};

const PROJECTION: &str = "test.pooled";
const EVENT_TYPES: &[&str] = &["test.pooled.happened"];

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.pooled.happened")]
struct Happened {
    n: i64,
}

#[tokio::test]
async fn projection_leadership_through_a_transaction_pooler_fails_naming_it() {
    // Without the cache, sqlx prepares each statement anew on the session it runs on, so the
    // leader's check runs wherever pgbouncer puts it and sees the lock on another session.
    let Some(error) = lead_through_pgbouncer(|options| options.statement_cache_capacity(0)).await
    else {
        return;
    };
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("pooler in transaction mode (PgBouncer `pool_mode = transaction`)"),
        "{message}"
    );
}

#[tokio::test]
async fn projection_leadership_through_a_transaction_pooler_fails_naming_it_with_the_statement_cache_too()
 {
    // With sqlx's default statement cache: the leader's own statements are unnamed, so its check
    // runs on the new session too, instead of failing for a missing prepared statement.
    let Some(error) = lead_through_pgbouncer(|options| options).await else {
        return;
    };
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    assert!(
        error.to_string().contains("pooler in transaction mode"),
        "{error}"
    );
}

#[tokio::test]
async fn a_second_client_of_the_pooler_never_leads_on_the_leaders_session() {
    let database = migrated_database_with_events().await;
    let Some(bouncer) = start_bouncer(database.url()) else {
        return;
    };
    let first = PgStore::connect(bouncer.url()).await.unwrap();
    let second = PgStore::connect(bouncer.url()).await.unwrap();
    let leadership = first
        .try_lead(PROJECTION, "first", Duration::ZERO)
        .await
        .expect("the first client takes the lock")
        .expect("nobody else leads");
    // pgbouncer hands the most recently released server session out first: the one that just
    // took the lock. Advisory locks are re-entrant, so a plain try-lock there would succeed.
    let holder = lock_holder(database.pool()).await;
    let mut refusals = 0;
    // Which session each try gets depends on what else the pooler hands out meanwhile: under a
    // full test suite's load ten tries once all got other sessions, so it tries fifty times.
    for _ in 0..50 {
        match second.try_lead(PROJECTION, "second", Duration::ZERO).await {
            Ok(None) => {}
            Ok(Some(_)) => panic!("a second leader of `{PROJECTION}` through the pooler"),
            Err(error @ Error::Config(_)) => {
                assert!(error.to_string().contains("already holds"), "{error}");
                refusals += 1;
            }
            Err(error) => panic!("unexpected error: {error:?}"),
        }
    }
    assert!(
        refusals > 0,
        "the leader's session was never handed to the second client"
    );
    assert_eq!(
        lock_holder(database.pool()).await,
        holder,
        "refusing leaves the leader's session and its lock alone"
    );
    leadership.resign().await;
}

/// A fresh, migrated database holding 3 events of the projection's type.
async fn migrated_database_with_events() -> TestDatabase {
    let database = TestDatabase::create()
        .await
        .unwrap_or_else(|error| panic!("no test database: {error}"));
    let direct = PgStore::from_pool(database.pool().clone());
    direct
        .migrate()
        .await
        .expect("migrations apply to a fresh database");
    for n in 0..3 {
        osa_events::publish(direct.pool(), &Happened { n })
            .await
            .unwrap();
    }
    database
}

/// In a fresh database with events of the projection's types, takes the lead of [`PROJECTION`]
/// through PgBouncer (`configure` sets the client's connect options), then reads a batch while
/// another client's transaction holds the server session that took the lock. Returns the error
/// of `try_lead` or `next_batch`, after checking that the batch was not read and the checkpoint
/// did not move; `None` when the test is skipped for want of pgbouncer.
async fn lead_through_pgbouncer(
    configure: impl FnOnce(PgConnectOptions) -> PgConnectOptions,
) -> Option<Error> {
    let database = migrated_database_with_events().await;
    let bouncer = start_bouncer(database.url())?;
    let options: PgConnectOptions = bouncer.url().parse().unwrap();
    let pooled = PgStore::from_pool(
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with(configure(options))
            .await
            .unwrap(),
    );

    let error = match pooled.try_lead(PROJECTION, "t", Duration::ZERO).await {
        // The lock and its confirmation ran on different server sessions.
        Err(error) => error,
        Ok(None) => panic!("nothing else leads `{PROJECTION}`, yet try_lead found it taken"),
        Ok(Some(mut leadership)) => {
            let holder = lock_holder(database.pool()).await;
            // The leader's session is idle between transactions: another client's transaction
            // takes it, so the leader's next transaction must run on another session.
            let pinned = pin_session(&bouncer, holder).await;
            let batch = leadership.next_batch(EVENT_TYPES, 10).await;
            drop(pinned);
            leadership.resign().await;
            match batch {
                Ok(batch) => panic!(
                    "next_batch read {} event(s) on a server session other than {holder}, \
                     which holds the lock",
                    batch.events.len()
                ),
                Err(error @ Error::Config(_)) => {
                    let message = error.to_string();
                    assert!(
                        message.contains(&format!("still held by session {holder}")),
                        "{message}"
                    );
                    error
                }
                Err(error) => error,
            }
        }
    };

    let checkpoint = checkpoint(database.pool()).await;
    assert!(
        checkpoint
            .as_ref()
            .is_none_or(|(position, commit_seq)| *position == 0 && *commit_seq == 0),
        "the checkpoint moved: {checkpoint:?}"
    );
    Some(error)
}

/// Starts pgbouncer in front of `url`, or panics with the reason. Outside CI, a machine that has
/// no pgbouncer and cannot install it skips the test with a note; under `CI=true` it fails.
fn start_bouncer(url: &str) -> Option<PgBouncer> {
    unless_unavailable(
        PgBouncer::start_transaction_mode(url),
        "pgbouncer in transaction mode",
    )
}

/// The process id of the server session holding [`PROJECTION`]'s lock in `pool`'s database
/// (advisory locks are per database, and other tests take the same one in theirs).
async fn lock_holder(pool: &PgPool) -> i32 {
    sqlx::query_scalar(
        "select pid from pg_locks where locktype = 'advisory' and granted and objsubid = 2 \
         and objid = hashtext('osa_events.projection:' || $1)::oid \
         and database = (select oid from pg_database where datname = current_database())",
    )
    .bind(PROJECTION)
    .fetch_one(pool)
    .await
    .expect("one session holds the projection's lock")
}

/// Opens transactions through `bouncer`, each on its own client connection, until one runs on
/// server session `pid`, and returns them open. pgbouncer hands out the most recently released
/// idle session first, so the first one does; at most `pool_size - 1` are opened, leaving a
/// session for the client under test.
async fn pin_session(bouncer: &PgBouncer, pid: i32) -> Vec<PgConnection> {
    let mut open = Vec::new();
    let mut seen = Vec::new();
    while open.len() + 1 < bouncer.pool_size() as usize {
        let mut conn = PgConnection::connect(bouncer.url()).await.unwrap();
        // Simple queries: nothing is prepared on the shared sessions.
        sqlx::raw_sql("begin").execute(&mut conn).await.unwrap();
        let row = sqlx::raw_sql("select pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let session: i32 = row.get(0);
        open.push(conn);
        if session == pid {
            return open;
        }
        seen.push(session);
    }
    panic!("no transaction through pgbouncer ran on session {pid} (they ran on {seen:?})");
}

/// `(position, commit_seq)` of [`PROJECTION`]'s checkpoint, if it has one.
async fn checkpoint(pool: &PgPool) -> Option<(i64, i64)> {
    sqlx::query_as("select position, commit_seq from osa_events.checkpoints where name = $1")
        .bind(PROJECTION)
        .fetch_optional(pool)
        .await
        .unwrap()
}

const PUBLISHERS: u32 = 4;
const PER_PUBLISHER: u32 = 40;

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.pooled.job")]
struct PooledJob {
    n: i32,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.pooled.done")]
struct PooledDone {
    n: i32,
}

/// Which `PooledDone` events the plain handler saw succeed, and how many attempts failed.
#[derive(Default)]
struct Seen {
    done: std::sync::Mutex<std::collections::BTreeSet<i32>>,
    failed: std::sync::atomic::AtomicUsize,
}

/// A `Tx` handler: writes its effect and publishes a follow-up event in its transaction, through
/// the pooler. Every 40th call outlasts a heartbeat.
#[event_handler(
    name = "pooled.tx",
    batch = 4,
    concurrency = 3,
    poll = "50ms",
    claim_timeout = "3s"
)]
async fn pooled_tx(job: PooledJob, mut tx: Tx) -> Result<(), HandlerError> {
    sqlx::query("insert into pooled_effects (n) values ($1)")
        .bind(job.n)
        .execute(PgUnnamed::new(&mut tx))
        .await?;
    osa_events::publish(PgUnnamed::new(&mut tx), &PooledDone { n: job.n }).await?;
    if job.n % 40 == 0 {
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    Ok(())
}

/// A plain handler: completions without a transaction; every 7th event fails its first attempt.
#[event_handler(
    name = "pooled.plain",
    batch = 8,
    concurrency = 3,
    poll = "50ms",
    backoff = "10ms"
)]
async fn pooled_plain(done: PooledDone, seen: State<Seen>, ctx: Ctx) -> Result<(), HandlerError> {
    if done.n % 7 == 0 && ctx.attempt() == 1 {
        seen.failed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        return Err(HandlerError::retry(
            "first attempts of every 7th event fail",
        ));
    }
    seen.done.lock().unwrap().insert(done.n);
    Ok(())
}

/// A fresh, migrated database with the `Tx` handler's table, and pgbouncer in front of it.
async fn pooled_database() -> Option<(TestDatabase, PgBouncer)> {
    let database = TestDatabase::create()
        .await
        .unwrap_or_else(|error| panic!("no test database: {error}"));
    PgStore::from_pool(database.pool().clone())
        .migrate()
        .await
        .expect("migrations apply to a fresh database");
    sqlx::raw_sql("create table pooled_effects (n int primary key)")
        .execute(database.pool())
        .await
        .unwrap();
    let bouncer = start_bouncer(database.url())?;
    Some((database, bouncer))
}

/// Starts the two pooled handlers on `store`; returns its shutdown token and task.
async fn start_pooled(
    store: PgStore,
    seen: std::sync::Arc<Seen>,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<osa_events::Result<()>>,
) {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let runtime = osa_events::Runtime::builder(store)
        .only(["pooled.tx", "pooled.plain"])
        .resources(Resources::new().with_arc(seen))
        .handle_signals(false)
        .shutdown_token(shutdown.clone())
        .build()
        .expect("runtime builds");
    runtime.register().await.expect("subscriptions register");
    (shutdown, tokio::spawn(runtime.run()))
}

#[tokio::test]
async fn handlers_claim_complete_and_publish_through_a_transaction_pooler() {
    let Some((database, bouncer)) = pooled_database().await else {
        return;
    };
    // sqlx's defaults, statement cache included: the store's statements must not depend on it.
    // Relaxed bookkeeping too: behind the pooler each bookkeeping transaction sets it itself.
    let store = PgStore::connect(bouncer.url())
        .await
        .unwrap()
        .through_transaction_pooler()
        .relaxed_bookkeeping();
    let seen = std::sync::Arc::new(Seen::default());
    let (shutdown, running) = start_pooled(store.clone(), seen.clone()).await;

    // Publishers share the pooler with the workers, each transaction on whichever session.
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let pool = store.pool().clone();
            tokio::spawn(async move {
                for i in 0..PER_PUBLISHER {
                    let n = (p * PER_PUBLISHER + i) as i32;
                    let mut tx = pool.begin().await.unwrap();
                    osa_events::publish(PgUnnamed::new(&mut tx), &PooledJob { n })
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let total = (PUBLISHERS * PER_PUBLISHER) as usize;
    let direct = database.pool();
    crate::support::eventually(
        Duration::from_secs(60),
        "every job and its follow-up handled",
        || async {
            seen.done.lock().unwrap().len() == total
                && sqlx::query_scalar::<_, i64>("select count(*) from osa_events.deliveries")
                    .fetch_one(direct)
                    .await
                    .unwrap()
                    == 0
        },
    )
    .await;
    shutdown.cancel();
    running
        .await
        .expect("the runtime does not panic")
        .expect("the runtime stops cleanly");

    let effects: i64 = sqlx::query_scalar("select count(*) from pooled_effects")
        .fetch_one(direct)
        .await
        .unwrap();
    assert_eq!(effects as usize, total, "each `Tx` effect written once");
    let events: i64 = sqlx::query_scalar("select count(*) from osa_events.events")
        .fetch_one(direct)
        .await
        .unwrap();
    assert_eq!(
        events as usize,
        2 * total,
        "jobs and follow-ups published once"
    );
    assert_eq!(
        seen.failed.load(std::sync::atomic::Ordering::SeqCst),
        total.div_ceil(7),
        "each 7th event failed once, then succeeded"
    );
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.pooled.woken")]
struct Woken {
    n: i32,
}

/// Polls only every 30 s: handled sooner only when a wake-up arrives.
#[event_handler(name = "pooled.woken", poll = "30s")]
async fn pooled_woken(_event: Woken, seen: State<Seen>) -> Result<(), HandlerError> {
    seen.done.lock().unwrap().insert(0);
    Ok(())
}

#[tokio::test]
async fn wake_ups_come_from_a_direct_connection_behind_a_transaction_pooler() {
    let Some((database, bouncer)) = pooled_database().await else {
        return;
    };
    let store = PgStore::connect(bouncer.url())
        .await
        .unwrap()
        .through_transaction_pooler()
        .listen_directly(database.url())
        .unwrap();
    let seen = std::sync::Arc::new(Seen::default());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let runtime = osa_events::Runtime::builder(store.clone())
        .only(["pooled.woken"])
        .resources(Resources::new().with_arc(seen.clone()))
        .handle_signals(false)
        .shutdown_token(shutdown.clone())
        .build()
        .expect("runtime builds");
    runtime.register().await.expect("subscription registers");
    let running = tokio::spawn(runtime.run());
    // Let the worker make its first (empty) claim and go to sleep, and the listener connect.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut tx = store.pool().begin().await.unwrap();
    osa_events::publish(PgUnnamed::new(&mut tx), &Woken { n: 1 })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    crate::support::eventually(
        Duration::from_secs(10),
        "the event handled long before the next poll",
        || async { !seen.done.lock().unwrap().is_empty() },
    )
    .await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

const DRAIN_EVENTS: u32 = 1_000;

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.pooled.drained")]
struct Drained {
    n: u32,
}

#[event_handler(name = "pooled.drain", batch = 32, poll = "10ms")]
async fn pooled_drain(_event: Drained, seen: State<Seen>) -> Result<(), HandlerError> {
    seen.failed
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

/// Drains [`DRAIN_EVENTS`] events published directly, with `store`'s workers; returns how long.
async fn drain_with(store: PgStore, direct: &PgPool) -> Duration {
    let seen = std::sync::Arc::new(Seen::default());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let runtime = osa_events::Runtime::builder(store)
        .only(["pooled.drain"])
        .resources(Resources::new().with_arc(seen.clone()))
        .handle_signals(false)
        .shutdown_token(shutdown.clone())
        .build()
        .expect("runtime builds");
    runtime.register().await.expect("subscription registers");
    let events: Vec<osa_events::Outgoing> = (0..DRAIN_EVENTS)
        .map(|n| osa_events::Outgoing::new(&Drained { n }).unwrap())
        .collect();
    osa_events::publish_batch(direct, &events).await.unwrap();
    let started = std::time::Instant::now();
    let running = tokio::spawn(runtime.run());
    crate::support::eventually(Duration::from_secs(60), "the events drained", || async {
        sqlx::query_scalar::<_, i64>("select count(*) from osa_events.deliveries")
            .fetch_one(direct)
            .await
            .unwrap()
            == 0
    })
    .await;
    let took = started.elapsed();
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(
        seen.failed.load(std::sync::atomic::Ordering::SeqCst),
        DRAIN_EVENTS as usize,
        "each event handled once"
    );
    took
}

#[tokio::test]
async fn a_drain_through_a_transaction_pooler_handles_each_event_once_and_reports_its_cost() {
    let Some((database, bouncer)) = pooled_database().await else {
        return;
    };
    let direct = drain_with(
        PgStore::connect(database.url()).await.unwrap(),
        database.pool(),
    )
    .await;
    // The pooler mode's statements alone, without the pooler's hop.
    let unnamed = drain_with(
        PgStore::connect(database.url())
            .await
            .unwrap()
            .through_transaction_pooler(),
        database.pool(),
    )
    .await;
    let pooled = drain_with(
        PgStore::connect(bouncer.url())
            .await
            .unwrap()
            .through_transaction_pooler(),
        database.pool(),
    )
    .await;
    println!(
        "\nPOOLER drain of {DRAIN_EVENTS} events, batch 32, one loop: direct {} ms; direct with \
         through_transaction_pooler {} ms ({:.2}x); through pgbouncer in transaction mode {} ms \
         ({:.2}x)",
        direct.as_millis(),
        unnamed.as_millis(),
        unnamed.as_secs_f64() / direct.as_secs_f64(),
        pooled.as_millis(),
        pooled.as_secs_f64() / direct.as_secs_f64()
    );
}
