//! 13. Database server crash with relaxed bookkeeping: the PostgreSQL server itself crashes
//!     (`pg_ctl stop -m immediate`) mid-drain and restarts with crash recovery, under workers
//!     whose store commits its bookkeeping asynchronously (`PgStore::relaxed_bookkeeping`).
//!
//! `relaxed_bookkeeping` promises that a crash of the database server may take back the
//! bookkeeping of its last moments (claims and completions committed with
//! `synchronous_commit = off` whose WAL the server had not written yet), never an event, and that
//! a lost completion only makes its event be handled again. This test holds it to that against
//! real crashes of a server of its own (a [`ThrowawayCluster`]; the shared server is never
//! crashed).
//!
//! Two runtimes in this process, each with its own relaxed `PgStore`, run a plain handler (its
//! ledger row in a synchronous statement of its own on the store's main pool: duplicates
//! visible) and a `Tx` handler (its row and its completion in one synchronous transaction: no
//! duplicate possible). Each store is wrapped in [`Acknowledging`], which writes down every claim
//! and completion the database acknowledged, and when. Afterwards, an acknowledged completion
//! followed by another handling of its event is one a crash took back; two acknowledged claims
//! of the same attempt mean the first was taken back.
//!
//! Each round publishes 1,000 events (synchronous commits, a chunk retried with the same ids
//! when an outage interrupts it) over a second, and crashes the server once: in even rounds
//! mid-drain, while publishing and handling run; in odd rounds the moment every delivery so far
//! is completed, when the plain handler's last completions (it works 2 ms per event, so it
//! finishes after the `Tx` handler) are the last writes, asynchronous ones: the worst moment for
//! relaxed bookkeeping. The server stays down 0-500 ms, restarts on the same port and data
//! directory and replays its WAL; the runtimes reconnect by themselves. Afterwards: every event
//! handled by both handlers (lost = 0), nothing pending, claimed or dead, no `Tx` duplicate,
//! every completion or claim taken back acknowledged before a crash, duplicates within
//! crashes x loops x 2 batches, and the server log shows one crash recovery per crash.
//! `OSA_RELIABILITY_SCALE` multiplies the rounds.

mod acknowledged;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osa_events::prelude::*;
use osa_events::store::SubscriptionId;
use osa_events::{ConnectRetry, Outgoing, PgStore, Runtime};
use osa_events_fixtures::pg::{TestDatabase, ThrowawayCluster, unless_unavailable};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::acknowledged::{Acknowledging, Book, TakenBack};
use super::{Open, Scene, replay_hint, report, scaled, seeded_rng, serial};

const LEDGER: &str = "server_crash.ledger";
const TX: &str = "server_crash.tx";
const RUNTIMES: i32 = 2;
/// Both handlers' `concurrency` and `batch`.
const LOOPS: i64 = 2;
const BATCH: i64 = 16;
const PER_ROUND: i64 = 1000;
/// The plain handler's work per event: it makes the plain handler finish a round after the `Tx`
/// handler, so that the last writes of a round are its asynchronous completions.
const WORK: Duration = Duration::from_millis(2);
/// What the server logs when it starts after a crash.
const RECOVERY: &str = "database system was not properly shut down; automatic recovery in progress";

const RECORD_SQL: &str =
    "insert into chaos_ledger (handler, seq, pid, attempt) values ($1, $2, $3, $4)";

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.server_crash.item")]
struct Item {
    seq: i64,
}

/// Event `seq`, with a deterministic id: a chunk retried after an ambiguous `COMMIT` skips the
/// events already stored.
fn item(seq: i64) -> Outgoing {
    Outgoing::new(&Item { seq })
        .expect("an item serializes")
        .with_id(Uuid::from_u64_pair(0x7365_7276_6572_5f63, seq as u64))
}

/// One runtime's handlers' state: its number (the ledger's `pid` column) and its store's main
/// pool, whose commits are synchronous.
#[derive(Debug)]
struct Worker {
    id: i32,
    pool: PgPool,
}

fn attempt(ctx: &Ctx) -> i32 {
    i32::try_from(ctx.attempt()).unwrap_or(i32::MAX)
}

