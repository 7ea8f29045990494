//! The operator's drills from issue #15, end to end on a running runtime: an outage that
//! dead-letters everything and a retry that brings it all back, and a handler renamed across a
//! restart whose old subscription is found as an orphan and retired.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use osa_events::Resources;
use osa_events::operations::{Liveness, RetireMode, Selector, StartFrom};
use osa_events::prelude::*;
use osa_events::store::Store;
use serde::{Deserialize, Serialize};

use super::ops;
use crate::support::{Db, eventually};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.ops.drill.job")]
struct Job {
    n: u32,
}

/// A downstream that is up or down, and what it received (`n` → times handled successfully).
#[derive(Default)]
struct Backend {
    down: AtomicBool,
    received: Mutex<BTreeMap<u32, u32>>,
}

impl Backend {
    fn handled(&self) -> BTreeMap<u32, u32> {
        self.received.lock().unwrap().clone()
    }
}

#[event_handler(
    name = "ops.drill.outage",
    retries = 2,
    backoff = "10ms",
    max_backoff = "20ms",
    poll = "20ms"
)]
async fn send_to_backend(job: Job, backend: State<Backend>) -> Result<(), HandlerError> {
    if backend.down.load(Ordering::SeqCst) {
        return Err(HandlerError::retry(std::io::Error::other(
            "backend unavailable",
        )));
    }
    *backend.received.lock().unwrap().entry(job.n).or_default() += 1;
    Ok(())
}

#[event_handler(name = "ops.drill.rename_old", poll = "20ms")]
async fn old_name(job: Job, backend: State<Backend>) -> Result<(), HandlerError> {
    *backend.received.lock().unwrap().entry(job.n).or_default() += 1;
    Ok(())
}

#[event_handler(name = "ops.drill.rename_new", poll = "20ms")]
async fn new_name(job: Job, backend: State<Backend>) -> Result<(), HandlerError> {
    *backend.received.lock().unwrap().entry(job.n).or_default() += 1;
    Ok(())
}

const WAIT: Duration = Duration::from_secs(30);

async fn publish(db: &Db, range: std::ops::Range<u32>) {
    super::publish_each(db, range, |n| Job { n }).await;
}

/// Every delivery dead-letters during an outage; once the backend is back, one retry of the
/// handler's dead letters has each event handled exactly once, and nothing is left over.
#[tokio::test]
async fn after_an_outage_a_dead_letter_retry_handles_everything_once() {
    let db = Db::new().await;
    let backend = std::sync::Arc::new(Backend::default());
    backend.down.store(true, Ordering::SeqCst);
    let running = db
        .start(
            &["ops.drill.outage"],
            Resources::new().with_arc(std::sync::Arc::clone(&backend)),
        )
        .await;
    publish(&db, 0..300).await;
    eventually(WAIT, "every delivery is dead", || async {
        ops(&db)
            .status()
            .await
            .unwrap()
            .handler("ops.drill.outage")
            .unwrap()
            .dead
            .value()
            == 300
    })
    .await;
    let status = ops(&db).status().await.unwrap();
    let handler = status.handler("ops.drill.outage").unwrap();
    assert!(
        handler
            .last_error
            .as_ref()
            .is_some_and(|(error, _)| error.contains("backend unavailable")),
        "status names the error: {:?}",
        handler.last_error
    );
    assert!(backend.handled().is_empty());

    backend.down.store(false, Ordering::SeqCst);
    let retried = ops(&db)
        .retry_dead(&Selector::handler("ops.drill.outage"))
        .await
        .unwrap();
    assert_eq!(retried, 300);
    eventually(WAIT, "every event is handled after the retry", || async {
        backend.handled().len() == 300
    })
    .await;
    eventually(WAIT, "no delivery is left", || async {
        db.deliveries(None).await == 0
    })
    .await;
    running.stop().await;
    let handled = backend.handled();
    assert_eq!(
        handled.keys().copied().collect::<Vec<_>>(),
        (0..300).collect::<Vec<_>>()
    );
    assert!(
        handled.values().all(|times| *times == 1),
        "each handled once: {handled:?}"
    );
}

/// A handler renamed across a restart: the old subscription shows as an orphan while the new
/// one runs, is retired (its open deliveries counted and gone), and the new one, started from the
/// beginning, handles the whole history once.
#[tokio::test]
async fn a_renamed_handler_leaves_an_orphan_to_retire_and_the_new_name_handles_the_history() {
    let db = Db::new().await;
    let before = std::sync::Arc::new(Backend::default());
    let running = db
        .start(
            &["ops.drill.rename_old"],
            Resources::new().with_arc(std::sync::Arc::clone(&before)),
        )
        .await;
    publish(&db, 0..50).await;
    eventually(WAIT, "the old handler handles the first events", || async {
        before.handled().len() == 50
    })
    .await;
    running.stop().await;
    // Published while nothing runs: the old subscription still receives these.
    publish(&db, 50..60).await;

    let after = std::sync::Arc::new(Backend::default());
    let running = db
        .start_with(
            &["ops.drill.rename_new"],
            Resources::new().with_arc(std::sync::Arc::clone(&after)),
            |builder| {
                builder
                    .start_from("ops.drill.rename_new", StartFrom::Beginning)
                    .node_heartbeat(Duration::from_millis(200))
            },
        )
        .await;
    eventually(WAIT, "the old name shows as an orphan", || async {
        ops(&db)
            .subscriptions()
            .await
            .unwrap()
            .iter()
            .any(|s| s.name == "ops.drill.rename_old" && s.liveness == Liveness::Orphan)
    })
    .await;
    let retired = ops(&db)
        .retire("ops.drill.rename_old", RetireMode::IfNotRunning)
        .await
        .unwrap();
    assert_eq!(
        retired.open, 10,
        "the events published in between were open"
    );
    publish(&db, 60..70).await;
    eventually(
        WAIT,
        "the new name handles the history and the new events",
        || async { after.handled().len() == 70 },
    )
    .await;
    running.stop().await;
    let handled = after.handled();
    assert!(
        handled.values().all(|times| *times == 1),
        "each handled once: {handled:?}"
    );
    let old = db
        .store
        .operations()
        .unwrap()
        .status()
        .await
        .unwrap()
        .handler("ops.drill.rename_old")
        .cloned()
        .unwrap();
    assert!(old.retired_at.is_some());
    assert_eq!(
        old.due.value() + old.scheduled.value() + old.dead.value(),
        0,
        "the retired one received nothing more"
    );
}
