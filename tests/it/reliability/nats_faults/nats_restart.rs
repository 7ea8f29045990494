//! The nats-server restarted, then stopped for a few seconds and started again, under a running
//! relay process while three tasks publish.
//!
//! The relay's connection does not reconnect by itself (a client that did would send, after the
//! reconnect, publishes buffered before it, whose predecessors may have been lost with the old
//! connection): the relay keeps its checkpoint, backs off, opens a new connection and sends the
//! batch again. Afterwards the stream holds every event of the log exactly once, in the log's
//! commit order.

use std::time::{Duration, Instant};

use super::super::{Scene, count_lines, replay_hint, report, scaled, seeded_rng, serial, tail};
use super::{StreamCheck, as_strs, caught_up, publish_items, relay_args};
use crate::nats::Nats;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_rides_out_nats_restarts_with_every_event_once_in_commit_order() {
    let _turn = serial().await;
    let Some(mut nats) = Nats::start().await else {
        return;
    };
    nats.events_stream().await;
    let scene = Scene::new("nats_restart").await;
    let mut rng = seeded_rng();
    let seed = rng.seed();
    let replay = replay_hint(seed);
    let events = scaled(10_000) as i64;
    let rounds = scaled(1);
    let started = Instant::now();

    let mut relay = scene.nats_chaos("relay", &as_strs(&relay_args(&nats)));
    let publishing = tokio::spawn(publish_items(
        scene.pool.clone(),
        events,
        Duration::from_secs(12 * rounds),
        seed,
    ));
    let (mut restarts, mut outages) = (0, 0);
    let mut down_for = Duration::ZERO;
    let between = || Duration::from_millis(1500)..Duration::from_millis(3000);
    for _ in 0..rounds {
        tokio::time::sleep(rng.duration(between())).await;
        nats.server
            .restart()
            .await
            .expect("nats-server starts again");
        restarts += 1;
        tokio::time::sleep(rng.duration(between())).await;
        let stopped = Instant::now();
        nats.server.stop().await;
        tokio::time::sleep(rng.duration(between())).await;
        nats.server
            .start_again()
            .await
            .expect("nats-server starts again");
        down_for += stopped.elapsed();
        outages += 1;
    }
    let last_fault = Instant::now();
    let transactions = publishing.await.expect("the publishing tasks");
    caught_up(&scene, &nats, events, &format!("seed {seed}")).await;
    let caught_up_after_last_fault = last_fault.elapsed();
    let (status, _) = relay.stop(Duration::from_secs(20)).await;
    let check = StreamCheck::read(&scene, &nats).await;
    let log = relay.stderr_text();
    let failed_batches = count_lines(&log, &[" WARN ", "NATS unavailable"]);
    let failed_reconnects = count_lines(&log, &[" WARN ", "cannot reconnect to NATS yet"]);

    let mut figures = vec![
        ("events", events.to_string()),
        ("transactions", transactions.to_string()),
        ("restarts", restarts.to_string()),
        ("outages", outages.to_string()),
        ("down_for", format!("{down_for:.1?}")),
        ("failed_batches", failed_batches.to_string()),
        ("failed_reconnects", failed_reconnects.to_string()),
    ];
    figures.extend(check.figures());
    figures.extend([
        (
            "caught_up_after_last_fault",
            format!("{caught_up_after_last_fault:.1?}"),
        ),
        ("seconds", format!("{:.1}", started.elapsed().as_secs_f64())),
        ("seed", seed.to_string()),
    ]);
    report("nats_restart", &figures);
    assert!(
        status.success(),
        "the relay exited with {status}: {}",
        tail(&log, 20)
    );
    assert!(
        failed_batches > 0,
        "the relay never saw NATS go away: the test broke nothing {replay}"
    );
    check.assert_exact(&replay);
}
