//! Projections on SQLite (no PostgreSQL needed): the log's order is commit order, checked rather
//! than assumed; a real `#[projection]` run by the runtime applies every event once and in order;
//! a second process takes a projection over within the lease when its leader is killed, and at
//! once when it stops; a batch is read while another writer holds the lock; a batch read before a
//! reset commits none of its effects.
//!
//! `osa-events-sqlite/src/projection/read.rs` argues why position order is commit order on
//! SQLite (positions are handed out under the write lock). The first test checks that argument
//! against concurrent publishers on two stores opened on one file (two pools, as two processes
//! would have), with transactions that publish, linger holding the lock, publish more, and
//! sometimes roll back, while a leadership reads batch after batch and a watcher on the other
//! store checks that what is visible only ever grows at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use osa_events::prelude::*;
use osa_events::store::{Checkpoint, Leadership, ProjectionStore};
use osa_events::{Runtime, SqliteStore};
use osa_events_testing::Rng;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::support::{SEED_VAR, eventually};

/// One event of a publishing transaction: who published it, in which transaction, its place in
/// it, and the head of the log the transaction saw before it published (`None` when it did not
/// look).
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[event(name = "test.sqlite.order.step")]
struct Step {
    publisher: u64,
    tx: u64,
    seq: u64,
    seen_head: Option<i64>,
}

/// An event of another type in the same transactions: the projection reads past it.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.sqlite.order.noise")]
struct Noise {
    publisher: u64,
    tx: u64,
}

const ORDER: &str = "test.sqlite.log_reader";
const STEPS: &[&str] = &[Step::NAME];

/// Opens a second store on `store`'s file: its own pool, as another process would have.
async fn second_process(store: &SqliteStore) -> SqliteStore {
    SqliteStore::open(store.path())
        .await
        .expect("open the same file again")
}

async fn migrated_temporary() -> SqliteStore {
    let store = SqliteStore::temporary().await.expect("a temporary store");
    store.migrate().await.expect("migrate");
    store
}

/// What one publisher did: the steps of the transactions it committed, and the transactions it
/// rolled back.
#[derive(Default)]
struct Published {
    committed: Vec<Step>,
    rolled_back: BTreeSet<(u64, u64)>,
}

/// Publisher `publisher`: `transactions` transactions on `store`. Each begins either with the
/// write lock (`begin`, reading the head first) or deferred (`pool().begin()`, as an application's
/// own transaction: the lock is taken at the first publish), publishes, holds the lock a moment,
/// publishes more, and commits, or one in four rolls back.
async fn publish(store: SqliteStore, seed: u64, publisher: u64, transactions: u64) -> Published {
    let mut random = Rng::fork(seed, publisher);
    let mut done = Published::default();
    for tx_number in 0..transactions {
        let immediate = random.chance(0.5);
        let mut tx = if immediate {
            store.begin().await.expect("begin immediate")
        } else {
            store.pool().begin().await.expect("begin deferred")
        };
        let seen_head: Option<i64> = if immediate {
            Some(
                sqlx::query_scalar("select coalesce(max(position), 0) from events")
                    .fetch_one(&mut *tx)
                    .await
                    .expect("read the head"),
            )
        } else {
            None
        };
        let mut steps = Vec::new();
        let first = 1 + random.below(3);
        let second = 1 + random.below(2);
        for seq in 0..first + second {
            if seq == first {
                tokio::time::sleep(random.duration(Duration::ZERO..Duration::from_millis(4))).await;
                if random.chance(0.5) {
                    osa_events::sqlite::publish(
                        &mut tx,
                        &Noise {
                            publisher,
                            tx: tx_number,
                        },
                    )
                    .await
                    .expect("publish noise");
                }
            }
            let step = Step {
                publisher,
                tx: tx_number,
                seq,
                seen_head,
            };
            osa_events::sqlite::publish(&mut tx, &step)
                .await
                .expect("publish a step");
            steps.push(step);
        }
        tokio::time::sleep(random.duration(Duration::ZERO..Duration::from_millis(2))).await;
        if random.below(4) == 0 {
            tx.rollback().await.expect("roll back");
            done.rolled_back.insert((publisher, tx_number));
        } else {
            tx.commit().await.expect("commit");
            done.committed.extend(steps);
        }
        // Let the others in between transactions too.
        tokio::time::sleep(random.duration(Duration::ZERO..Duration::from_millis(2))).await;
    }
    done
}

