//! 19. A fatal handler error: the worker process stops gracefully and exits non-zero.
//!
//! One `osa-chaos` worker runs `chaos.slow` (3 s of work per event, in a `Tx`) and
//! `chaos.poison`. While `chaos.slow` is in the middle of an event, a `chaos.poison` event of
//! mode `fatal` arrives: the worker claims nothing more, lets the slow call finish and commit
//! within its grace period, and exits with 1, logging the error; the fatal delivery is pending
//! again with its attempt given back and the error kept, for the next process once it is fixed.

use std::time::{Duration, Instant};

use osa_events::Outgoing;
use osa_events_suite::chaos_events::{Item, Mode, Poison};

use super::{Scene, eventually, serial};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_handler_error_stops_the_worker_gracefully_with_exit_code_1() {
    let _turn = serial().await;
    let scene = Scene::new("fatal_exit").await;
    let mut worker = scene.worker(
        "worker",
        "chaos.slow,chaos.poison",
        &["--work-ms", "3000", "--grace-ms", "10000"],
    );
    scene.subscribed(&["chaos.slow", "chaos.poison"]).await;
    let item = |seq| {
        Outgoing::new(&Item {
            seq,
            pad: String::new(),
        })
        .unwrap()
    };
    osa_events::publish_batch(&scene.pool, &[item(0)])
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "chaos.slow to claim item 0",
        || async { claimed(&scene, "chaos.slow").await == 1 },
    )
    .await;

    let fatal_at = Instant::now();
    osa_events::publish(
        &scene.pool,
        &Poison {
            seq: 7,
            mode: Mode::Fatal,
        },
    )
    .await
    .unwrap();
    eventually(
        Duration::from_secs(2),
        "the fatal delivery given back",
        || async {
            given_back(&scene)
                .await
                .is_some_and(|(status, attempts, error)| {
                    status == "pending" && attempts == 0 && error.is_some()
                })
        },
    )
    .await;
    // Published while the worker stops (the slow call still runs): never claimed, although
    // `chaos.slow`'s second claim loop is idle.
    assert!(worker.running(), "waiting for the slow call");
    osa_events::publish_batch(&scene.pool, &[item(1)])
        .await
        .unwrap();
    let status = worker.exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(1), "exited with {status}");
    assert!(
        fatal_at.elapsed() < Duration::from_secs(10),
        "stopped within the grace period: {:?}",
        fatal_at.elapsed()
    );

    let log = worker.stderr_text();
    let exit_line = log
        .lines()
        .find(|line| line.contains("osa-chaos: handler `chaos.poison` stopped the runtime"))
        .unwrap_or_else(|| panic!("no exit line naming the fatal error:\n{log}"));
    assert!(
        exit_line.contains("poison 7: the worker's schema is wrong"),
        "{exit_line}"
    );

    let slow: Vec<i64> = sqlx::query_scalar(
        "select seq from chaos_ledger where handler = 'chaos.slow' order by seq",
    )
    .fetch_all(&scene.pool)
    .await
    .unwrap();
    assert_eq!(
        slow,
        [0],
        "the running call finished and committed; item 1 was never claimed"
    );
    let (status, attempts, last_error) = given_back(&scene).await.expect("the fatal delivery");
    assert_eq!(
        (status.as_str(), attempts),
        ("pending", 0),
        "given back, not failed"
    );
    assert!(
        last_error.is_some_and(|error| error.contains("stopped the runtime with a fatal error")),
        "the error is kept on the delivery"
    );
    assert_eq!(
        claimed(&scene, "chaos.slow").await,
        0,
        "no claim left behind"
    );
}

/// `(status, attempts, last_error)` of `chaos.poison`'s one delivery.
async fn given_back(scene: &Scene) -> Option<(String, i32, Option<String>)> {
    sqlx::query_as(
        "select d.status, d.attempts, d.last_error from osa_events.deliveries d \
         join osa_events.subscriptions s on s.id = d.subscription_id where s.name = 'chaos.poison'",
    )
    .fetch_optional(&scene.pool)
    .await
    .unwrap()
}

/// How many deliveries of `handler` are claimed.
async fn claimed(scene: &Scene, handler: &str) -> i64 {
    sqlx::query_scalar(
        "select count(*) from osa_events.deliveries d \
         join osa_events.subscriptions s on s.id = d.subscription_id \
         where s.name = $1 and d.status = 'claimed'",
    )
    .bind(handler)
    .fetch_one(&scene.pool)
    .await
    .unwrap()
}
