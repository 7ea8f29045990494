//! 9. Rolling deploys and shared databases: registration across processes.
//!
//! - A handler's routing key changes in a deploy. The old version (`osa-chaos`, `chaos.deploy`
//!   routed `blue`) runs and is stopped; the new version (this test process, the same name routed
//!   `green`, re-pointed at revision 2) starts; then an old process restarts, as an orchestrator
//!   restarts a crashed pod mid-deploy. It must fail start-up, naming both sides, and leave the
//!   subscription as the new version registered it: every `green` event published afterwards is
//!   handled. (Registration used to be last-writer-wins: the old process re-pointed the
//!   subscription back to `blue`, and `green` events got no delivery at all.)
//! - Two applications share a database, both with a handler `chaos.ledger`: two `osa-chaos`
//!   processes in namespaces `billing` and `shipping`. Each must handle every event. (Without
//!   namespaces they shared one subscription and each saw about half.)

use std::time::Duration;

use osa_events::prelude::*;
use osa_events::{PgStore, Runtime};
use osa_events_suite::chaos_events::Item;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{Scene, eventually, report, serial, tail};

/// The new version of `osa-chaos`'s `chaos.deploy`: the same name, routed `green`.
#[event_handler(name = "chaos.deploy", routing_key = "green", poll = "100ms")]
async fn deploy_green(item: Item, pool: State<PgPool>, ctx: Ctx) -> Result<(), HandlerError> {
    sqlx::query("insert into chaos_ledger (handler, seq, pid, attempt) values ($1, $2, 0, $3)")
        .bind("chaos.deploy.green")
        .bind(item.seq)
        .bind(i32::try_from(ctx.attempt()).unwrap_or(i32::MAX))
        .execute(&*pool)
        .await?;
    Ok(())
}

/// Publishes items `seqs` routed `routing_key`.
async fn publish(pool: &PgPool, routing_key: &str, seqs: std::ops::Range<i64>) {
    for seq in seqs {
        let item = Item {
            seq,
            pad: String::new(),
        };
        osa_events::publish_routed(pool, routing_key, &item)
            .await
            .expect("publish an item");
    }
}

/// The stored `(routing_key, revision)` of subscription `name`.
async fn stored(pool: &PgPool, name: &str) -> (Option<String>, i32) {
    sqlx::query_as("select routing_key, revision from osa_events.subscriptions where name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .expect("read the subscription")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_process_restarting_mid_deploy_fails_and_cannot_revert_the_subscription() {
    let _turn = serial().await;
    let scene = Scene::new("deploy").await;

    // The old version runs and handles its `blue` items, then is stopped by the deploy.
    let mut old = scene.worker("old", "chaos.deploy", &[]);
    scene.subscribed(&["chaos.deploy"]).await;
    publish(&scene.pool, "blue", 0..10).await;
    scene.drained(Duration::from_secs(30), "blue items").await;
    assert_eq!(scene.ledger("chaos.deploy").await, (10, 10));
    let (status, _) = old.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "the old version stops cleanly: {status}");

    // The new version re-points the subscription at `green`, revision 2, and runs.
    let shutdown = CancellationToken::new();
    let new = Runtime::builder(PgStore::from_pool(scene.pool.clone()))
        .resources(Resources::new().with(scene.pool.clone()))
        .only(["chaos.deploy"])
        .repoint("chaos.deploy", 2)
        .handle_signals(false)
        .shutdown_token(shutdown.clone())
        .build()
        .expect("the new version builds");
    new.register().await.expect("the new version re-points");
    let new = tokio::spawn(new.run());
    assert_eq!(
        stored(&scene.pool, "chaos.deploy").await,
        (Some("green".to_owned()), 2)
    );

    // An old process restarts mid-deploy: it must refuse to start, and say why and what to do.
    let restarted_at = std::time::Instant::now();
    let mut restarted = scene.worker("old-restarted", "chaos.deploy", &[]);
    let status = restarted.exit(Duration::from_secs(30)).await;
    let refused_after = restarted_at.elapsed();
    let log = restarted.stderr_text();
    assert!(
        !status.success(),
        "the old process must not start; log:\n{}",
        tail(&log, 20)
    );
    for needle in [
        "handler `chaos.deploy` is subscribed to `chaos.item` with routing key `green` (revision 2)",
        "this process subscribes it to `chaos.item` with routing key `blue` (revision 1)",
        "a newer deployment re-pointed it at revision 2",
    ] {
        assert!(
            log.contains(needle),
            "the error names `{needle}`; log:\n{}",
            tail(&log, 20)
        );
    }
    assert_eq!(
        stored(&scene.pool, "chaos.deploy").await,
        (Some("green".to_owned()), 2),
        "the old process did not revert the subscription"
    );

    // Events of the new version published now are all handled.
    publish(&scene.pool, "green", 100..120).await;
    eventually(
        Duration::from_secs(30),
        "the new version handled the 20 green items",
        || async { scene.ledger("chaos.deploy.green").await == (20, 20) },
    )
    .await;
    shutdown.cancel();
    new.await
        .expect("the new version's task")
        .expect("the new version stops cleanly");
    assert_eq!(scene.open().await.dead, 0, "no dead letters");
    report(
        "deploy",
        &[
            (
                "old_process_refused_after_ms",
                refused_after.as_millis().to_string(),
            ),
            ("blue_handled", "10".to_owned()),
            ("green_handled", "20".to_owned()),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_applications_sharing_a_database_each_handle_every_event() {
    let _turn = serial().await;
    let scene = Scene::new("namespaces").await;
    let events = 200;

    let mut billing = scene.worker("billing", "chaos.ledger", &["--namespace", "billing"]);
    let mut shipping = scene.worker("shipping", "chaos.ledger", &["--namespace", "shipping"]);
    // Both registered (the runtime logs this after registering).
    eventually(
        Duration::from_secs(30),
        "both applications started",
        || async {
            [&billing, &shipping]
                .iter()
                .all(|app| app.stderr_text().contains("osa-events runtime started"))
        },
    )
    .await;
    let mut publisher = scene.publisher("publisher", &["--events", &events.to_string()]);
    assert!(
        publisher.exit(Duration::from_secs(60)).await.success(),
        "the publisher succeeds"
    );
    scene
        .drained(Duration::from_secs(60), "both applications")
        .await;

    for app in [&billing, &shipping] {
        let (rows, seqs): (i64, i64) = sqlx::query_as(
            "select count(*), count(distinct seq) from chaos_ledger \
             where handler = 'chaos.ledger' and pid = $1",
        )
        .bind(i32::try_from(app.pid()).expect("a pid fits an int"))
        .fetch_one(&scene.pool)
        .await
        .expect("read the ledger");
        assert_eq!(
            seqs, events,
            "{} handled every event ({rows} rows)",
            app.name
        );
    }
    let names: Vec<String> =
        sqlx::query_scalar("select name from osa_events.subscriptions order by name")
            .fetch_all(&scene.pool)
            .await
            .expect("read the subscriptions");
    assert_eq!(names, ["billing@chaos.ledger", "shipping@chaos.ledger"]);
    for app in [&mut billing, &mut shipping] {
        let (status, _) = app.stop(Duration::from_secs(20)).await;
        assert!(status.success(), "{} stops cleanly", app.name);
    }
    report(
        "namespaces",
        &[
            ("events", events.to_string()),
            ("handled_by_each", events.to_string()),
        ],
    );
}
