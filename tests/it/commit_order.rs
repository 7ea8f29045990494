//! The log's order for projections: commit order, which is causal order (an event never comes
//! before one whose effects its publishing transaction could see); no gap below the commit
//! high-water mark; an order that survives a dump and restore into another cluster; resets that
//! do not deadlock with a running batch; and idle polls whose cost does not grow with the log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use osa_events::ResetTo;
use osa_events::prelude::*;
use osa_events::store::{Leadership, OpenBatch, ProjectionStore};
use osa_events_testing::sim::Rng;
use serde::{Deserialize, Serialize};

use crate::support::Db;

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.order.placed")]
struct Placed {
    order: i64,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.order.cancelled")]
struct Cancelled {
    order: i64,
}

/// A fact a publisher created, and the newest fact it had seen committed when it did.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.order.fact")]
struct Fact {
    n: i64,
    saw: i64,
}

async fn lead(db: &Db, name: &'static str) -> Box<dyn Leadership> {
    db.store
        .try_lead(name, "test", Duration::ZERO)
        .await
        .unwrap()
        .expect("nobody else leads")
}

/// Reads and commits batches of `types` until `count` events were read (or 30 s pass); their
/// event types and payloads, in the order read.
async fn read_all(
    leadership: &mut dyn Leadership,
    types: &'static [&'static str],
    count: usize,
) -> Vec<(String, String)> {
    let started = Instant::now();
    let mut read = Vec::new();
    while read.len() < count && started.elapsed() < Duration::from_secs(30) {
        let batch: OpenBatch = leadership.next_batch(types, 16).await.unwrap();
        if batch.events.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // An idle poll's batch commits as a no-op (the runner skips it).
        read.extend(
            batch
                .events
                .iter()
                .map(|event| (event.event_type.clone(), event.payload.clone())),
        );
        leadership
            .commit(batch.advance, batch.transaction)
            .await
            .unwrap();
    }
    read
}

/// Issue #12's reproduction under READ COMMITTED: T1 writes first (taking the lower transaction
/// id), T2 places order 1 and commits, T1 then reads the order and cancels it. By transaction id
/// the cancellation came first; in commit order it comes after the placement it saw.
#[tokio::test]
async fn a_cancellation_is_applied_after_the_placement_its_transaction_saw() {
    const TYPES: &[&str] = &[Placed::NAME, Cancelled::NAME];
    let db = Db::new().await;
    sqlx::query("create table orders (id bigint primary key)")
        .execute(db.pool())
        .await
        .unwrap();
    let mut t1 = db.pool().begin().await.unwrap();
    let first_xid: i64 = sqlx::query_scalar("select pg_current_xact_id()::text::int8")
        .fetch_one(&mut *t1)
        .await
        .unwrap();

    let mut t2 = db.pool().begin().await.unwrap();
    sqlx::query("insert into orders (id) values (1)")
        .execute(&mut *t2)
        .await
        .unwrap();
    osa_events::publish(&mut *t2, &Placed { order: 1 })
        .await
        .unwrap();
    let second_xid: i64 = sqlx::query_scalar("select pg_current_xact_id()::text::int8")
        .fetch_one(&mut *t2)
        .await
        .unwrap();
    t2.commit().await.unwrap();
    assert!(first_xid < second_xid, "T1 took the lower transaction id");

    let seen: Option<i64> = sqlx::query_scalar("select id from orders where id = 1")
        .fetch_optional(&mut *t1)
        .await
        .unwrap();
    assert_eq!(seen, Some(1), "READ COMMITTED: T1 sees T2's order");
    osa_events::publish(&mut *t1, &Cancelled { order: 1 })
        .await
        .unwrap();
    t1.commit().await.unwrap();

    let mut leadership = lead(&db, "test.order.states").await;
    let read = read_all(&mut *leadership, TYPES, 2).await;
    let types: Vec<&str> = read
        .iter()
        .map(|(event_type, _)| event_type.as_str())
        .collect();
    assert_eq!(types, [Placed::NAME, Cancelled::NAME]);
}

