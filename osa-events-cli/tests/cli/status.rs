//! `status`, `nodes` and `projections`.

use osa_events::Runtime;
use osa_events::operations::DeliveryState;
use osa_events::prelude::*;

use crate::support::{Job, Scene};

#[event_handler(name = "cli.tuned", batch = 7, poll = "20ms", timeout = "1m 30s")]
async fn tuned(_job: Job) -> Result<(), HandlerError> {
    Ok(())
}

/// `status` shows the options a handler was registered with, run-time overrides included: the
/// attribute's batch 7 overridden by `configure` (64), concurrency by the environment (3).
#[tokio::test]
async fn status_shows_the_effective_options() {
    let scene = Scene::new().await;
    Runtime::builder(scene.store.clone())
        .only(["cli.tuned"])
        .handle_signals(false)
        .configure("cli.tuned", |o| o.batch(64))
        .environment([("OSA_EVENTS_HANDLER_CLI_TUNED_CONCURRENCY", "3")])
        .build()
        .expect("the runtime builds")
        .register()
        .await
        .expect("registers");

    let out = scene.cli(&["status"]).exits(0);
    let header = out
        .stdout
        .lines()
        .find(|l| l.starts_with("HANDLER OPTIONS"))
        .expect("the options table");
    let columns: Vec<&str> = header
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        columns,
        [
            "HANDLER OPTIONS",
            "BATCH",
            "CONCURRENCY",
            "POLL",
            "RETRIES",
            "BACKOFF",
            "MAX BACKOFF",
            "CLAIM TIMEOUT",
            "TIMEOUT",
            "LINGER"
        ]
    );
    let row = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("cli.tuned "))
        .expect("an options row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "cli.tuned",
            "64",
            "3",
            "20ms",
            "5",
            "1s",
            "10m",
            "1m",
            "1m",
            "30s",
            "0s"
        ],
        "{row}"
    );

    let json = scene.cli(&["status", "--json"]).exits(0).json();
    let options = &json["handlers"][0]["options"];
    assert_eq!(options["batch"], 64, "{options}");
    assert_eq!(options["concurrency"], 3, "{options}");
    assert_eq!(options["timeout"], "90000ms", "{options}");
}

#[tokio::test]
async fn status_tables_show_each_handlers_figures() {
    let scene = Scene::new().await;
    let a = scene.subscribe("cli.a").await;
    scene.subscribe("cli.b").await;
    scene.publish(0..5).await;
    scene.kill(a, 2, "vector backend down").await;

    let out = scene.cli(&["status"]).exits(0);
    assert!(out.stdout.contains("head 5"), "{}", out.stdout);
    let header = out
        .stdout
        .lines()
        .find(|l| l.starts_with("HANDLER"))
        .expect("a header");
    for column in [
        "DUE",
        "SCHEDULED",
        "CLAIMED",
        "WAITING",
        "DEAD",
        "OLDEST DUE",
        "LAG",
        "PAUSED",
        "RETIRED",
        "LIVENESS",
        "LAST ERROR",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row_a = out
        .stdout
        .lines()
        .find(|l| l.starts_with("cli.a "))
        .expect("a row for cli.a");
    let cells: Vec<&str> = row_a.split_whitespace().collect();
    // due, scheduled, claimed, waiting, dead
    assert_eq!(&cells[1..6], ["3", "0", "0", "0", "2"], "{row_a}");
    assert!(row_a.contains("vector backend down"), "{row_a}");
    assert!(out.stdout.contains("PROJECTION") || out.stdout.contains("no projections"));
    // No colours without a terminal.
    assert!(!out.stdout.contains('\x1b'), "{:?}", out.stdout);
}

#[tokio::test]
async fn status_json_has_the_documented_shape() {
    let scene = Scene::new().await;
    let a = scene.subscribe("cli.a").await;
    scene.publish(0..3).await;
    scene.kill(a, 1, "boom").await;

    let json = scene.cli(&["status", "--json"]).exits(0).json();
    assert_eq!(json["head"], 3);
    assert!(json["at"].is_string());
    assert!(json["projections"].is_array() && json["nodes"].is_array());
    let handler = &json["handlers"][0];
    assert_eq!(handler["name"], "cli.a");
    assert_eq!(handler["event_type"], "cli.job");
    assert_eq!(
        handler["due"],
        serde_json::json!({ "value": 2, "exact": true })
    );
    assert_eq!(
        handler["dead"],
        serde_json::json!({ "value": 1, "exact": true })
    );
    assert_eq!(handler["claimed"]["value"], 0);
    assert_eq!(handler["scheduled"]["value"], 0);
    assert_eq!(handler["waiting"]["value"], 0);
    assert_eq!(handler["last_error"]["message"], "boom");
    assert_eq!(handler["liveness"]["state"], "stopped");
    assert!(handler["paused_at"].is_null() && handler["retired_at"].is_null());
    for key in [
        "routing_key",
        "oldest_due_seconds",
        "oldest_claim_seconds",
        "claimed_by",
        "lag_events",
        "lag_seconds",
        "backfill",
    ] {
        assert!(handler.get(key).is_some(), "`{key}` in {handler}");
    }
}

#[tokio::test]
async fn nodes_and_projections_on_a_quiet_database() {
    let scene = Scene::new().await;
    let out = scene.cli(&["nodes"]).exits(0);
    assert!(out.stdout.contains("no nodes"), "{}", out.stdout);
    assert_eq!(
        scene.cli(&["nodes", "--json"]).exits(0).json(),
        serde_json::json!([])
    );
    let out = scene.cli(&["projections", "status"]).exits(0);
    assert!(out.stdout.contains("no projections"), "{}", out.stdout);
    let out = scene
        .cli(&["projections", "reset", "orders", "--yes"])
        .exits(1);
    assert!(
        out.stderr.contains("no projection is named `orders`"),
        "{}",
        out.stderr
    );
    assert_eq!(scene.count(None, DeliveryState::Dead).await, 0);

    // A projection another program runs shows once it has a checkpoint.
    osa_events::reset_projection(scene.store.pool(), "orders", osa_events::ResetTo::End)
        .await
        .expect("a checkpoint for `orders`");
    let out = scene.cli(&["projections", "status"]).exits(0);
    assert!(out.stdout.contains("orders"), "{}", out.stdout);
}