/// Reads projection [`ORDER`]'s batches until `finished` was set before a read that found
/// nothing: checks each batch starts at the checkpoint and goes strictly forward, sometimes drops
/// a batch and checks the next read returns the same events; returns every step read, in order.
async fn read_all(store: SqliteStore, seed: u64, finished: Arc<AtomicBool>) -> Vec<(i64, Step)> {
    let mut random = Rng::fork(seed, u64::MAX);
    let mut leadership = store
        .try_lead(ORDER, "reader", Duration::ZERO)
        .await
        .expect("try to lead")
        .expect("nobody else leads");
    let mut read: Vec<(i64, Step)> = Vec::new();
    let mut checkpoint = Checkpoint::default();
    loop {
        let was_finished = finished.load(Ordering::SeqCst);
        let limit = 1 + u32::try_from(random.below(7)).expect("small");
        let mut batch = leadership
            .next_batch(STEPS, limit)
            .await
            .expect("read a batch");
        if !batch.events.is_empty() && random.chance(0.1) {
            // Abandoned: the checkpoint stays, and the same events come again.
            let abandoned: Vec<i64> = batch.events.iter().map(|e| e.fence.position).collect();
            drop(batch);
            batch = leadership
                .next_batch(STEPS, limit)
                .await
                .expect("read the batch again");
            let again: Vec<i64> = batch.events.iter().map(|e| e.fence.position).collect();
            assert_eq!(
                again[..abandoned.len().min(again.len())],
                abandoned[..abandoned.len().min(again.len())],
                "an abandoned batch is read again from the same checkpoint (seed {seed})"
            );
        }
        assert_eq!(
            batch.advance.from, checkpoint,
            "each batch starts at the checkpoint"
        );
        assert_eq!(
            batch.advance.to.commit_seq,
            u64::try_from(batch.advance.to.position).expect("positive"),
            "on SQLite a position is its own commit number"
        );
        for event in &batch.events {
            assert!(
                event.fence.position > checkpoint.position
                    && read
                        .last()
                        .is_none_or(|(last, _)| event.fence.position > *last),
                "position {} read after the checkpoint had passed {} (seed {seed})",
                event.fence.position,
                checkpoint.position
            );
            let step: Step = serde_json::from_str(&event.payload).expect("a step");
            read.push((event.fence.position, step));
        }
        if batch.advance.to != batch.advance.from {
            assert!(batch.advance.to > batch.advance.from);
            let to = batch.advance.to;
            leadership
                .commit(batch.advance, batch.transaction)
                .await
                .expect("commit the batch");
            checkpoint = to;
        } else if was_finished {
            // Every publisher had finished before this read, which found nothing new.
            break;
        }
        tokio::time::sleep(random.duration(Duration::ZERO..Duration::from_millis(3))).await;
    }
    leadership.resign().await;
    read
}