/// Eight publishers, each reading the newest committed fact and then publishing a new one that
/// names it, with random waits before the read and before the commit (each transaction takes its
/// id before it waits, so transactions with later ids commit facts it then sees). Every fact must
/// be read after the fact it saw.
#[tokio::test]
async fn read_then_publish_transactions_are_read_in_causal_order() {
    const TYPES: &[&str] = &[Fact::NAME];
    const PUBLISHERS: u64 = 8;
    const PER_PUBLISHER: u64 = 25;
    let db = Db::new().await;
    sqlx::query("create table facts (n bigserial primary key)")
        .execute(db.pool())
        .await
        .unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|publisher| {
            let pool = db.pool().clone();
            tokio::spawn(async move {
                let mut random = Rng::new(seed ^ publisher.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                for _ in 0..PER_PUBLISHER {
                    let mut tx = pool.begin().await.unwrap();
                    sqlx::query("select pg_current_xact_id()")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    // Long enough for others, with later ids, to commit meanwhile.
                    tokio::time::sleep(Duration::from_millis(random.below(20))).await;
                    let saw: i64 = sqlx::query_scalar("select coalesce(max(n), 0) from facts")
                        .fetch_one(&mut *tx)
                        .await
                        .unwrap();
                    let n: i64 = sqlx::query_scalar("insert into facts default values returning n")
                        .fetch_one(&mut *tx)
                        .await
                        .unwrap();
                    osa_events::publish(&mut *tx, &Fact { n, saw })
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(random.below(3))).await;
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    let mut leadership = lead(&db, "test.order.causal").await;
    let total = usize::try_from(PUBLISHERS * PER_PUBLISHER).unwrap();
    let read = read_all(&mut *leadership, TYPES, total).await;
    for task in tasks {
        task.await.unwrap();
    }
    let facts: Vec<Fact> = read
        .iter()
        .map(|(_, payload)| serde_json::from_str(payload).unwrap())
        .collect();
    assert_eq!(facts.len(), total, "every fact read once (seed {seed})");
    let index: HashMap<i64, usize> = facts.iter().enumerate().map(|(i, f)| (f.n, i)).collect();
    assert_eq!(index.len(), total, "no fact read twice (seed {seed})");
    let violations: Vec<&Fact> = facts
        .iter()
        .enumerate()
        .filter(|(at, fact)| fact.saw > 0 && index[&fact.saw] > *at)
        .map(|(_, fact)| fact)
        .collect();
    assert!(
        violations.is_empty(),
        "read before the fact they saw (seed {seed}): {violations:?}"
    );
}

/// A logical dump restored into another cluster, whose transaction ids are far lower than the
/// dumped ones: the projection keeps reading what is published there (by transaction id, the new
/// events sorted before its checkpoint and were skipped for ever).
#[tokio::test]
async fn a_projection_keeps_reading_after_a_restore_into_another_cluster() {
    const TYPES: &[&str] = &[Placed::NAME];
    let Some(cluster) = osa_events_testing::pg::unless_unavailable(
        osa_events_testing::pg::ThrowawayCluster::start(),
        "PostgreSQL's server programs (a second cluster to restore into)",
    ) else {
        return;
    };
    let source = Db::new().await;
    // Move the source's transaction ids well past a new cluster's (subtransactions take ids too).
    sqlx::raw_sql(
        "create table xid_burner (n int); \
         do $$ begin for i in 1..5000 loop \
             begin insert into xid_burner values (i); exception when others then null; end; \
         end loop; end $$",
    )
    .execute(source.pool())
    .await
    .unwrap();
    for order in 1..=3 {
        osa_events::publish(source.pool(), &Placed { order })
            .await
            .unwrap();
    }
    let mut leadership = lead(&source, "test.order.restored").await;
    assert_eq!(read_all(&mut *leadership, TYPES, 3).await.len(), 3);
    leadership.resign().await;

    let dump = cluster.dir().join("dump.sql");
    let source_url = source.url().await;
    let dumped = std::process::Command::new(cluster.program("pg_dump"))
        .args(["--no-owner", "--file"])
        .arg(&dump)
        .arg(&source_url)
        .status()
        .unwrap();
    assert!(dumped.success(), "pg_dump failed");
    let target = osa_events_testing::pg::TestDatabase::create_on(cluster.url())
        .await
        .unwrap();
    let restored = std::process::Command::new(cluster.program("psql"))
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null", "-f"])
        .arg(&dump)
        .arg(target.url())
        .status()
        .unwrap();
    assert!(restored.success(), "psql could not restore the dump");

    let db = Db::from_pool(target.pool().clone());
    db.store.migrate().await.unwrap();
    let target_xid: i64 = sqlx::query_scalar("select pg_current_xact_id()::text::int8")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(
        target_xid < 5000,
        "the new cluster's ids are lower: {target_xid}"
    );
    osa_events::publish(db.pool(), &Placed { order: 4 })
        .await
        .unwrap();
    let mut leadership = lead(&db, "test.order.restored").await;
    let read = read_all(&mut *leadership, TYPES, 1).await;
    assert_eq!(
        read.len(),
        1,
        "the event published after the restore is read"
    );
    let placed: Placed = serde_json::from_str(&read[0].1).unwrap();
    assert_eq!(
        placed.order, 4,
        "and only it: the checkpoint was restored too"
    );
    leadership.resign().await;
}

/// Batches of `test.order.slow` started so far.
static SLOW_BATCHES: AtomicUsize = AtomicUsize::new(0);

/// A projection whose batches wait half a second after locking the checkpoint (which every batch
/// does first) and before writing the read model, as a slow read model would.
#[projection(name = "test.order.slow", batch = 5, poll = "10ms")]
async fn slow_model(events: Batch<Placed>, mut tx: Tx) -> Result<(), HandlerError> {
    SLOW_BATCHES.fetch_add(1, AtomicOrdering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for event in &events {
        sqlx::query("insert into order_model (id) values ($1) on conflict do nothing")
            .bind(event.order)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Waits until a batch of `test.order.slow` starts after this call: it holds the checkpoint row
/// and has not written the read model yet, for half a second.
async fn wait_for_a_new_batch() {
    let before = SLOW_BATCHES.load(AtomicOrdering::SeqCst);
    let started = Instant::now();
    while SLOW_BATCHES.load(AtomicOrdering::SeqCst) == before {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no batch started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn last_error(db: &Db) -> Option<String> {
    db.store
        .projection_status()
        .await
        .unwrap()
        .into_iter()
        .find(|status| status.name == "test.order.slow")
        .and_then(|status| status.last_error)
}

/// Issue #12 item 4: the documented order (reset, then clear the read model) waits for a running
/// batch and succeeds; the old example's order (clear, then reset) deadlocks against it.
#[tokio::test]
async fn a_reset_in_the_documented_order_does_not_deadlock_with_a_running_batch() {
    const EVENTS: i64 = 15;
    let db = Db::new().await;
    sqlx::query("create table order_model (id bigint primary key)")
        .execute(db.pool())
        .await
        .unwrap();
    for order in 0..EVENTS {
        osa_events::publish(db.pool(), &Placed { order })
            .await
            .unwrap();
    }
    let running = db.start(&["test.order.slow"], Resources::new()).await;

    wait_for_a_new_batch().await;
    let mut tx = db.pool().begin().await.unwrap();
    osa_events::reset_projection(&mut *tx, "test.order.slow", ResetTo::Beginning)
        .await
        .unwrap();
    sqlx::query("truncate order_model")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(last_error(&db).await, None, "the batch was not disturbed");

    wait_for_a_new_batch().await;
    let mut tx = db.pool().begin().await.unwrap();
    sqlx::query("truncate order_model")
        .execute(&mut *tx)
        .await
        .unwrap();
    let reversed =
        osa_events::reset_projection(&mut *tx, "test.order.slow", ResetTo::Beginning).await;
    drop(tx);
    // PostgreSQL breaks the deadlock by aborting one side: the reset, or the batch (which the
    // runner records and retries).
    let reset_deadlocked =
        matches!(&reversed, Err(error) if error.to_string().contains("deadlock"));
    if !reset_deadlocked {
        crate::support::eventually(Duration::from_secs(10), "the batch deadlocked", || async {
            last_error(&db)
                .await
                .is_some_and(|error| error.contains("deadlock"))
        })
        .await;
    }

    crate::support::eventually(Duration::from_secs(60), "rebuilt", || async {
        sqlx::query_scalar::<_, i64>("select count(*) from order_model")
            .fetch_one(db.pool())
            .await
            .unwrap()
            == EVENTS
    })
    .await;
    running.stop().await;
}

/// Events of another type, `count` of them in one transaction, straight into the log.
async fn publish_others(db: &Db, count: u64) {
    sqlx::query(
        "insert into osa_events.events (id, event_type, event_version, payload) \
         select gen_random_uuid(), 'test.order.other', 1, '{}' from generate_series(1, $1)",
    )
    .bind(i64::try_from(count).unwrap())
    .execute(db.pool())
    .await
    .unwrap();
}

/// `(xmin, xmax, ctid)` of the checkpoint row: any write or row lock changes one of them.
async fn checkpoint_row_version(db: &Db, name: &str) -> (String, String, String) {
    sqlx::query_as(
        "select xmin::text, xmax::text, ctid::text from osa_events.checkpoints where name = $1",
    )
    .bind(name)
    .fetch_one(db.pool())
    .await
    .unwrap()
}

/// Issue #12 item 5: a batch that reaches the end of the settled log moves the checkpoint past
/// the events of other types it read over, and a poll with nothing new reads only: it neither
/// writes nor locks the checkpoint row.
#[tokio::test]
async fn a_projection_reads_past_other_types_and_polls_idle_without_writing() {
    const TYPES: &[&str] = &[Placed::NAME];
    const NAME: &str = "test.order.rare";
    let db = Db::new().await;
    osa_events::publish(db.pool(), &Placed { order: 1 })
        .await
        .unwrap();
    publish_others(&db, 1_000).await;
    let mut leadership = lead(&db, NAME).await;
    let batch = leadership.next_batch(TYPES, 10).await.unwrap();
    assert_eq!(batch.events.len(), 1);
    leadership
        .commit(batch.advance, batch.transaction)
        .await
        .unwrap();
    let last: i64 = sqlx::query_scalar("select max(position) from osa_events.events")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let status = db.store.status(NAME, TYPES).await.unwrap();
    assert_eq!(
        (status.position, status.lag),
        (last, 0),
        "the checkpoint is past the other types' events"
    );

    let before = checkpoint_row_version(&db, NAME).await;
    for _ in 0..5 {
        let idle = leadership.next_batch(TYPES, 10).await.unwrap();
        assert!(idle.events.is_empty());
        assert_eq!(idle.advance.from, idle.advance.to);
        assert!(
            idle.transaction.is_none(),
            "an idle poll opens no transaction"
        );
    }
    assert_eq!(
        checkpoint_row_version(&db, NAME).await,
        before,
        "idle polls neither wrote nor locked the checkpoint row"
    );
    leadership.resign().await;
}

/// The median time of a poll that finds one new event of another type, for a projection whose
/// last own event is `backlog` events of other types back.
async fn poll_after_backlog(backlog: u64) -> Duration {
    const TYPES: &[&str] = &[Placed::NAME];
    let db = Db::new().await;
    osa_events::publish(db.pool(), &Placed { order: 1 })
        .await
        .unwrap();
    publish_others(&db, backlog).await;
    sqlx::query("analyze osa_events.events, osa_events.commits")
        .execute(db.pool())
        .await
        .unwrap();
    let mut leadership = lead(&db, "test.order.flat").await;
    let first = leadership.next_batch(TYPES, 100).await.unwrap();
    leadership
        .commit(first.advance, first.transaction)
        .await
        .unwrap();
    let mut times = Vec::new();
    for _ in 0..15 {
        publish_others(&db, 1).await;
        let started = Instant::now();
        let batch = leadership.next_batch(TYPES, 100).await.unwrap();
        leadership
            .commit(batch.advance, batch.transaction)
            .await
            .unwrap();
        times.push(started.elapsed());
    }
    leadership.resign().await;
    times.sort();
    times[times.len() / 2]
}

/// Issue #12 item 5: the cost of a poll does not grow with the events of other types since the
/// projection's last own event (10,000 and 300,000 by default; `OSA_RELIABILITY_SCALE=long`
/// measures 10,000 and 1,000,000). A reader that rescans from its last own event reads them all
/// on every poll: at 300,000 that is a hundred milliseconds and more.
#[tokio::test]
async fn a_poll_costs_the_same_whatever_the_log_behind_it() {
    let _turn = crate::reliability::serial().await;
    let backlog = crate::reliability::scaled(100_000).max(300_000);
    let small = poll_after_backlog(10_000).await;
    let large = poll_after_backlog(backlog).await;
    println!(
        "poll after one new event: {small:?} behind 10,000 events, {large:?} behind {backlog}"
    );
    assert!(
        large < small * 4 + Duration::from_millis(25),
        "a poll behind a long log costs more: {small:?} vs {large:?}"
    );
}

/// Issue #12 item 6: a projection whose event types changed since its checkpoint was built does
/// not start, naming both sets and the two ways on; acknowledging the change lets it start.
#[tokio::test]
async fn a_projection_whose_event_types_changed_fails_start_up() {
    let db = Db::new().await;
    sqlx::query("create table order_model (id bigint primary key)")
        .execute(db.pool())
        .await
        .unwrap();
    // The checkpoint of an earlier build that read another set, past the beginning.
    sqlx::query(
        "insert into osa_events.checkpoints (name, position, commit_seq, event_types) \
         values ('test.order.slow', 7, 3, '{test.order.cancelled}')",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let runtime = osa_events::Runtime::builder(db.store.clone())
        .only(["test.order.slow"])
        .handle_signals(false)
        .build()
        .unwrap();
    let refused = runtime.run().await.unwrap_err();
    let message = refused.to_string();
    assert!(
        matches!(
            refused,
            osa_events::Error::ProjectionEventTypesChanged { .. }
        ) && message.contains("test.order.cancelled")
            && message.contains("test.order.placed")
            && message.contains("ResetTo::Beginning"),
        "{message}"
    );

    db.store
        .acknowledge_event_types("test.order.slow")
        .await
        .unwrap();
    let runtime = osa_events::Runtime::builder(db.store.clone())
        .only(["test.order.slow"])
        .handle_signals(false)
        .build()
        .unwrap();
    let shutdown = runtime.shutdown_token();
    let running = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.cancel();
    running.await.unwrap().expect("starts once acknowledged");
    let recorded: Vec<String> =
        sqlx::query_scalar("select event_types from osa_events.checkpoints where name = $1")
            .bind("test.order.slow")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(recorded, [Placed::NAME]);
}

/// Issue #12 item 2, the case a restore of the sequences misses: rows carried over without their
/// sequences (logical replication copies none) would number new commits below every checkpoint.
/// Projections refuse to read, naming the fix, and `migrate()` moves the sequences past the rows.
#[tokio::test]
async fn a_commit_sequence_left_behind_is_refused_until_migrate_rebases_it() {
    const TYPES: &[&str] = &[Placed::NAME];
    const NAME: &str = "test.order.rebased";
    let db = Db::new().await;
    for order in 1..=3 {
        osa_events::publish(db.pool(), &Placed { order })
            .await
            .unwrap();
    }
    let mut leadership = lead(&db, NAME).await;
    assert_eq!(read_all(&mut *leadership, TYPES, 3).await.len(), 3);
    // What a logical copy of the rows leaves: the sequences at their start.
    sqlx::raw_sql(
        "select setval('osa_events.commit_seq', 1, false); \
         select setval('osa_events.events_position_seq', 1, false); \
         select setval('osa_events.commits_id_seq', 1, false);",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let refused = leadership.next_batch(TYPES, 10).await.unwrap_err();
    assert!(
        refused.to_string().contains("commit_seq")
            && refused.to_string().contains("PgStore::migrate()"),
        "{refused:?}"
    );
    leadership.resign().await;

    db.store.migrate().await.unwrap();
    osa_events::publish(db.pool(), &Placed { order: 4 })
        .await
        .unwrap();
    let mut leadership = lead(&db, NAME).await;
    let read = read_all(&mut *leadership, TYPES, 1).await;
    let orders: Vec<i64> = read
        .iter()
        .map(|(_, payload)| serde_json::from_str::<Placed>(payload).unwrap().order)
        .collect();
    assert_eq!(orders, [4], "the new event is read, after the checkpoint");
    leadership.resign().await;
}

/// Issue #12 item 3: `ResetTo::AfterPosition(p)` means after `p` in commit order, as it does in
/// memory: the events that follow are those of transactions that committed later, even at lower
/// positions.
#[tokio::test]
async fn a_reset_after_a_position_continues_in_commit_order() {
    const TYPES: &[&str] = &[Placed::NAME];
    const NAME: &str = "test.order.after";
    let db = Db::new().await;
    let mut late = db.pool().begin().await.unwrap();
    osa_events::publish(&mut *late, &Placed { order: 1 })
        .await
        .unwrap();
    let early = osa_events::publish(db.pool(), &Placed { order: 2 })
        .await
        .unwrap();
    late.commit().await.unwrap();
    osa_events::publish(db.pool(), &Placed { order: 3 })
        .await
        .unwrap();
    let early_position: i64 =
        sqlx::query_scalar("select position from osa_events.events where id = $1")
            .bind(early.id)
            .fetch_one(db.pool())
            .await
            .unwrap();
    db.store
        .reset(NAME, ResetTo::AfterPosition(early_position))
        .await
        .unwrap();
    let mut leadership = lead(&db, NAME).await;
    let orders: Vec<i64> = read_all(&mut *leadership, TYPES, 2)
        .await
        .iter()
        .map(|(_, payload)| serde_json::from_str::<Placed>(payload).unwrap().order)
        .collect();
    assert_eq!(
        orders,
        [1, 3],
        "order 1 (a lower position) committed after order 2, so it follows it"
    );
    leadership.resign().await;
}
