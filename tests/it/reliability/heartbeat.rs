//! Heartbeats of a `Tx` handler's batch, with a single worker: nothing can take its claims over.
//!
//! A regression test for a runtime bug found by the load test (RELIABILITY.md, "Issues these
//! tests found"): a `Tx` handler completes each delivery in its own transaction while the batch
//! runs, and the heartbeat used to keep extending the batch's original fences, find the completed
//! rows gone, warn "claims were taken over by another worker", and finally abandon the batch while
//! its last call was still committing. The heartbeat now skips deliveries settled in the handler's
//! transaction.

use std::time::Duration;

use osa_events_suite::chaos_events;

use super::{Scene, count_lines, serial};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn heartbeats_do_not_mistake_a_tx_handlers_own_completions_for_takeovers() {
    let _turn = serial().await;
    let scene = Scene::new("heartbeat").await;
    let mut worker = scene.worker("alone", "chaos.heartbeat", &["--work-ms", "400"]);
    scene.subscribed(&["chaos.heartbeat"]).await;
    let batch: Vec<_> = (0..8).map(|seq| chaos_events::item(seq, 16)).collect();
    osa_events::publish_batch(&scene.pool, &batch)
        .await
        .unwrap();
    scene.drained(Duration::from_secs(30), "8 events").await;
    let (status, _) = worker.stop(Duration::from_secs(20)).await;
    assert!(status.success());
    assert_eq!(scene.ledger("chaos.heartbeat").await, (8, 8));
    let log = worker.stderr_text();
    assert_eq!(
        count_lines(&log, &[" WARN "]),
        0,
        "a lone worker warned about takeovers:\n{log}"
    );
}