/// Watches the log from `store` (another pool) until `finished`: every read of the positions must
/// extend the previous one at its end. A transaction whose positions became visible after higher
/// ones would show as a position appearing below one already seen. Returns how many reads it made.
async fn watch_the_log_grow_at_its_end(store: SqliteStore, finished: Arc<AtomicBool>) -> u64 {
    let mut seen: Vec<i64> = Vec::new();
    let mut reads = 0;
    while !finished.load(Ordering::SeqCst) {
        let now: Vec<i64> = sqlx::query_scalar("select position from events order by position")
            .fetch_all(store.pool())
            .await
            .expect("read the positions");
        assert!(
            now.len() >= seen.len() && now[..seen.len()] == seen[..],
            "the visible log changed below its end: {} positions seen, then {} with a different \
             prefix",
            seen.len(),
            now.len()
        );
        seen = now;
        reads += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    reads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_read_in_commit_order_across_connections_and_processes() {
    let seed = Rng::from_env_or_random(SEED_VAR).seed();
    let store = migrated_temporary().await;
    let other = second_process(&store).await;
    let finished = Arc::new(AtomicBool::new(false));

    let reader = tokio::spawn(read_all(store.clone(), seed, Arc::clone(&finished)));
    let watcher = tokio::spawn(watch_the_log_grow_at_its_end(
        other.clone(),
        Arc::clone(&finished),
    ));
    let publishers: Vec<_> = (0..6)
        .map(|publisher| {
            let on = if publisher % 2 == 0 { &store } else { &other };
            tokio::spawn(publish(on.clone(), seed, publisher, 15))
        })
        .collect();
    let mut committed: Vec<Step> = Vec::new();
    let mut rolled_back: BTreeSet<(u64, u64)> = BTreeSet::new();
    for publisher in publishers {
        let done = publisher.await.expect("a publisher");
        committed.extend(done.committed);
        rolled_back.extend(done.rolled_back);
    }
    finished.store(true, Ordering::SeqCst);
    let read = reader.await.expect("the reader");
    let watched = watcher.await.expect("the watcher");
    assert!(watched > 10, "the watcher read the log {watched} times");
    assert!(
        !rolled_back.is_empty(),
        "some transactions rolled back (seed {seed})"
    );

    // The whole log, by position, once everything committed.
    let log: Vec<(i64, String, String)> =
        sqlx::query_as("select position, event_type, payload from events order by position")
            .fetch_all(store.pool())
            .await
            .expect("read the log");
    let steps_in_log: Vec<(i64, Step)> = log
        .iter()
        .filter(|(_, event_type, _)| event_type == Step::NAME)
        .map(|(position, _, payload)| (*position, serde_json::from_str(payload).expect("a step")))
        .collect();
    assert_eq!(
        read, steps_in_log,
        "the projection read every step exactly once, in position order (seed {seed})"
    );

    // Exactly the committed steps, none of a rolled-back transaction.
    let mut expected = committed.clone();
    expected.sort();
    let mut found: Vec<Step> = read.iter().map(|(_, step)| step.clone()).collect();
    found.sort();
    assert_eq!(
        found, expected,
        "the committed steps, and only those (seed {seed})"
    );

    // Each transaction's events are one run of consecutive positions, in publish order: no other
    // transaction's events between them (writers are serialised), and each transaction's events
    // come after the head it saw.
    let mut runs: BTreeMap<(u64, u64), Vec<(usize, u64)>> = BTreeMap::new();
    for (index, (_, event_type, payload)) in log.iter().enumerate() {
        let value: serde_json::Value = serde_json::from_str(payload).expect("json");
        let key = (
            value["publisher"].as_u64().expect("publisher"),
            value["tx"].as_u64().expect("tx"),
        );
        assert!(
            !rolled_back.contains(&key),
            "an event of a rolled-back transaction: {key:?}"
        );
        let seq = if event_type == Step::NAME {
            value["seq"].as_u64().expect("seq")
        } else {
            u64::MAX
        };
        runs.entry(key).or_default().push((index, seq));
    }
    for (key, events) in &runs {
        let indices: Vec<usize> = events.iter().map(|(index, _)| *index).collect();
        assert!(
            indices.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "transaction {key:?}'s events are interleaved with another's: log indices {indices:?}"
        );
        let seqs: Vec<u64> = events
            .iter()
            .map(|(_, seq)| *seq)
            .filter(|seq| *seq != u64::MAX)
            .collect();
        assert!(
            seqs.iter().copied().eq(0..seqs.len() as u64),
            "transaction {key:?}'s steps in publish order: {seqs:?}"
        );
    }
    for (position, step) in &read {
        if let Some(head) = step.seen_head {
            assert!(
                *position > head,
                "step {step:?} at {position}, though its transaction had seen the log up to {head}"
            );
        }
    }
    println!(
        "{} steps read in order ({} events in the log, {} transactions committed, {} rolled \
         back); the watcher read the log {watched} times",
        read.len(),
        log.len(),
        runs.len(),
        rolled_back.len()
    );
    drop(other);
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.sqlite.placed")]
struct Placed {
    customer: String,
    cents: i64,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.sqlite.cancelled")]
struct Cancelled {
    customer: String,
    cents: i64,
}

#[derive(EventSet, Debug)]
enum OrderEvent {
    Placed(Placed),
    Cancelled(Cancelled),
}

/// Totals per customer in the store's own file, with each applied position recorded in the
/// order of application (unique: applying an event twice fails the batch).
#[projection(name = "test.sqlite.totals", batch = 25, poll = "20ms")]
async fn sqlite_totals(events: Batch<OrderEvent>, mut tx: Tx) -> Result<(), HandlerError> {
    for (ctx, event) in events.iter_with_ctx() {
        let (customer, cents) = match event {
            OrderEvent::Placed(e) => (&e.customer, e.cents),
            OrderEvent::Cancelled(e) => (&e.customer, -e.cents),
        };
        let conn = tx.sqlite().await?;
        sqlx::query(
            "insert into totals (customer, cents) values (?, ?) \
             on conflict (customer) do update set cents = cents + excluded.cents",
        )
        .bind(customer)
        .bind(cents)
        .execute(&mut *conn)
        .await?;
        sqlx::query("insert into applied (position) values (?)")
            .bind(ctx.position())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

const TOTALS: &str = "test.sqlite.totals";
const WAIT: Duration = Duration::from_secs(30);

async fn with_read_model(store: &SqliteStore) {
    for statement in [
        "create table totals (customer text primary key, cents integer not null)",
        "create table applied (seq integer primary key autoincrement, position integer not null unique)",
    ] {
        sqlx::query(statement)
            .execute(store.pool())
            .await
            .expect("create the read model");
    }
}

async fn read_model(store: &SqliteStore) -> BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as("select customer, cents from totals")
        .fetch_all(store.pool())
        .await
        .expect("read the totals");
    rows.into_iter().filter(|(_, cents)| *cents != 0).collect()
}

async fn applied(store: &SqliteStore) -> i64 {
    sqlx::query_scalar("select count(*) from applied")
        .fetch_one(store.pool())
        .await
        .expect("count applied")
}

/// `publishers` tasks publish `per_publisher` orders each (some cancelled in the same transaction),
/// each transaction lingering before it commits. Returns the expected totals and the event count.
async fn publish_orders(
    store: &SqliteStore,
    seed: u64,
    publishers: u64,
    per_publisher: u64,
) -> (BTreeMap<String, i64>, i64) {
    let tasks: Vec<_> = (0..publishers)
        .map(|publisher| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut random = Rng::fork(seed, publisher);
                let mut truth: BTreeMap<String, i64> = BTreeMap::new();
                let mut count = 0;
                for _ in 0..per_publisher {
                    let customer = format!("c{}", random.below(5));
                    let cents = i64::try_from(random.below(1000)).expect("small") + 1;
                    let mut tx = store.begin().await.expect("begin");
                    let placed = Placed {
                        customer: customer.clone(),
                        cents,
                    };
                    osa_events::sqlite::publish(&mut tx, &placed)
                        .await
                        .expect("publish");
                    count += 1;
                    *truth.entry(customer.clone()).or_default() += cents;
                    if random.below(3) == 0 {
                        let cancelled = Cancelled {
                            customer: customer.clone(),
                            cents,
                        };
                        osa_events::sqlite::publish(&mut tx, &cancelled)
                            .await
                            .expect("publish");
                        count += 1;
                        *truth.entry(customer).or_default() -= cents;
                    }
                    tokio::time::sleep(random.duration(Duration::ZERO..Duration::from_millis(5)))
                        .await;
                    tx.commit().await.expect("commit");
                    tokio::time::sleep(random.duration(Duration::ZERO..Duration::from_millis(5)))
                        .await;
                }
                (truth, count)
            })
        })
        .collect();
    let mut truth = BTreeMap::new();
    let mut total = 0;
    for task in tasks {
        let (partial, count) = task.await.expect("a publisher");
        for (customer, cents) in partial {
            *truth.entry(customer).or_default() += cents;
        }
        total += count;
    }
    truth.retain(|_, cents| *cents != 0);
    (truth, total)
}

/// The leader of [`TOTALS`], as the status shows it.
async fn leader(store: &SqliteStore) -> Option<String> {
    store
        .status(TOTALS, &[Placed::NAME, Cancelled::NAME])
        .await
        .expect("projection status")
        .leader
}

/// A runtime running [`TOTALS`] on `store` as `instance`, stopped by the returned token.
fn start(
    store: &SqliteStore,
    instance: &str,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<osa_events::Result<()>>,
) {
    let shutdown = CancellationToken::new();
    let runtime = Runtime::builder(store.clone())
        .only([TOTALS])
        .handle_signals(false)
        .instance_name(instance)
        .shutdown_token(shutdown.clone())
        .build()
        .expect("the runtime builds");
    (shutdown, tokio::spawn(runtime.run()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_applies_every_event_once_and_in_order_on_sqlite() {
    let seed = Rng::from_env_or_random(SEED_VAR).seed();
    let store = migrated_temporary().await;
    with_read_model(&store).await;
    let (shutdown, running) = start(&store, "node");
    let (truth, count) = publish_orders(&store, seed, 4, 25).await;
    eventually(WAIT, "every event applied", || async {
        applied(&store).await == count
    })
    .await;
    shutdown.cancel();
    running
        .await
        .expect("the runtime does not panic")
        .expect("the runtime stops cleanly");
    assert_eq!(read_model(&store).await, truth, "seed {seed}");
    let positions: Vec<i64> = sqlx::query_scalar("select position from applied order by seq")
        .fetch_all(store.pool())
        .await
        .expect("read the applied positions");
    let log: Vec<i64> = sqlx::query_scalar("select position from events order by position")
        .fetch_all(store.pool())
        .await
        .expect("read the log");
    assert_eq!(
        positions, log,
        "every event applied once, in log order (seed {seed})"
    );
    let status = store
        .status(TOTALS, &[Placed::NAME, Cancelled::NAME])
        .await
        .expect("status");
    assert_eq!(
        (status.lag, status.position),
        (0, *log.last().expect("events"))
    );
    assert_eq!(status.last_error, None);
    assert_eq!(
        status.leader, None,
        "a stopped runtime resigns its leadership"
    );
}

/// Runs [`TOTALS`] as `node-a` on a store of its own, on a Tokio runtime of its own in a thread of
/// its own, until `kill` fires; then tears that runtime down without letting any task run again:
/// like a killed process, it releases nothing (its lease stays until it expires).
fn start_killable_node(
    path: std::path::PathBuf,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (kill, killed) = tokio::sync::oneshot::channel::<()>();
    let node = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a Tokio runtime");
        runtime.block_on(async move {
            let store = SqliteStore::open(&path).await.expect("open the file");
            let (_shutdown, _running) = start(&store, "node-a");
            let _ = killed.await;
        });
        runtime.shutdown_background();
    });
    (kill, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_takes_over_within_the_lease_when_the_leader_is_killed() {
    let seed = Rng::from_env_or_random(SEED_VAR).seed();
    let store = migrated_temporary().await;
    with_read_model(&store).await;
    let (kill, node_a) = start_killable_node(store.path().to_owned());
    eventually(WAIT, "node-a leads", || async {
        leader(&store)
            .await
            .is_some_and(|name| name.ends_with("node-a"))
    })
    .await;
    // The second process, on a pool of its own.
    let store_b = second_process(&store).await;
    let (stop_b, node_b) = start(&store_b, "node-b");
    let publishing = {
        let store = store.clone();
        tokio::spawn(async move { publish_orders(&store, seed, 2, 30).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    kill.send(()).expect("node-a runs");
    let killed_at = Instant::now();
    tokio::task::spawn_blocking(move || node_a.join().expect("node-a's thread"))
        .await
        .expect("join node-a");
    let lease: (Option<String>, f64) = sqlx::query_as(
        "select leader, lease_until - unixepoch('subsec') from checkpoints where name = ?",
    )
    .bind(TOTALS)
    .fetch_one(store.pool())
    .await
    .expect("read the lease");
    assert!(
        lease
            .0
            .as_deref()
            .is_some_and(|name| name.ends_with("node-a"))
            && lease.1 > 0.0,
        "a killed leader releases nothing: its lease stays until it expires: {lease:?}"
    );

    eventually(Duration::from_secs(20), "node-b leads", || async {
        leader(&store)
            .await
            .is_some_and(|name| name.ends_with("node-b"))
    })
    .await;
    let took = killed_at.elapsed();
    println!("node-b took over {took:?} after node-a was killed");
    assert!(
        took <= Duration::from_secs(12),
        "node-b took over {took:?} after the kill: more than the 10 s lease allows"
    );
    let (truth, count) = publishing.await.expect("the publishers");
    eventually(WAIT, "every event applied", || async {
        applied(&store).await == count
    })
    .await;
    assert_eq!(read_model(&store).await, truth, "seed {seed}");
    stop_b.cancel();
    node_b
        .await
        .expect("node-b does not panic")
        .expect("node-b stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_takes_over_at_once_when_the_leader_stops() {
    let store = migrated_temporary().await;
    with_read_model(&store).await;
    let (stop_a, node_a) = start(&store, "node-a");
    eventually(WAIT, "node-a leads", || async {
        leader(&store)
            .await
            .is_some_and(|name| name.ends_with("node-a"))
    })
    .await;
    let store_b = second_process(&store).await;
    let (stop_b, node_b) = start(&store_b, "node-b");
    // node-b follows, polling the lease while node-a holds it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        leader(&store)
            .await
            .is_some_and(|name| name.ends_with("node-a"))
    );

    stop_a.cancel();
    node_a
        .await
        .expect("node-a does not panic")
        .expect("node-a stops cleanly");
    let stopped_at = Instant::now();
    eventually(WAIT, "node-b leads", || async {
        leader(&store)
            .await
            .is_some_and(|name| name.ends_with("node-b"))
    })
    .await;
    let took = stopped_at.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "a resigned lease is taken at once, not at its expiry: {took:?}"
    );
    stop_b.cancel();
    node_b
        .await
        .expect("node-b does not panic")
        .expect("node-b stops cleanly");
}

/// `store` with steps `0..count` of one transaction committed, and the leadership of [`ORDER`]
/// taken by a reader.
async fn published_and_led(store: &SqliteStore, count: u64) -> Box<dyn Leadership> {
    let mut tx = store.begin().await.expect("begin");
    for seq in 0..count {
        let step = Step {
            publisher: 0,
            tx: 0,
            seq,
            seen_head: None,
        };
        osa_events::sqlite::publish(&mut tx, &step)
            .await
            .expect("publish");
    }
    tx.commit().await.expect("commit");
    store
        .try_lead(ORDER, "reader", Duration::ZERO)
        .await
        .expect("try to lead")
        .expect("nobody else leads")
}

#[tokio::test]
async fn a_batch_is_read_while_another_writer_holds_the_lock() {
    let store = migrated_temporary().await;
    let mut leadership = published_and_led(&store, 3).await;

    // Another writer (a long `Tx` handler, another process) holds SQLite's write lock.
    let writer = store.begin().await.expect("take the write lock");
    let batch = tokio::time::timeout(Duration::from_secs(2), leadership.next_batch(STEPS, 10))
        .await
        .expect("a batch is read without waiting for the writer")
        .expect("read a batch");
    assert_eq!(batch.events.len(), 3);
    let idle_check = tokio::time::timeout(Duration::from_secs(2), leadership.next_batch(STEPS, 10))
        .await
        .expect("reading again does not wait either")
        .expect("read a batch");
    assert_eq!(
        idle_check.events.len(),
        3,
        "not committed yet: the same events"
    );
    drop(idle_check);
    // The commit writes, so it waits for the lock, and goes through once the writer is done.
    let to = batch.advance.to;
    let (committed, ()) =
        tokio::join!(leadership.commit(batch.advance, batch.transaction), async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            writer.rollback().await.expect("release the lock");
        });
    committed.expect("commit once the lock is free");
    let status = store.status(ORDER, STEPS).await.expect("status");
    assert_eq!(status.position, to.position);
}

#[tokio::test]
async fn a_batch_read_before_a_reset_commits_none_of_its_effects() {
    let store = migrated_temporary().await;
    with_read_model(&store).await;
    let mut leadership = published_and_led(&store, 2).await;
    let mut batch = leadership.next_batch(STEPS, 10).await.expect("read");
    assert_eq!(batch.events.len(), 2);
    // A rebuild from the beginning (the read model cleared with it) lands while the batch is
    // applied, before the projection's first statement.
    store
        .reset(ORDER, osa_events::ResetTo::Beginning)
        .await
        .expect("reset");
    let transaction = batch.transaction.as_mut().expect("a batch transaction");
    let conn = osa_events::sqlite::connection(&mut **transaction)
        .await
        .expect("open the batch's transaction")
        .expect("an SQLite transaction");
    for event in &batch.events {
        sqlx::query("insert into applied (position) values (?)")
            .bind(event.fence.position)
            .execute(&mut *conn)
            .await
            .expect("apply");
    }
    leadership
        .commit(batch.advance, batch.transaction)
        .await
        .expect("the commit succeeds, and the reset stands");
    assert_eq!(applied(&store).await, 0, "the batch's effects rolled back");
    assert_eq!(
        store.status(ORDER, STEPS).await.expect("status").position,
        0
    );
    let again = leadership.next_batch(STEPS, 10).await.expect("read again");
    assert_eq!(again.events.len(), 2, "read again from the reset");
}
