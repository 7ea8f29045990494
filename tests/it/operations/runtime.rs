//! The runtime's side of the operations: pause honoured by running claim loops, the backfill of a
//! handler that starts from the beginning, the node's record, and periodic retention.

use std::sync::Mutex;
use std::time::Duration;

use osa_events::Resources;
use osa_events::operations::{Liveness, Retention, StartFrom};
use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

use super::ops;
use crate::support::{Db, eventually};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.ops.runtime.job")]
struct Job {
    n: u32,
}

/// The `n`s handled, in the order they were handled.
#[derive(Default)]
struct Seen(Mutex<Vec<u32>>);

impl Seen {
    fn all(&self) -> Vec<u32> {
        self.0.lock().unwrap().clone()
    }
}

#[event_handler(name = "ops.runtime.paused", poll = "50ms")]
async fn paused_handler(job: Job, seen: State<Seen>) -> Result<(), HandlerError> {
    seen.0.lock().unwrap().push(job.n);
    Ok(())
}

#[event_handler(name = "ops.runtime.history", poll = "50ms", start_from = "beginning")]
async fn history_handler(job: Job, seen: State<Seen>) -> Result<(), HandlerError> {
    seen.0.lock().unwrap().push(job.n);
    Ok(())
}

const WAIT: Duration = Duration::from_secs(20);

async fn publish(db: &Db, range: std::ops::Range<u32>) {
    super::publish_each(db, range, |n| Job { n }).await;
}

/// Pausing is honoured by a running claim loop at its next claim; deliveries accumulate and are
/// handled once resumed.
#[tokio::test]
async fn a_paused_handler_stops_claiming_on_every_node_until_resumed() {
    let db = Db::new().await;
    let seen = std::sync::Arc::new(Seen::default());
    let running = db
        .start(
            &["ops.runtime.paused"],
            Resources::new().with_arc(std::sync::Arc::clone(&seen)),
        )
        .await;
    publish(&db, 0..3).await;
    eventually(WAIT, "the first events are handled", || async {
        seen.all().len() == 3
    })
    .await;

    assert!(ops(&db).pause("ops.runtime.paused").await.unwrap());
    // One poll interval for a claim loop that was between claims to notice.
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&db, 3..8).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seen.all().len(), 3, "nothing is handled while paused");
    let status = ops(&db).status().await.unwrap();
    let handler = status.handler("ops.runtime.paused").unwrap();
    assert!(handler.paused_at.is_some());
    assert_eq!(handler.due.value(), 5, "deliveries accumulate while paused");

    assert!(ops(&db).resume("ops.runtime.paused").await.unwrap());
    eventually(WAIT, "everything is handled after resume", || async {
        seen.all().len() == 8
    })
    .await;
    running.stop().await;
}

/// A handler started from the beginning receives the history published before it existed, once
/// each and in log order, besides what is published meanwhile (which may come first: the history
/// is copied in bounded chunks while the handler runs).
#[tokio::test]
async fn a_handler_started_from_the_beginning_handles_the_whole_history_in_order() {
    let db = Db::new().await;
    // History: 2,500 events (three chunks of the runtime's backfill) before the handler exists.
    for start in (0..2_500).step_by(500) {
        publish(&db, start..start + 500).await;
    }
    let seen = std::sync::Arc::new(Seen::default());
    let running = db
        .start_with(
            &["ops.runtime.history"],
            Resources::new().with_arc(std::sync::Arc::clone(&seen)),
            |builder| builder,
        )
        .await;
    publish(&db, 2_500..2_510).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = ops(&db).status().await.unwrap();
    eprintln!(
        "DEBUG {:?} seen {}",
        st.handler("ops.runtime.history"),
        seen.all().len()
    );
    eventually(WAIT, "history and new events are handled", || async {
        seen.all().len() == 2_510
    })
    .await;
    let handled = seen.all();
    let history: Vec<u32> = handled.iter().copied().filter(|n| *n < 2_500).collect();
    assert_eq!(
        history,
        (0..2_500).collect::<Vec<_>>(),
        "the history, once each, in log order"
    );
    let mut later: Vec<u32> = handled.iter().copied().filter(|n| *n >= 2_500).collect();
    later.sort_unstable();
    assert_eq!(
        later,
        (2_500..2_510).collect::<Vec<_>>(),
        "the new events, once each"
    );
    let status = ops(&db).status().await.unwrap();
    assert_eq!(
        status.handler("ops.runtime.history").unwrap().backfill,
        None
    );
    running.stop().await;
}

