//! The runtime end to end: competing workers, heartbeats, crashed workers' claims, graceful
//! shutdown, concurrency, and the start-up checks.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::prelude::*;
use osa_events::store::{ClaimRequest, Store};
use osa_events::{Error, Outgoing, Runtime};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::support::{Db, eventually};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.runtime.job")]
struct Job {
    n: u32,
}

async fn publish_jobs(db: &Db, count: u32) {
    let batch: Vec<Outgoing> = (0..count)
        .map(|n| Outgoing::new(&Job { n }).unwrap())
        .collect();
    osa_events::publish_batch(db.pool(), &batch).await.unwrap();
}

const WAIT: Duration = Duration::from_secs(30);

/// Calls per event, and any event seen by two calls at the same time.
#[derive(Default)]
struct Ledger {
    calls: Mutex<HashMap<Uuid, u32>>,
    in_flight: Mutex<HashSet<Uuid>>,
    overlaps: AtomicUsize,
    attempts: Mutex<Vec<u32>>,
}

impl Ledger {
    fn enter(&self, ctx: &Ctx) {
        if !self.in_flight.lock().unwrap().insert(ctx.event_id()) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        *self
            .calls
            .lock()
            .unwrap()
            .entry(ctx.event_id())
            .or_default() += 1;
        self.attempts.lock().unwrap().push(ctx.attempt());
    }

    fn leave(&self, ctx: &Ctx) {
        self.in_flight.lock().unwrap().remove(&ctx.event_id());
    }

