//! `pause`, `resume`, `subscriptions` and `retire`.

use std::time::{Duration, SystemTime};

use osa_events::operations::{DeliveryState, NodeRecord};

use crate::support::Scene;

#[tokio::test]
async fn pause_and_resume_show_in_status() {
    let scene = Scene::new().await;
    scene.subscribe("cli.a").await;
    let out = scene.cli(&["pause", "cli.a"]).exits(0);
    assert!(out.stdout.contains("paused `cli.a`"), "{}", out.stdout);
    let out = scene.cli(&["pause", "cli.a"]).exits(0);
    assert!(out.stdout.contains("paused already"), "{}", out.stdout);
    let json = scene.cli(&["status", "--json"]).exits(0).json();
    assert!(json["handlers"][0]["paused_at"].is_string(), "{json}");
    let table = scene.cli(&["status"]).exits(0);
    assert!(table.stdout.contains("since "), "{}", table.stdout);

    let out = scene.cli(&["resume", "cli.a"]).exits(0);
    assert!(out.stdout.contains("resumed `cli.a`"), "{}", out.stdout);
    let out = scene.cli(&["resume", "cli.a"]).exits(0);
    assert!(out.stdout.contains("was not paused"), "{}", out.stdout);
    let json = scene.cli(&["status", "--json"]).exits(0).json();
    assert!(json["handlers"][0]["paused_at"].is_null(), "{json}");
}

#[tokio::test]
async fn retire_confirms_then_deletes_and_reports_the_counts() {
    let scene = Scene::new().await;
    let a = scene.subscribe("cli.old").await;
    scene.subscribe("cli.new").await;
    scene.publish(0..4).await;
    scene.kill(a, 1, "gone").await;

    let out = scene.cli(&["subscriptions"]).exits(0);
    assert!(
        out.stdout.contains("cli.old") && out.stdout.contains("cli.new"),
        "{}",
        out.stdout
    );
    let json = scene.cli(&["subscriptions", "--json"]).exits(0).json();
    let old = json
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "cli.old")
        .unwrap();
    assert_eq!(
        (old["open"].as_u64(), old["dead"].as_u64()),
        (Some(3), Some(1)),
        "{old}"
    );
    assert_eq!(
        old["orphan"], false,
        "no node is alive: stopped, not orphan"
    );

    let out = scene.cli(&["retire", "cli.old"]).exits(1);
    assert!(
        out.stdout
            .contains("3 open deliveries and 1 dead letters would be deleted"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("refusing to retire `cli.old`"),
        "{}",
        out.stderr
    );
    scene.cli(&["retire", "cli.old", "--dry-run"]).exits(0);
    assert_eq!(
        scene.count(Some("cli.old"), DeliveryState::Pending).await,
        3
    );

    let out = scene.cli(&["retire", "cli.old", "--yes"]).exits(0);
    assert!(
        out.stdout
            .contains("retired `cli.old`: deleted 3 open deliveries and 1 dead letters"),
        "{}",
        out.stdout
    );
    assert_eq!(
        scene.count(Some("cli.old"), DeliveryState::Pending).await,
        0
    );
    assert_eq!(
        scene.count(Some("cli.new"), DeliveryState::Pending).await,
        4
    );
    let json = scene.cli(&["subscriptions", "--json"]).exits(0).json();
    let old = json
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "cli.old")
        .unwrap();
    assert!(old["retired_at"].is_string(), "{old}");
    let out = scene.cli(&["retire", "cli.old", "--yes"]).exits(0);
    assert!(
        out.stdout.contains("retired") && out.stdout.contains("already"),
        "{}",
        out.stdout
    );
}

/// Records a live node of the default namespace that runs `handlers`.
async fn node(scene: &Scene, handlers: &[&str]) {
    let record = NodeRecord {
        id: uuid::Uuid::new_v4(),
        name: "web-1:4242".into(),
        namespace: None,
        host: "web-1".into(),
        pid: 4242,
        version: "0.1.0".into(),
        handlers: handlers.iter().map(|h| h.to_string()).collect(),
        projections: Vec::new(),
        started_at: SystemTime::now(),
        heartbeat: Duration::from_secs(60),
    };
    scene
        .ops()
        .record_node(&record)
        .await
        .expect("record a node");
}

#[tokio::test]
async fn orphans_are_marked_and_a_running_handler_is_retired_only_on_purpose() {
    let scene = Scene::new().await;
    scene.subscribe("cli.renamed").await;
    scene.subscribe("cli.live").await;
    node(&scene, &["cli.live"]).await;

    let out = scene.cli(&["nodes"]).exits(0);
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("web-1:4242"))
        .expect("the node");
    assert!(row.contains("4242") && row.ends_with("yes"), "{row}");
    let json = scene.cli(&["nodes", "--json"]).exits(0).json();
    assert_eq!(json[0]["handlers"], serde_json::json!(["cli.live"]));
    assert_eq!(json[0]["alive"], true);

    let out = scene.cli(&["subscriptions"]).exits(0);
    let renamed = out
        .stdout
        .lines()
        .find(|l| l.starts_with("cli.renamed"))
        .unwrap();
    assert!(renamed.contains("ORPHAN"), "{}", out.stdout);
    let live = out
        .stdout
        .lines()
        .find(|l| l.starts_with("cli.live"))
        .unwrap();
    assert!(live.contains("running on 1"), "{}", out.stdout);
    assert!(out.stdout.contains("1 orphan(s)"), "{}", out.stdout);
    let json = scene.cli(&["status", "--json"]).exits(0).json();
    let live = json["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "cli.live")
        .unwrap();
    assert_eq!(
        live["liveness"],
        serde_json::json!({ "state": "running", "nodes": 1 })
    );

    let out = scene.cli(&["retire", "cli.live", "--yes"]).exits(1);
    assert!(
        out.stderr.contains("runs on 1 live node(s)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--even-if-running"), "{}", out.stderr);
    scene
        .cli(&["retire", "cli.live", "--even-if-running", "--yes"])
        .exits(0);
    scene.cli(&["retire", "cli.renamed", "--yes"]).exits(0);
}