/// `RuntimeBuilder::start_from` overrides the attribute: `now` skips the history.
#[tokio::test]
async fn the_builder_overrides_the_attributes_start_from() {
    let db = Db::new().await;
    publish(&db, 0..5).await;
    let seen = std::sync::Arc::new(Seen::default());
    let running = db
        .start_with(
            &["ops.runtime.history"],
            Resources::new().with_arc(std::sync::Arc::clone(&seen)),
            |builder| builder.start_from("ops.runtime.history", StartFrom::Now),
        )
        .await;
    publish(&db, 5..7).await;
    eventually(WAIT, "the new events are handled", || async {
        seen.all().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut handled = seen.all();
    handled.sort_unstable();
    assert_eq!(handled, vec![5, 6], "no history with start_from now");
    running.stop().await;
}

/// A running runtime records itself (handlers, heartbeat), status calls its handlers running,
/// and the record goes when it stops.
#[tokio::test]
async fn a_runtime_records_itself_while_it_runs() {
    let db = Db::new().await;
    let seen = std::sync::Arc::new(Seen::default());
    let running = db
        .start_with(
            &["ops.runtime.paused"],
            Resources::new().with_arc(std::sync::Arc::clone(&seen)),
            |builder| {
                builder
                    .node_heartbeat(Duration::from_millis(100))
                    .instance_name("node-a")
            },
        )
        .await;
    eventually(WAIT, "the node is recorded", || async {
        ops(&db).nodes().await.unwrap().len() == 1
    })
    .await;
    let nodes = ops(&db).nodes().await.unwrap();
    assert_eq!(nodes[0].record.name, "node-a");
    assert_eq!(
        nodes[0].record.handlers,
        vec!["ops.runtime.paused".to_owned()]
    );
    assert!(nodes[0].alive);
    let first_seen = nodes[0].last_seen;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let nodes = ops(&db).nodes().await.unwrap();
    assert!(
        nodes[0].last_seen > first_seen,
        "the heartbeat refreshes the record"
    );
    let status = ops(&db).status().await.unwrap();
    assert_eq!(
        status.handler("ops.runtime.paused").unwrap().liveness,
        Liveness::Running { nodes: 1 }
    );
    running.stop().await;
    assert!(
        ops(&db).nodes().await.unwrap().is_empty(),
        "a stopped node removes its record"
    );
    let status = ops(&db).status().await.unwrap();
    assert_eq!(
        status.handler("ops.runtime.paused").unwrap().liveness,
        Liveness::Stopped
    );
}

/// Retention configured on the runtime prunes handled events periodically.
#[tokio::test]
async fn configured_retention_prunes_handled_events() {
    let db = Db::new().await;
    let seen = std::sync::Arc::new(Seen::default());
    let running = db
        .start_with(
            &["ops.runtime.paused"],
            Resources::new().with_arc(std::sync::Arc::clone(&seen)),
            |builder| {
                builder.retention(Retention::older_than(
                    Duration::from_millis(200),
                    Duration::from_millis(100),
                ))
            },
        )
        .await;
    publish(&db, 0..20).await;
    eventually(WAIT, "the events are handled", || async {
        seen.all().len() == 20
    })
    .await;
    eventually(WAIT, "the handled events are pruned", || async {
        sqlx::query_scalar::<_, i64>("select count(*) from osa_events.events")
            .fetch_one(db.pool())
            .await
            .unwrap()
            == 0
    })
    .await;
    running.stop().await;
}