/// After [`WORK`], the ledger row in a statement of its own, after which the (asynchronous)
/// completion follows: a completion the crash takes back shows as a second row.
#[event_handler(
    name = "server_crash.ledger",
    batch = 16,
    concurrency = 2,
    claim_timeout = "3s",
    retries = 100,
    backoff = "50ms",
    max_backoff = "1s",
    poll = "250ms"
)]
async fn ledger(item: Item, worker: State<Worker>, ctx: Ctx) -> Result<(), HandlerError> {
    tokio::time::sleep(WORK).await;
    sqlx::query(RECORD_SQL)
        .bind(LEDGER)
        .bind(item.seq)
        .bind(worker.id)
        .bind(attempt(&ctx))
        .execute(&worker.pool)
        .await?;
    Ok(())
}

/// The ledger row through the `Tx`, which carries the fenced completion: one synchronous commit.
#[event_handler(
    name = "server_crash.tx",
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
    worker: State<Worker>,
    ctx: Ctx,
    mut tx: Tx,
) -> Result<(), HandlerError> {
    sqlx::query(RECORD_SQL)
        .bind(TX)
        .bind(item.seq)
        .bind(worker.id)
        .bind(attempt(&ctx))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// One crash: how much work was open when it began and right after the recovery, when it began
/// and when the server was gone (`pg_ctl stop` returned), and how long until the server accepted
/// connections again.
#[derive(Debug)]
struct Crash {
    mid_drain: bool,
    open: Open,
    open_after: Open,
    began: Instant,
    gone: Instant,
    outage: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_crash_takes_back_only_bookkeeping_which_shows_as_duplicates() {
    let _turn = serial().await;
    let Some(mut cluster) = unless_unavailable(
        ThrowawayCluster::start(),
        "a PostgreSQL cluster of the test's own, to crash",
    ) else {
        return;
    };
    let scene = scene_on(&cluster).await;
    let mut rng = seeded_rng();
    let seed = rng.seed();
    let replay = replay_hint(seed);
    let rounds = scaled(2) as i64;
    let events = rounds * PER_ROUND;
    let started = Instant::now();

    let mut runtimes = Vec::new();
    for id in 1..=RUNTIMES {
        runtimes.push(Running::start(scene.url(), id).await);
    }
    scene.subscribed(&[LEDGER, TX]).await;

    let mut crashes: Vec<Crash> = Vec::new();
    let mut publish_retries = 0;
    for round in 0..rounds {
        let seqs = round * PER_ROUND..(round + 1) * PER_ROUND;
        let publishing = tokio::spawn(publish(
            scene.pool.clone(),
            seqs.clone(),
            Duration::from_secs(1),
        ));
        let mid_drain = round % 2 == 0;
        let publishing = if mid_drain {
            tokio::time::sleep(
                rng.duration(Duration::from_millis(200)..Duration::from_millis(1200)),
            )
            .await;
            Some(publishing)
        } else {
            publish_retries += publishing.await.expect("the publishing task");
            settled(&scene, &replay).await;
            None
        };
        let open = scene.open().await;
        let began = Instant::now();
        tokio::task::block_in_place(|| cluster.crash()).expect("crash the server");
        let gone = Instant::now();
        tokio::time::sleep(rng.duration(Duration::ZERO..Duration::from_millis(500))).await;
        tokio::task::block_in_place(|| cluster.restart()).expect("restart the crashed server");
        let outage = began.elapsed();
        keep_server_log(&cluster, &scene);
        // At once: the runtimes are reconnecting, but a delivery whose completion was taken back
        // is claimed again only when its claim expires, seconds later.
        let open_after = scene.open().await;
        crashes.push(Crash {
            mid_drain,
            open,
            open_after,
            began,
            gone,
            outage,
        });
        if let Some(publishing) = publishing {
            publish_retries += publishing.await.expect("the publishing task");
        }
    }

    scene
        .drained(Duration::from_secs(60 + scaled(6)), &format!("seed {seed}"))
        .await;
    let open = scene.open().await;
    let mut books = Vec::new();
    for running in runtimes {
        books.push(running.stop(&replay).await);
    }

    let (rows, distinct) = scene.ledger(LEDGER).await;
    let (tx_rows, tx_distinct) = scene.ledger(TX).await;
    let lost_ledger = scene.missing(LEDGER, events).await;
    let lost_tx = scene.missing(TX, events).await;
    let duplicates = rows - distinct;
    // Per claim loop and crash: the last batch whose completion the crash took back, and the next
    // batch, whose claim went with it (one commit), handled on by its loop after the restart and
    // by another loop that claimed it again.
    let bound = crashes.len() as i64 * i64::from(RUNTIMES) * LOOPS * 2 * BATCH;
    let taken_back = {
        let ledger = SubscriptionId(
            sqlx::query_scalar("select id from osa_events.subscriptions where name = $1")
                .bind(LEDGER)
                .fetch_one(&scene.pool)
                .await
                .expect("the ledger handler's subscription"),
        );
        let last_attempt: HashMap<i64, i32> = sqlx::query_as::<_, (i64, i32)>(
            "select e.position, max(l.attempt) from chaos_ledger l \
             join osa_events.events e on (e.payload->>'seq')::bigint = l.seq \
             where l.handler = $1 group by e.position",
        )
        .bind(LEDGER)
        .fetch_all(&scene.pool)
        .await
        .expect("read the ledger")
        .into_iter()
        .collect();
        let times: Vec<(Instant, Instant)> = crashes.iter().map(|c| (c.began, c.gone)).collect();
        TakenBack::find(&books, &times, ledger, &last_attempt)
    };
    let recoveries = keep_server_log(&cluster, &scene).matches(RECOVERY).count();
    let refused: u64 = books.iter().map(|book| book.refused).sum();
    let unknown_fences: u64 = books.iter().map(|book| book.unknown_fences).sum();

    report(
        "server_crash",
        &[
            ("events", events.to_string()),
            ("runtimes", RUNTIMES.to_string()),
            ("crashes", crashes.len().to_string()),
            (
                "mid_drain",
                crashes.iter().filter(|c| c.mid_drain).count().to_string(),
            ),
            ("recoveries", recoveries.to_string()),
            (
                "open_at_crash",
                format!(
                    "{:?}",
                    crashes
                        .iter()
                        .map(|c| c.open.unfinished())
                        .collect::<Vec<_>>()
                ),
            ),
            (
                "open_after_recovery",
                format!(
                    "{:?}",
                    crashes
                        .iter()
                        .map(|c| c.open_after.unfinished())
                        .collect::<Vec<_>>()
                ),
            ),
            (
                "max_outage",
                format!(
                    "{:.0?}",
                    crashes.iter().map(|c| c.outage).max().unwrap_or_default()
                ),
            ),
            ("publish_retries", publish_retries.to_string()),
            (
                "completions_taken_back",
                format!("{:?}", taken_back.completions),
            ),
            ("claims_taken_back", format!("{:?}", taken_back.claims)),
            ("oldest_taken_back", format!("{:.0?}", taken_back.oldest)),
            ("completions_refused", refused.to_string()),
            ("duplicates", duplicates.to_string()),
            (
                "duplicates_per_crash",
                format!("{:.1}", duplicates as f64 / crashes.len() as f64),
            ),
            ("duplicate_bound", bound.to_string()),
            ("tx_duplicates", (tx_rows - tx_distinct).to_string()),
            ("lost", (lost_ledger.len() + lost_tx.len()).to_string()),
            ("stuck", open.unfinished().to_string()),
            ("dead", open.dead.to_string()),
            ("seconds", format!("{:.1}", started.elapsed().as_secs_f64())),
            ("seed", seed.to_string()),
        ],
    );
    assert_eq!(
        recoveries,
        crashes.len(),
        "every restart ran crash recovery {replay}"
    );
    assert!(
        lost_ledger.is_empty(),
        "{LEDGER} never saw {lost_ledger:?} {replay}"
    );
    assert!(lost_tx.is_empty(), "{TX} never saw {lost_tx:?} {replay}");
    assert_eq!(open, Open::NONE, "{replay}");
    assert_eq!(
        tx_rows, tx_distinct,
        "a Tx handler's effect was duplicated {replay}"
    );
    assert_eq!(
        unknown_fences, 0,
        "completions of fences no claim handed out {replay}"
    );
    assert_eq!(
        (
            taken_back.unexplained_completions,
            taken_back.unexplained_claims
        ),
        (0, 0),
        "acknowledged completions and claims were taken back with no crash after them {replay}"
    );
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates, over crashes x runtimes x loops x 2 batches = {bound} {replay}"
    );
}

/// A [`Scene`] on `cluster` rather than on the server of `DATABASE_URL`: a fresh, migrated
/// database with the ledger.
async fn scene_on(cluster: &ThrowawayCluster) -> Scene {
    let database = TestDatabase::create_on(cluster.url())
        .await
        .unwrap_or_else(|error| panic!("no database on the throwaway cluster: {error}"));
    Scene::migrated(Scene::on("server_crash", database)).await
}

/// The cluster's server log, also copied to the scene's logs, which are kept when the test fails
/// (the cluster's directory goes with it).
fn keep_server_log(cluster: &ThrowawayCluster, scene: &Scene) -> String {
    let log = std::fs::read_to_string(cluster.dir().join("server.log")).unwrap_or_default();
    let _ = std::fs::write(scene.logs.join("server.log"), &log);
    log
}

/// A runtime of both handlers on a relaxed store of its own, running in a task.
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<osa_events::Result<()>>,
    book: Arc<Mutex<Book>>,
}

