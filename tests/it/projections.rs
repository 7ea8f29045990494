//! Projections: every event applied once and in order though transactions commit out of order,
//! checkpoint and effects in one transaction, one leader with failover, failures that stop
//! without skipping, status and reset.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use osa_events::prelude::*;
use osa_events::{PgStore, ResetTo, Runtime};
use osa_events_testing::Rng;
use serde::{Deserialize, Serialize};

use crate::support::{Db, SEED_VAR, eventually};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.projection.placed")]
struct Placed {
    customer: String,
    cents: i64,
}

fn placed(customer: &str, cents: i64) -> Placed {
    Placed {
        customer: customer.to_owned(),
        cents,
    }
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.projection.cancelled")]
struct Cancelled {
    customer: String,
    cents: i64,
}

#[derive(EventSet, Debug)]
enum OrderEvent {
    Placed(Placed),
    Cancelled(Cancelled),
}

/// Applies each event to `totals`, and records its position in `applied` (primary key: applying an
/// event twice fails the batch) with the order of application.
#[projection(name = "test.totals", batch = 50, poll = "20ms")]
async fn totals(events: Batch<OrderEvent>, mut tx: Tx) -> Result<(), HandlerError> {
    for (ctx, event) in events.iter_with_ctx() {
        let (customer, cents) = match event {
            OrderEvent::Placed(e) => (&e.customer, e.cents),
            OrderEvent::Cancelled(e) => (&e.customer, -e.cents),
        };
        sqlx::query(
            "insert into totals (customer, cents) values ($1, $2) \
             on conflict (customer) do update set cents = totals.cents + excluded.cents",
        )
        .bind(customer)
        .bind(cents)
        .execute(&mut *tx)
        .await?;
        sqlx::query("insert into applied (position) values ($1)")
            .bind(ctx.position())
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

const WAIT: Duration = Duration::from_secs(30);

async fn with_read_model(db: &Db) {
    sqlx::query("create table totals (customer text primary key, cents bigint not null)")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("create table applied (seq bigserial, position bigint primary key)")
        .execute(db.pool())
        .await
        .unwrap();
}

async fn read_model(db: &Db) -> BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as("select customer, cents from totals")
        .fetch_all(db.pool())
        .await
        .unwrap();
    rows.into_iter().filter(|(_, cents)| *cents != 0).collect()
}

async fn applied(db: &Db) -> i64 {
    sqlx::query_scalar("select count(*) from applied")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// `publishers` tasks publish `per_publisher` transactions each; every transaction waits a random
/// time between its insert and its commit, so commits land out of position order. Returns the
/// ground truth and the number of events.
async fn publish_out_of_order(
    db: &Db,
    seed: u64,
    publishers: u64,
    per_publisher: u64,
) -> (BTreeMap<String, i64>, i64) {
    let tasks: Vec<_> = (0..publishers)
        .map(|publisher| {
            let pool = db.pool().clone();
            tokio::spawn(async move {
                let mut random = Rng::fork(seed, publisher);
                let mut truth: BTreeMap<String, i64> = BTreeMap::new();
                let mut count = 0;
                for _ in 0..per_publisher {
                    let customer = format!("c{}", random.below(5));
                    let cents = i64::try_from(random.below(1000)).unwrap() + 1;
                    let mut tx = pool.begin().await.unwrap();
                    osa_events::publish(
                        &mut *tx,
                        &Placed {
                            customer: customer.clone(),
                            cents,
                        },
                    )
                    .await
                    .unwrap();
                    count += 1;
                    *truth.entry(customer.clone()).or_default() += cents;
                    if random.below(3) == 0 {
                        osa_events::publish(
                            &mut *tx,
                            &Cancelled {
                                customer: customer.clone(),
                                cents,
                            },
                        )
                        .await
                        .unwrap();
                        count += 1;
                        *truth.entry(customer).or_default() -= cents;
                    }
                    tokio::time::sleep(Duration::from_millis(random.below(30))).await;
                    tx.commit().await.unwrap();
                }
                (truth, count)
            })
        })
        .collect();
    let mut truth = BTreeMap::new();
    let mut total = 0;
    for task in tasks {
        let (partial, count) = task.await.unwrap();
        for (customer, cents) in partial {
            *truth.entry(customer).or_default() += cents;
        }
        total += count;
    }
    truth.retain(|_, cents| *cents != 0);
    (truth, total)
}

#[tokio::test]
async fn out_of_order_commits_are_applied_once_and_in_order() {
    let db = Db::new().await;
    with_read_model(&db).await;
    let running = db.start(&["test.totals"], Resources::new()).await;
    let seed = Rng::from_env_or_random(SEED_VAR).seed();
    let (truth, count) = publish_out_of_order(&db, seed, 8, 25).await;
    eventually(WAIT, "every event applied", || async {
        applied(&db).await == count
    })
    .await;
    running.stop().await;
    assert_eq!(read_model(&db).await, truth, "seed {seed}");
    // Applied in the log's (commit, position) order, strictly.
    let out_of_order: i64 = sqlx::query_scalar(
        "select count(*) from (select e.position, c.seq, \
                lag(e.position) over (order by a.seq) as previous, \
                lag(c.seq) over (order by a.seq) as previous_seq \
                from applied a join osa_events.events e on e.position = a.position \
                join osa_events.commits c on c.id = e.commit_id) s \
         where (s.seq, s.position) < (s.previous_seq, s.previous)",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(out_of_order, 0, "seed {seed}");
    let status = db.store.projection_status().await.unwrap();
    let totals = status.iter().find(|s| s.name == "test.totals").unwrap();
    assert_eq!(totals.lag, 0);
    // The leader's session ends shortly after its connection closes.
    eventually(WAIT, "nobody leads once the runtime stopped", || async {
        leader(&db).await.is_none()
    })
    .await;
}

async fn start_node(
    db: &Db,
    instance: &str,
) -> (tokio::task::JoinHandle<osa_events::Result<()>>, PgStore) {
    // Each node has its own pool, as separate processes would.
    let store = PgStore::connect(&db.url().await).await.unwrap();
    let runtime = Runtime::builder(store.clone())
        .only(["test.totals"])
        .handle_signals(false)
        .instance_name(instance)
        .build()
        .unwrap();
    (tokio::spawn(runtime.run()), store)
}

async fn leader(db: &Db) -> Option<String> {
    let status = db.store.projection_status().await.unwrap();
    status
        .into_iter()
        .find(|s| s.name == "test.totals")
        .and_then(|s| s.leader)
}

#[tokio::test]
async fn another_node_takes_over_when_the_leader_dies() {
    let db = Db::new().await;
    with_read_model(&db).await;
    let (node_a, _store_a) = start_node(&db, "node-a").await;
    let (node_b, _store_b) = start_node(&db, "node-b").await;
    eventually(WAIT, "a leader", || async { leader(&db).await.is_some() }).await;
    let first = leader(&db).await.unwrap();
    let seed = Rng::from_env_or_random(SEED_VAR).seed();
    let publishing = {
        let pool = db.pool().clone();
        tokio::spawn(async move {
            let db = Db::from_pool(pool);
            publish_out_of_order(&db, seed, 4, 30).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Kill the leader mid-run: its task (pools included) is dropped, its session ends.
    let (dead, survivor) = if first.ends_with("node-a") {
        (node_a, node_b)
    } else {
        (node_b, node_a)
    };
    dead.abort();
    let (truth, count) = publishing.await.unwrap();
    eventually(WAIT, "the other node leads", || async {
        leader(&db).await.is_some_and(|now| now != first)
    })
    .await;
    eventually(WAIT, "every event applied", || async {
        applied(&db).await == count
    })
    .await;
    assert_eq!(read_model(&db).await, truth, "seed {seed}");
    survivor.abort();
}

static BROKEN: AtomicBool = AtomicBool::new(true);

#[projection(
    name = "test.fragile",
    poll = "20ms",
    backoff = "20ms",
    max_backoff = "50ms"
)]
async fn fragile(events: Batch<Placed>, mut tx: Tx) -> Result<(), HandlerError> {
    for event in &events {
        sqlx::query("insert into totals (customer, cents) values ($1, $2)")
            .bind(&event.customer)
            .bind(event.cents)
            .execute(&mut *tx)
            .await?;
    }
    if BROKEN.load(Ordering::SeqCst) {
        return Err(HandlerError::retry("the read model's backend is down"));
    }
    Ok(())
}

#[tokio::test]
async fn a_failing_batch_is_retried_without_advancing_then_catches_up() {
    let db = Db::new().await;
    with_read_model(&db).await;
    let running = db.start(&["test.fragile"], Resources::new()).await;
    osa_events::publish(db.pool(), &placed("a", 5))
        .await
        .unwrap();
    let status = || async {
        db.store
            .projection_status()
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.name == "test.fragile")
            .unwrap()
    };
    eventually(WAIT, "the failure reported", || async {
        status().await.last_error.is_some()
    })
    .await;
    let failing = status().await;
    assert_eq!(failing.position, 0, "the checkpoint did not move");
    assert_eq!(failing.lag, 1);
    assert!(
        failing.oldest_unapplied.is_some(),
        "the age of the event it waits to apply"
    );
    assert!(failing.last_error.unwrap().contains("backend is down"));
    assert!(
        read_model(&db).await.is_empty(),
        "the failed batch was rolled back"
    );

    BROKEN.store(false, Ordering::SeqCst);
    eventually(WAIT, "caught up", || async { status().await.lag == 0 }).await;
    assert_eq!(status().await.oldest_unapplied, None);
    running.stop().await;
    assert_eq!(status().await.last_error, None);
    assert_eq!(read_model(&db).await, BTreeMap::from([("a".to_owned(), 5)]));
}

#[tokio::test]
async fn reset_rebuilds_the_read_model_from_the_beginning() {
    let db = Db::new().await;
    with_read_model(&db).await;
    let running = db.start(&["test.totals"], Resources::new()).await;
    let (truth, count) = publish_out_of_order(&db, 7, 2, 10).await;
    eventually(WAIT, "every event applied", || async {
        applied(&db).await == count
    })
    .await;

    // Reset first, then clear the read model: a running batch takes its locks in that order.
    let mut tx = db.pool().begin().await.unwrap();
    osa_events::reset_projection(&mut *tx, "test.totals", ResetTo::Beginning)
        .await
        .unwrap();
    sqlx::query("truncate totals, applied")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    eventually(WAIT, "rebuilt", || async { applied(&db).await == count }).await;
    running.stop().await;
    assert_eq!(read_model(&db).await, truth);

    let error =
        osa_events::reset_projection(db.pool(), "test.totals", ResetTo::AfterPosition(1_000_000))
            .await
            .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no event at AfterPosition(1000000)"),
        "{error}"
    );
}

/// The customers of `placed` events, in order.
fn customers_of(events: &[osa_events::store::Delivery]) -> Vec<String> {
    events
        .iter()
        .map(|event| {
            serde_json::from_str::<Placed>(&event.payload)
                .unwrap()
                .customer
        })
        .collect()
}

/// The cases a reader ordered by position, or by transaction id, gets wrong, step by step: a
/// transaction takes an id and a position first but commits last. It holds nothing back while it
/// runs (the others committed, so they are read), and once it commits its event comes after
/// theirs, in commit order, even though its id and position are lower.
#[tokio::test]
async fn a_transaction_that_commits_late_is_read_after_those_that_committed_first() {
    use osa_events::store::ProjectionStore;
    const TYPES: &[&str] = &[Placed::NAME];
    let db = Db::new().await;
    let customers = |batch: &osa_events::store::OpenBatch| customers_of(&batch.events);
    let mut late = db.pool().begin().await.unwrap();
    // Its transaction id is taken now, its position next; it commits last.
    sqlx::query("select pg_current_xact_id()")
        .execute(&mut *late)
        .await
        .unwrap();
    osa_events::publish(&mut *late, &placed("late", 1))
        .await
        .unwrap();
    osa_events::publish(db.pool(), &placed("early", 1))
        .await
        .unwrap();
    osa_events::publish(db.pool(), &placed("after", 1))
        .await
        .unwrap();

    let mut leadership = db
        .store
        .try_lead("test.late", "test", Duration::ZERO)
        .await
        .unwrap()
        .expect("nobody else leads");
    let committed = leadership.next_batch(TYPES, 10).await.unwrap();
    assert_eq!(
        customers(&committed),
        ["early", "after"],
        "a running transaction holds back nothing committed"
    );
    leadership
        .commit(committed.advance, committed.transaction)
        .await
        .unwrap();
    late.commit().await.unwrap();
    let last = leadership.next_batch(TYPES, 10).await.unwrap();
    assert_eq!(
        customers(&last),
        ["late"],
        "read in commit order, after the others"
    );
}

static HUNG_ONCE: AtomicBool = AtomicBool::new(true);

/// Hangs on its first batch, far past its `timeout`.
#[projection(name = "test.hung", poll = "20ms", backoff = "20ms", timeout = "300ms")]
async fn hung(events: Batch<Placed>, mut tx: Tx) -> Result<(), HandlerError> {
    if HUNG_ONCE.swap(false, Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    for event in &events {
        sqlx::query("insert into totals (customer, cents) values ($1, $2)")
            .bind(&event.customer)
            .bind(event.cents)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Issue #12 item 5: a hung batch does not hold its transaction (and its checkpoint row) for
/// ever: past the projection's `timeout` it is rolled back, recorded, and retried.
#[tokio::test]
async fn a_batch_past_its_timeout_is_rolled_back_and_retried() {
    let db = Db::new().await;
    with_read_model(&db).await;
    let running = db.start(&["test.hung"], Resources::new()).await;
    osa_events::publish(db.pool(), &placed("a", 5))
        .await
        .unwrap();
    eventually(WAIT, "applied after the timed-out attempt", || async {
        read_model(&db).await == BTreeMap::from([("a".to_owned(), 5)])
    })
    .await;
    running.stop().await;
    assert!(!HUNG_ONCE.load(Ordering::SeqCst), "the first batch hung");
}

/// Reading ahead (what the JetStream relay does on PostgreSQL): a read after a cursor sees what
/// `next_batch` would, in commit order; its checkpoint moves in one statement only from where it
/// was read, so a reset in between stands; and it writes nothing once the leadership is lost.
#[tokio::test]
async fn a_read_ahead_commits_only_from_where_it_read_and_a_reset_in_between_stands() {
    use osa_events::store::{Advance, ProjectionStore};
    const TYPES: &[&str] = &[Placed::NAME];
    let db = Db::new().await;
    for customer in ["a", "b", "c", "d"] {
        osa_events::publish(db.pool(), &placed(customer, 1))
            .await
            .unwrap();
    }
    let mut leadership = db
        .store
        .try_lead("test.ahead", "test", Duration::ZERO)
        .await
        .unwrap()
        .expect("nobody else leads");
    let first = leadership.next_batch(TYPES, 2).await.unwrap();
    assert_eq!(customers_of(&first.events), ["a", "b"]);
    let after = first.advance.to;
    leadership
        .commit(first.advance, first.transaction)
        .await
        .unwrap();
    let ahead = leadership
        .read_ahead(TYPES, after, 10)
        .await
        .unwrap()
        .expect("PostgreSQL reads ahead");
    assert_eq!(customers_of(&ahead.events), ["c", "d"]);
    let advance = Advance {
        from: after,
        to: ahead.to,
    };
    assert!(leadership.commit_ahead(advance).await.unwrap(), "moved");
    let status = db.store.status("test.ahead", TYPES).await.unwrap();
    assert_eq!(status.lag, 0);

    // Moving it again from the old place finds it elsewhere: nothing is written.
    db.store
        .reset("test.ahead", ResetTo::Beginning)
        .await
        .unwrap();
    assert!(
        !leadership.commit_ahead(advance).await.unwrap(),
        "a reset stands"
    );
    assert_eq!(db.store.status("test.ahead", TYPES).await.unwrap().lag, 4);

    // A lost leadership writes nothing and says so: every other session of the database ends,
    // the leader's among them (the pool's own reconnect).
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid()",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let fresh = Advance {
        from: osa_events::store::Checkpoint::default(),
        to: ahead.to,
    };
    assert!(
        leadership.commit_ahead(fresh).await.is_err(),
        "no longer the leader"
    );
    assert_eq!(db.store.status("test.ahead", TYPES).await.unwrap().lag, 4);
}