    fn handled(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

#[event_handler(name = "runtime.compete", batch = 5, concurrency = 4, poll = "20ms")]
async fn compete(_job: Job, ledger: State<Ledger>, ctx: Ctx) -> Result<(), HandlerError> {
    ledger.enter(&ctx);
    tokio::time::sleep(Duration::from_millis(1)).await;
    ledger.leave(&ctx);
    Ok(())
}

#[tokio::test]
async fn competing_workers_never_handle_one_delivery_concurrently() {
    let db = Db::new().await;
    let ledger = Arc::new(Ledger::default());
    // Two "nodes", four claim loops each.
    let node_a = db
        .start(
            &["runtime.compete"],
            Resources::new().with_arc(ledger.clone()),
        )
        .await;
    let node_b = db
        .start(
            &["runtime.compete"],
            Resources::new().with_arc(ledger.clone()),
        )
        .await;
    publish_jobs(&db, 600).await;
    eventually(WAIT, "every job handled", || async {
        db.deliveries(None).await == 0
    })
    .await;
    node_a.stop().await;
    node_b.stop().await;
    assert_eq!(ledger.handled(), 600);
    assert_eq!(
        ledger.overlaps.load(Ordering::SeqCst),
        0,
        "no delivery ran twice at once"
    );
    assert!(
        ledger
            .calls
            .lock()
            .unwrap()
            .values()
            .all(|calls| *calls == 1),
        "with no failure and no expiry, each event is handled exactly once"
    );
}

#[event_handler(name = "runtime.slow", batch = 1, claim_timeout = "1s", poll = "20ms")]
async fn slow(_job: Job, ledger: State<Ledger>, ctx: Ctx) -> Result<(), HandlerError> {
    ledger.enter(&ctx);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ledger.leave(&ctx);
    Ok(())
}

#[tokio::test]
async fn heartbeats_keep_a_slow_handlers_claim() {
    let db = Db::new().await;
    let ledger = Arc::new(Ledger::default());
    let node_a = db
        .start(&["runtime.slow"], Resources::new().with_arc(ledger.clone()))
        .await;
    let node_b = db
        .start(&["runtime.slow"], Resources::new().with_arc(ledger.clone()))
        .await;
    publish_jobs(&db, 1).await;
    eventually(WAIT, "the slow job handled", || async {
        db.deliveries(None).await == 0
    })
    .await;
    node_a.stop().await;
    node_b.stop().await;
    assert_eq!(
        *ledger.attempts.lock().unwrap(),
        vec![1],
        "claimed once, held for 2.5 s with a 1 s claim timeout"
    );
    assert_eq!(ledger.overlaps.load(Ordering::SeqCst), 0);
}

#[event_handler(name = "runtime.crashed", retries = 1, poll = "20ms")]
async fn after_crashes(_job: Job, ledger: State<Ledger>, ctx: Ctx) -> Result<(), HandlerError> {
    ledger.enter(&ctx);
    Ok(())
}

#[tokio::test]
async fn a_delivery_whose_claims_keep_expiring_is_dead_lettered() {
    let db = Db::new().await;
    let ledger = Arc::new(Ledger::default());
    let running = db
        .start(
            &["runtime.crashed"],
            Resources::new().with_arc(ledger.clone()),
        )
        .await;
    running.stop().await; // registered; now simulate two workers that crashed mid-handler
    publish_jobs(&db, 1).await;
    let subscription = osa_events::store::SubscriptionId(
        sqlx::query_scalar(
            "select id from osa_events.subscriptions where name = 'runtime.crashed'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap(),
    );
    for _ in 0..2 {
        let request = ClaimRequest {
            subscription,
            limit: 1,
            claim_timeout: Duration::from_millis(50),
            worker: "crashing",
        };
        assert_eq!(db.store.claim(request).await.unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let running = db
        .start(
            &["runtime.crashed"],
            Resources::new().with_arc(ledger.clone()),
        )
        .await;
    eventually(WAIT, "a dead letter", || async {
        db.deliveries(Some("dead")).await == 1
    })
    .await;
    running.stop().await;
    assert_eq!(
        ledger.handled(),
        0,
        "retries = 1 allows two attempts; both were used up by crashes"
    );
    let (attempts, error) = db.dead_letters().await.remove(0);
    assert_eq!(attempts, 3);
    assert!(error.contains("gave up at claim 3 of at most 2"), "{error}");
}

/// Lets the test see that a handler started, and keeps it running until released.
#[derive(Default)]
struct Gate {
    entered: AtomicUsize,
    open: tokio::sync::Notify,
}

#[event_handler(name = "runtime.stuck", batch = 10, poll = "20ms")]
async fn stuck(_job: Job, gate: State<Gate>) -> Result<(), HandlerError> {
    gate.entered.fetch_add(1, Ordering::SeqCst);
    gate.open.notified().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_releases_unfinished_claims_after_the_grace_period() {
    let db = Db::new().await;
    let gate = Arc::new(Gate::default());
    let running = db
        .start_with(
            &["runtime.stuck"],
            Resources::new().with_arc(gate.clone()),
            |builder| builder.grace_period(Duration::from_millis(200)),
        )
        .await;
    publish_jobs(&db, 3).await;
    eventually(WAIT, "the handler started", || async {
        gate.entered.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(db.deliveries(Some("claimed")).await, 3);
    running.stop().await;
    let rows: Vec<(String, i32, Option<Uuid>)> =
        sqlx::query_as("select status, attempts, claim_token from osa_events.deliveries")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 3);
    for (status, attempts, token) in rows {
        assert_eq!(
            (status.as_str(), attempts, token),
            ("pending", 0, None),
            "released, attempt given back"
        );
    }
    // Released claims are due at once: a new node picks them up without waiting for an expiry.
    let subscription = osa_events::store::SubscriptionId(
        sqlx::query_scalar("select id from osa_events.subscriptions")
            .fetch_one(db.pool())
            .await
            .unwrap(),
    );
    let request = ClaimRequest {
        subscription,
        limit: 10,
        claim_timeout: Duration::from_secs(60),
        worker: "next",
    };
    assert_eq!(db.store.claim(request).await.unwrap().len(), 3);
}

#[event_handler(name = "runtime.finishing", batch = 10, poll = "20ms")]
async fn finishing(_job: Job, gate: State<Gate>) -> Result<(), HandlerError> {
    gate.entered.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

#[tokio::test]
async fn shutdown_lets_running_handlers_finish_within_the_grace_period() {
    let db = Db::new().await;
    let gate = Arc::new(Gate::default());
    let running = db
        .start(
            &["runtime.finishing"],
            Resources::new().with_arc(gate.clone()),
        )
        .await;
    publish_jobs(&db, 2).await;
    eventually(WAIT, "the handler started", || async {
        gate.entered.load(Ordering::SeqCst) >= 1
    })
    .await;
    running.stop().await;
    assert_eq!(
        gate.entered.load(Ordering::SeqCst),
        2,
        "the claimed batch was finished"
    );
    assert_eq!(db.deliveries(None).await, 0, "and completed");
}

#[derive(Default)]
struct Parallelism {
    now: AtomicUsize,
    max: AtomicUsize,
}

#[event_handler(name = "runtime.parallel", batch = 1, concurrency = 4, poll = "20ms")]
async fn parallel(_job: Job, seen: State<Parallelism>) -> Result<(), HandlerError> {
    let now = seen.now.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    seen.now.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test]
async fn concurrency_runs_that_many_claim_loops() {
    let db = Db::new().await;
    let seen = Arc::new(Parallelism::default());
    let running = db
        .start(
            &["runtime.parallel"],
            Resources::new().with_arc(seen.clone()),
        )
        .await;
    publish_jobs(&db, 12).await;
    eventually(WAIT, "all handled", || async {
        db.deliveries(None).await == 0
    })
    .await;
    running.stop().await;
    assert_eq!(seen.max.load(Ordering::SeqCst), 4);
}

#[event_handler(name = "runtime.duplicate")]
async fn duplicate_one(_job: Job) -> Result<(), HandlerError> {
    Ok(())
}

mod elsewhere {
    use super::*;

    #[event_handler(name = "runtime.duplicate")]
    async fn duplicate_two(_job: Job) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[tokio::test]
async fn duplicate_handler_names_are_rejected_at_start_up() {
    let db = Db::new().await;
    let error = Runtime::builder(db.store.clone())
        .only(["runtime.duplicate"])
        .build()
        .unwrap_err();
    assert!(
        matches!(error, Error::DuplicateHandlerName { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "two handlers are named `runtime.duplicate` (`it::runtime::duplicate_one` and \
         `it::runtime::elsewhere::duplicate_two`): give one of them another `name = \"...\"`"
    );
}

struct NotRegistered;

#[event_handler(name = "runtime.needs_state")]
async fn needs_state(_job: Job, _missing: State<NotRegistered>) -> Result<(), HandlerError> {
    Ok(())
}

#[tokio::test]
async fn a_missing_resource_is_a_start_up_error_naming_handler_and_type() {
    let db = Db::new().await;
    let error = Runtime::builder(db.store.clone())
        .only(["runtime.needs_state"])
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "handler `runtime.needs_state` needs `State<it::runtime::NotRegistered>`, but `Resources` has no \
         `it::runtime::NotRegistered`: add it with `Resources::new().with(..)`"
    );
}

#[tokio::test]
async fn selecting_an_unknown_handler_is_an_error() {
    let db = Db::new().await;
    let error = Runtime::builder(db.store.clone())
        .only(["runtime.typo"])
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, Error::UnknownHandler { name, .. } if name == "runtime.typo"),
        "{error:?}"
    );
    let error = Runtime::builder(db.store.clone())
        .exclude(["runtime.nope"])
        .build()
        .unwrap_err();
    assert!(matches!(&error, Error::UnknownHandler { .. }), "{error:?}");
}

/// Issue #14: a runtime whose claim loops outnumber the pool's connections says so at start-up,
/// with both numbers; one that fits says nothing.
#[tokio::test]
async fn more_claim_loops_than_connections_is_warned_at_start_up() {
    let logs = osa_events_fixtures::logs::Logs::capture();
    let db = Db::new().await;
    let small = sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .connect_with((*db.pool().connect_options()).clone())
        .await
        .unwrap();
    let crowded = Db::from_pool(small);
    // runtime.compete runs 4 claim loops.
    let ledger = Arc::new(Ledger::default());
    crowded
        .start(
            &["runtime.compete"],
            Resources::new().with_arc(ledger.clone()),
        )
        .await
        .stop()
        .await;
    db.start(&["runtime.compete"], Resources::new().with_arc(ledger))
        .await
        .stop()
        .await;
    let warnings = logs.lines_with("more claim loops than database connections");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("max_connections=3") && warnings[0].contains("loops=4"),
        "{}",
        warnings[0]
    );
}
