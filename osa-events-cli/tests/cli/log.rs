//! `replay`, `prune` and `projections reset`: the commands that walk the log.

use std::time::Duration;

use osa_events::operations::DeliveryState;
use osa_events::store::Store;

use crate::support::{Job, Scene};
use osa_events::Event;

#[tokio::test]
async fn replay_delivers_handled_events_again() {
    let scene = Scene::new().await;
    let a = scene.subscribe("cli.a").await;
    scene.publish(0..5).await;
    scene.handle(a, 5).await;
    assert_eq!(scene.count(Some("cli.a"), DeliveryState::Pending).await, 0);

    let out = scene
        .cli(&["replay", "cli.a", "--from-position", "2", "--dry-run"])
        .exits(0);
    assert!(out.stdout.contains("positions 2..=5"), "{}", out.stdout);
    assert_eq!(scene.count(Some("cli.a"), DeliveryState::Pending).await, 0);
    let out = scene.cli(&["replay", "cli.a"]).exits(1);
    assert!(out.stderr.contains("refusing to replay"), "{}", out.stderr);

    let out = scene
        .cli(&[
            "replay",
            "cli.a",
            "--from-position",
            "2",
            "--through-position",
            "4",
            "--chunk",
            "1",
            "--yes",
        ])
        .exits(0);
    assert!(
        out.stdout.contains("delivered 3 events again"),
        "{}",
        out.stdout
    );
    assert_eq!(scene.count(Some("cli.a"), DeliveryState::Pending).await, 3);

    let out = scene
        .cli(&["replay", "cli.a", "--type", "cli.other", "--yes"])
        .exits(1);
    assert!(
        out.stderr
            .contains("receives `cli.job` events, not `cli.other`"),
        "{}",
        out.stderr
    );

    // What is still open is skipped, and said so.
    let out = scene.cli(&["replay", "cli.a", "--yes"]).exits(0);
    assert!(
        out.stdout.contains("delivered 2 events again"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("skipped 3"), "{}", out.stdout);
}

#[tokio::test]
async fn prune_deletes_handled_events_and_keeps_dead_letters() {
    let scene = Scene::new().await;
    let a = scene.subscribe("cli.a").await;
    scene.publish(0..4).await;
    scene.handle(a, 3).await; // three handled, one pending
    tokio::time::sleep(Duration::from_millis(50)).await;

    scene
        .cli(&["prune", "--older-than", "1ms", "--dry-run"])
        .exits(0);
    let out = scene.cli(&["prune", "--older-than", "1ms"]).exits(1);
    assert!(out.stderr.contains("refusing to prune"), "{}", out.stderr);
    let out = scene
        .cli(&["prune", "--older-than", "1ms", "--batch", "1", "--yes"])
        .exits(0);
    assert!(out.stdout.contains("deleted 3 events"), "{}", out.stdout);
    assert_eq!(scene.count(Some("cli.a"), DeliveryState::Pending).await, 1);

    let out = scene.cli(&["prune", "--older-than", "soon"]).exits(2);
    assert!(out.stderr.contains("--older-than"), "{}", out.stderr);
}

#[tokio::test]
async fn projections_reset_by_name() {
    let scene = Scene::new().await;
    scene.publish(0..3).await;
    let projections = Store::projections(&scene.store).expect("PgStore runs projections");
    // Leading once creates the checkpoint, at the beginning.
    drop(
        projections
            .try_lead("cli.totals", "cli-test", Duration::ZERO)
            .await
            .unwrap(),
    );

    let out = scene
        .cli(&["projections", "reset", "cli.totals", "--to", "end"])
        .exits(1);
    assert!(
        out.stderr
            .contains("refusing to reset projection `cli.totals`"),
        "{}",
        out.stderr
    );
    let out = scene
        .cli(&["projections", "reset", "cli.totals", "--to", "end", "--yes"])
        .exits(0);
    assert!(
        out.stdout.contains("reset projection `cli.totals`"),
        "{}",
        out.stdout
    );
    let status = projections
        .status("cli.totals", &[Job::NAME])
        .await
        .unwrap();
    assert_eq!((status.position, status.lag), (3, 0), "{status:?}");

    let out = scene
        .cli(&["projections", "reset", "cli.nothing", "--yes"])
        .exits(1);
    assert!(
        out.stderr.contains("no projection is named `cli.nothing`"),
        "{}",
        out.stderr
    );
    let out = scene
        .cli(&["projections", "reset", "cli.totals", "--to", "later"])
        .exits(2);
    assert!(out.stderr.contains("beginning"), "{}", out.stderr);
}

#[tokio::test]
async fn prune_include_dead_counts_and_deletes_dead_letters_of_old_events() {
    let scene = Scene::new().await;
    let a = scene.subscribe("cli.a").await;
    scene.publish(0..3).await;
    scene.kill(a, 2, "gone").await;
    scene.handle(a, 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let out = scene
        .cli(&["prune", "--older-than", "1ms", "--yes"])
        .exits(0);
    assert!(
        out.stdout.contains("deleted 1 events and 0 dead letters"),
        "{}",
        out.stdout
    );
    assert_eq!(scene.count(Some("cli.a"), DeliveryState::Dead).await, 2);
    let out = scene
        .cli(&[
            "prune",
            "--older-than",
            "1ms",
            "--include-dead",
            "--dry-run",
        ])
        .exits(0);
    assert!(
        out.stdout
            .contains("2 dead letters of those events would be deleted"),
        "{}",
        out.stdout
    );
    let out = scene
        .cli(&["prune", "--older-than", "1ms", "--include-dead", "--yes"])
        .exits(0);
    assert!(
        out.stdout.contains("deleted 2 events and 2 dead letters"),
        "{}",
        out.stdout
    );
    assert_eq!(scene.count(Some("cli.a"), DeliveryState::Dead).await, 0);
}
