//! The metrics gauges sampled from a real `PgStore`: the status' figures of every handler, also
//! of one no process runs, set on a capturing recorder installed for this test only (the test
//! runs on a current-thread runtime, so the runtime's tasks record into it).

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use osa_events::prelude::*;
use osa_events::store::Store;
use osa_events::{Outgoing, Runtime};
use serde::{Deserialize, Serialize};

use crate::support::{Db, eventually};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.metrics.waiting")]
struct Waiting {
    n: u32,
}

/// Registered, never run: its deliveries wait.
#[event_handler(name = "test.metrics.idle")]
async fn idle(_event: Waiting) -> Result<(), HandlerError> {
    Ok(())
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.metrics.ping")]
struct Ping;

/// What the sampling runtime runs.
#[event_handler(name = "test.metrics.sink", poll = "50ms")]
async fn sink(_ping: Ping) -> Result<(), HandlerError> {
    Ok(())
}

/// A sampled gauge: its name, labels and value.
type Gauge = (String, Vec<(String, String)>, f64);

/// The value of gauge `name` with `labels`, from one snapshot of `captured`.
fn gauge(captured: &[Gauge], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    captured
        .iter()
        .find(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, value)| *value)
}

#[tokio::test]
async fn the_gauges_come_from_the_status_of_the_database() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let db = Db::new().await;
    Runtime::builder(db.store.clone())
        .only(["test.metrics.idle"])
        .build()
        .expect("the runtime builds")
        .register()
        .await
        .expect("registered");
    let batch: Vec<Outgoing> = (0..3)
        .map(|n| Outgoing::new(&Waiting { n }).unwrap())
        .collect();
    osa_events::publish_batch(db.pool(), &batch).await.unwrap();
    let running = db
        .start_with(&["test.metrics.sink"], Resources::new(), |builder| {
            builder.metrics_interval(Duration::from_secs(1))
        })
        .await;

    let mut gauges = Vec::new();
    eventually(Duration::from_secs(30), "a sample", || {
        let snapshot = snapshotter.snapshot().into_vec();
        gauges = snapshot
            .into_iter()
            .filter_map(|(key, _, _, value)| {
                let DebugValue::Gauge(value) = value else {
                    return None;
                };
                let key = key.key();
                let labels = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                Some((key.name().to_owned(), labels, value.into_inner()))
            })
            .collect();
        // The claim loops' gauge is set as they start: wait for the sampled ones (a key appears
        // in a snapshot once set, so its first appearance carries the first sample's values).
        let sampled = gauges
            .iter()
            .any(|(name, _, _)| name == "osa_events_handler_deliveries");
        async move { sampled }
    })
    .await;
    let status = db
        .store
        .operations()
        .expect("operations")
        .status()
        .await
        .expect("status");
    running.stop().await;

    let idle = status.handler("test.metrics.idle").expect("registered");
    assert_eq!(idle.due.value(), 3);
    let due = |handler: &str| {
        gauge(
            &gauges,
            "osa_events_handler_deliveries",
            &[("handler", handler), ("state", "due")],
        )
    };
    assert_eq!(due("test.metrics.idle"), Some(3.0));
    assert_eq!(due("test.metrics.sink"), Some(0.0));
    let handler = [("handler", "test.metrics.idle")];
    assert_eq!(
        gauge(&gauges, "osa_events_handler_lag_events", &handler),
        Some(idle.lag_events as f64)
    );
    // Ages move with the wall clock between the sample and the status read here.
    let lag = gauge(&gauges, "osa_events_handler_lag_seconds", &handler).expect("sampled");
    assert!(
        (lag - idle.lag.as_secs_f64()).abs() < 5.0,
        "{lag} s sampled, {:?} now",
        idle.lag
    );
    let oldest_due = gauge(
        &gauges,
        "osa_events_handler_oldest_due_age_seconds",
        &handler,
    )
    .expect("sampled");
    assert!(oldest_due >= 0.0 && oldest_due <= idle.oldest_due.unwrap().as_secs_f64());
    for projection in &status.projections {
        let name = [("projection", projection.name.as_str())];
        assert_eq!(
            gauge(&gauges, "osa_events_projection_lag_events", &name),
            Some(projection.lag as f64),
            "{}",
            projection.name
        );
    }
}
