//! `dead list|show|retry|purge` and `pending cancel`: filters, confirmation, chunks.

use osa_events::operations::DeliveryState;

use crate::support::Scene;

/// `cli.a` with 5 dead letters (3 "timeout", 2 "refused") and 1 pending; `cli.b` with 2 dead.
async fn scene() -> Scene {
    let scene = Scene::new().await;
    let a = scene.subscribe("cli.a").await;
    let b = scene.subscribe("cli.b").await;
    scene.publish(0..6).await;
    scene.kill(a, 3, "upstream timeout after 5s").await;
    scene.kill(a, 2, "connection refused").await;
    scene.kill(b, 2, "connection refused").await;
    scene
}

#[tokio::test]
async fn dead_list_filters_by_handler_and_error() {
    let scene = scene().await;
    let all = scene.cli(&["dead", "list", "--json"]).exits(0).json();
    assert_eq!(all.as_array().unwrap().len(), 7);
    let a = scene
        .cli(&["dead", "list", "--handler", "cli.a", "--json"])
        .exits(0)
        .json();
    assert_eq!(a.as_array().unwrap().len(), 5);
    assert!(
        a.as_array()
            .unwrap()
            .iter()
            .all(|d| d["handler"] == "cli.a" && d["state"] == "dead")
    );
    let refused = scene
        .cli(&["dead", "list", "--error", "refused", "--json"])
        .exits(0)
        .json();
    assert_eq!(refused.as_array().unwrap().len(), 4);
    let none = scene
        .cli(&["dead", "list", "--type", "other.type", "--json"])
        .exits(0)
        .json();
    assert_eq!(none, serde_json::json!([]));
    // Since a minute ago: all of them; until a minute ago: none.
    let recent = scene
        .cli(&["dead", "list", "--since", "1m", "--json"])
        .exits(0)
        .json();
    assert_eq!(recent.as_array().unwrap().len(), 7);
    let old = scene
        .cli(&["dead", "list", "--until", "1m", "--json"])
        .exits(0)
        .json();
    assert_eq!(old.as_array().unwrap().len(), 0);

    let table = scene.cli(&["dead", "list", "--limit", "3"]).exits(0);
    assert_eq!(
        table
            .stdout
            .lines()
            .filter(|l| l.starts_with("cli."))
            .count(),
        3,
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("more than 3 match"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("upstream timeout after 5s"),
        "{}",
        table.stdout
    );
}

#[tokio::test]
async fn dead_show_prints_the_payload_and_the_last_error() {
    let scene = scene().await;
    let list = scene
        .cli(&["dead", "list", "--handler", "cli.b", "--json"])
        .exits(0)
        .json();
    let position = list[0]["position"].as_i64().unwrap().to_string();
    let out = scene.cli(&["dead", "show", "cli.b", &position]).exits(0);
    for expected in [
        "handler",
        "cli.b",
        "dead",
        "cli.job v1",
        "attempts",
        "connection refused",
        "payload",
        "\"n\":",
        "metadata",
        "died",
    ] {
        assert!(
            out.stdout.contains(expected),
            "`{expected}` in {}",
            out.stdout
        );
    }
    let json = scene
        .cli(&["dead", "show", "cli.b", &position, "--json"])
        .exits(0)
        .json();
    assert_eq!(json["attempts"], 1);
    assert!(json["payload"]["n"].is_number(), "{json}");

    let out = scene.cli(&["dead", "show", "cli.b", "999"]).exits(1);
    assert!(
        out.stderr
            .contains("no delivery of the event at position 999"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn retry_without_a_terminal_or_yes_refuses_and_changes_nothing() {
    let scene = scene().await;
    let out = scene.cli(&["dead", "retry", "--handler", "cli.a"]).exits(1);
    // (One dead letter alone is retried unasked: see `retrying_one_dead_letter_needs_no_confirmation`.)
    assert!(
        out.stdout.contains("5 dead letters match"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("refusing to retry 5 dead letters"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert_eq!(scene.count(Some("cli.a"), DeliveryState::Dead).await, 5);
}

#[tokio::test]
async fn dry_run_shows_the_counts_and_changes_nothing() {
    let scene = scene().await;
    let out = scene.cli(&["dead", "purge", "--all", "--dry-run"]).exits(0);
    assert!(
        out.stdout.contains("7 dead letters match"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("cli.a: 5") && out.stdout.contains("cli.b: 2"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("dry run: would purge 7 dead letters"),
        "{}",
        out.stdout
    );
    assert_eq!(scene.count(None, DeliveryState::Dead).await, 7);
}

#[tokio::test]
async fn retry_with_yes_works_in_chunks_and_resets_attempts() {
    let scene = scene().await;
    let out = scene
        .cli(&[
            "dead",
            "retry",
            "--handler",
            "cli.a",
            "--chunk",
            "2",
            "--yes",
        ])
        .exits(0);
    assert!(
        out.stdout.contains("retried 5 dead letters"),
        "{}",
        out.stdout
    );
    assert_eq!(scene.count(Some("cli.a"), DeliveryState::Dead).await, 0);
    assert_eq!(scene.count(Some("cli.a"), DeliveryState::Pending).await, 6);
    assert_eq!(scene.count(Some("cli.b"), DeliveryState::Dead).await, 2);
    let pending = scene
        .cli(&["dead", "list", "--handler", "cli.a", "--json"])
        .exits(0)
        .json();
    assert_eq!(pending, serde_json::json!([]));
    // Nothing left to do is no error.
    let out = scene
        .cli(&["dead", "retry", "--handler", "cli.a", "--yes"])
        .exits(0);
    assert!(out.stdout.contains("nothing to retry"), "{}", out.stdout);
}

#[tokio::test]
async fn purge_of_one_position_and_by_error() {
    let scene = scene().await;
    let list = scene
        .cli(&["dead", "list", "--handler", "cli.a", "--json"])
        .exits(0)
        .json();
    let position = list[0]["position"].as_i64().unwrap().to_string();
    let out = scene
        .cli(&[
            "dead",
            "purge",
            "--handler",
            "cli.a",
            "--position",
            &position,
            "--yes",
        ])
        .exits(0);
    assert!(
        out.stdout.contains("purged 1 dead letter"),
        "{}",
        out.stdout
    );
    assert_eq!(scene.count(Some("cli.a"), DeliveryState::Dead).await, 4);

    let out = scene
        .cli(&["dead", "purge", "--error", "refused", "--yes"])
        .exits(0);
    assert!(
        out.stdout.contains("purged 4 dead letters"),
        "{}",
        out.stdout
    );
    assert_eq!(scene.count(None, DeliveryState::Dead).await, 2);
}

#[tokio::test]
async fn pending_cancel_deletes_pending_deliveries_only() {
    let scene = scene().await;
    let out = scene
        .cli(&["pending", "cancel", "--handler", "cli.b", "--yes"])
        .exits(0);
    assert!(
        out.stdout.contains("cancelled 4 pending deliveries"),
        "{}",
        out.stdout
    );
    assert_eq!(scene.count(Some("cli.b"), DeliveryState::Pending).await, 0);
    assert_eq!(scene.count(Some("cli.b"), DeliveryState::Dead).await, 2);
    assert_eq!(scene.count(Some("cli.a"), DeliveryState::Pending).await, 1);
}

#[tokio::test]
async fn retrying_one_dead_letter_needs_no_confirmation() {
    let scene = scene().await;
    let list = scene
        .cli(&["dead", "list", "--handler", "cli.b", "--json"])
        .exits(0)
        .json();
    let position = list[0]["position"].as_i64().unwrap().to_string();
    let out = scene
        .cli(&[
            "dead",
            "retry",
            "--handler",
            "cli.b",
            "--position",
            &position,
        ])
        .exits(0);
    assert!(
        out.stdout.contains("retried 1 dead letter"),
        "{}",
        out.stdout
    );
    assert_eq!(scene.count(Some("cli.b"), DeliveryState::Dead).await, 1);
    // Purging one is still confirmed.
    let out = scene
        .cli(&["dead", "purge", "--handler", "cli.a", "--position", "1"])
        .exits(1);
    assert!(out.stderr.contains("refusing"), "{}", out.stderr);
}
