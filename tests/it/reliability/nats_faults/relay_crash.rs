//! The relay process SIGKILLed at random moments and restarted while three tasks publish: 0.2–1
//! s after the last restart, as soon as the stream is seen growing (the relay mid-batch).
//!
//! A killed relay leaves events in the stream that its checkpoint does not cover yet (published,
//! perhaps acknowledged, but the batch not committed): the next relay sends them again from the
//! checkpoint, and JetStream drops the copies by their `Nats-Msg-Id`. Afterwards the stream holds
//! every event of the log exactly once, in the log's commit order.

use std::time::{Duration, Instant};

use super::super::{Proc, Scene, replay_hint, report, scaled, seeded_rng, serial};
use super::{
    StreamCheck, as_strs, caught_up, past_checkpoint, publish_items, relay_args, stream_count,
};
use crate::nats::Nats;

/// At least this many kills, however fast the publishing goes.
const MIN_KILLS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_relays_put_every_event_in_the_stream_once_in_commit_order() {
    let _turn = serial().await;
    let Some(nats) = Nats::start().await else {
        return;
    };
    nats.events_stream().await;
    let scene = Scene::new("nats_relay_crash").await;
    let mut rng = seeded_rng();
    let seed = rng.seed();
    let replay = replay_hint(seed);
    let events = scaled(20_000) as i64;
    let started = Instant::now();

    let args = relay_args(&nats);
    let mut relay = scene.nats_chaos("relay0", &as_strs(&args));
    let publishing = tokio::spawn(publish_items(
        scene.pool.clone(),
        events,
        Duration::from_secs(scaled(5)),
        seed,
    ));
    let mut retired: Vec<Proc> = Vec::new();
    let mut resent = 0;
    let mut last_kill = Instant::now();
    while !publishing.is_finished() || retired.len() < MIN_KILLS {
        tokio::time::sleep(rng.duration(Duration::from_millis(200)..Duration::from_millis(1000)))
            .await;
        publishing_to_the_stream(&nats).await;
        relay.kill().await;
        last_kill = Instant::now();
        resent += past_checkpoint(&scene, &nats).await;
        tokio::time::sleep(rng.duration(Duration::ZERO..Duration::from_millis(300))).await;
        let replacement = scene.nats_chaos(&format!("relay{}", retired.len() + 1), &as_strs(&args));
        retired.push(std::mem::replace(&mut relay, replacement));
    }
    let transactions = publishing.await.expect("the publishing tasks");
    let published_in = started.elapsed();
    caught_up(&scene, &nats, events, &format!("seed {seed}")).await;
    let caught_up_after_last_kill = last_kill.elapsed();
    // The last relay may have had nothing left to send: SIGTERM only once it listens for it.
    super::super::eventually(Duration::from_secs(30), "the last relay leads", || async {
        relay.stderr_text().contains("leading the relay")
    })
    .await;
    let (status, _) = relay.stop(Duration::from_secs(20)).await;
    let check = StreamCheck::read(&scene, &nats).await;

    let mut figures = vec![
        ("events", events.to_string()),
        ("transactions", transactions.to_string()),
        ("kills", retired.len().to_string()),
        ("resent", resent.to_string()),
    ];
    figures.extend(check.figures());
    figures.extend([
        ("published_in", format!("{published_in:.1?}")),
        (
            "caught_up_after_last_kill",
            format!("{caught_up_after_last_kill:.1?}"),
        ),
        ("seconds", format!("{:.1}", started.elapsed().as_secs_f64())),
        ("seed", seed.to_string()),
    ]);
    report("nats_relay_crash", &figures);
    assert!(
        status.success(),
        "the last relay exited with {status}: {}",
        super::super::tail(&relay.stderr_text(), 20)
    );
    check.assert_exact(&replay);
}

/// Returns once the stream grows between two looks 10 ms apart (the relay is publishing a
/// batch), or after a second: so that most kills land in the middle of a batch rather than in
/// the relay's wait for new events.
async fn publishing_to_the_stream(nats: &Nats) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut last = stream_count(nats).await;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = stream_count(nats).await;
        if now > last {
            return;
        }
        last = now;
    }
}