impl Running {
    async fn start(url: &str, id: i32) -> Running {
        let pool = PgStore::pool_options().max_connections(8);
        let store = PgStore::connect_with_pool(url, pool, ConnectRetry::default())
            .await
            .expect("a worker connects")
            .relaxed_bookkeeping();
        for (pool, expected) in [(store.pool(), "on"), (store.bookkeeping_pool(), "off")] {
            let setting: String = sqlx::query_scalar("show synchronous_commit")
                .fetch_one(pool)
                .await
                .expect("read synchronous_commit");
            assert_eq!(
                setting, expected,
                "synchronous_commit of the main pool (on) and of the bookkeeping pool (off)"
            );
        }
        let book = Arc::new(Mutex::new(Book::default()));
        let shutdown = CancellationToken::new();
        let runtime = Runtime::builder(Acknowledging {
            inner: store.clone(),
            book: Arc::clone(&book),
        })
        .only([LEDGER, TX])
        .resources(Resources::new().with(Worker {
            id,
            pool: store.pool().clone(),
        }))
        .handle_signals(false)
        .shutdown_token(shutdown.clone())
        .build()
        .expect("the runtime builds");
        Running {
            shutdown,
            task: tokio::spawn(runtime.run()),
            book,
        }
    }

    /// Checks the runtime ran on through the crashes, stops it, and returns its book.
    async fn stop(self, replay: &str) -> Book {
        assert!(
            !self.task.is_finished(),
            "a runtime stopped during the crashes {replay}"
        );
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the runtime stops within 20 s")
            .expect("the runtime's task")
            .expect("the runtime ran without error");
        std::mem::take(&mut *self.book.lock().expect("the book's lock is never poisoned"))
    }
}

