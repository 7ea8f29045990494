//! `pause`, `resume`, `subscriptions` and `retire`.

use osa_events::operations::DeliveryState;

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