/// Publishes `seqs` in chunks of 50 spread over `over`, each chunk tried again with the same
/// ids until it commits; returns how many tries failed.
async fn publish(pool: PgPool, seqs: Range<i64>, over: Duration) -> u32 {
    const CHUNK: i64 = 50;
    let chunks = (seqs.end - seqs.start + CHUNK - 1) / CHUNK;
    let pause = over / u32::try_from(chunks.max(1)).unwrap_or(u32::MAX);
    let mut failures = 0;
    for first in seqs.clone().step_by(CHUNK as usize) {
        let batch: Vec<Outgoing> = (first..seqs.end.min(first + CHUNK)).map(item).collect();
        while let Err(error) = osa_events::publish_batch(&pool, &batch).await {
            failures += 1;
            assert!(failures < 300, "publishing did not recover: {error}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(pause).await;
    }
    failures
}

/// Waits, polling every 5 ms, until no delivery is pending or claimed, once every event is
/// published: the moment right after a round's last completions, which a crash then catches
/// before the WAL writer has written them. Only reads, which flush no WAL. (The ledger is checked
/// at the end: a handler that completes an event without recording it is found there.)
async fn settled(scene: &Scene, replay: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let open = scene.open().await;
        if open.unfinished() == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries still open after 60 s: {open:?} {replay}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
