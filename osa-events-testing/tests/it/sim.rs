//! `Simulation`: claim loops of one handler under a seeded scheduler, with crashes and stalls.

use std::time::Duration;

use osa_events::prelude::*;
use osa_events_testing::sim::{Behaviour, Faults, Probe, SimStats, Simulation};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "sim.test.job")]
struct Job {
    n: u32,
}

const CLAIM_TIMEOUT: Duration = Duration::from_secs(30);

#[event_handler(
    name = "sim.each",
    batch = 3,
    claim_timeout = "30s",
    retries = 3,
    backoff = "5s",
    poll = "2s"
)]
async fn each(_job: Job, probe: State<Probe>, ctx: Ctx) -> Result<(), HandlerError> {
    probe.call(&ctx).await
}

#[event_handler(
    name = "sim.batch",
    batch = 4,
    claim_timeout = "30s",
    retries = 2,
    backoff = "3s",
    poll = "1s"
)]
async fn batch(jobs: Batch<Job>, probe: State<Probe>) -> Result<(), HandlerError> {
    for (ctx, _job) in jobs.iter_with_ctx() {
        probe.call(ctx).await?;
    }
    Ok(())
}

async fn simulation(handler: &str, seed: u64) -> Simulation {
    let sim = Simulation::builder(handler)
        .seed(seed)
        .workers(3)
        .build()
        .await
        .expect("the simulation builds");
    for n in 0..12 {
        sim.publish(&Job { n });
    }
    sim
}

fn add(total: &mut SimStats, stats: &SimStats) {
    total.claims += stats.claims;
    total.reclaims += stats.reclaims;
    total.extends += stats.extends;
    total.completed += stats.completed;
    total.refused_completions += stats.refused_completions;
    total.refused_failures += stats.refused_failures;
    total.crashes += stats.crashes;
    total.stalls += stats.stalls;
    total.stale_overlaps += stats.stale_overlaps;
    total.dead += stats.dead;
    total.retried += stats.retried;
    total.handler_calls += stats.handler_calls;
}

/// Many interleavings with crashes and stalls: every one keeps the claim protocol (checked at
/// every step), and together they exercise what they are meant to.
#[tokio::test]
async fn every_seed_keeps_the_claim_protocol_through_crashes_and_stalls() {
    for handler in ["sim.each", "sim.batch"] {
        let mut total = SimStats::default();
        for seed in 0..100 {
            let report = simulation(handler, seed).await.run();
            assert_eq!(
                report.stats.completed + report.stats.dead,
                12,
                "seed {seed}"
            );
            add(&mut total, &report.stats);
        }
        assert!(
            total.crashes > 0 && total.stalls > 0,
            "{handler}: {total:?}"
        );
        assert!(
            total.reclaims > 0,
            "claims expired and were taken over: {total:?}"
        );
        assert!(
            total.refused_completions > 0,
            "late completions refused: {total:?}"
        );
        assert!(
            total.stale_overlaps > 0,
            "a stalled worker resumed mid-handler: {total:?}"
        );
        assert!(total.extends > 0 && total.retried > 0, "{total:?}");
    }
}

/// Without faults, workers race for the same deliveries and handlers take up to four claim
/// timeouts: heartbeats keep every claim, so nothing is ever claimed twice at once (the
/// simulation checks it at every step) and no claim is ever taken over.
#[tokio::test]
async fn healthy_workers_never_share_a_delivery_and_heartbeats_keep_claims() {
    for seed in 0..100 {
        let sim = Simulation::builder("sim.each")
            .seed(seed)
            .workers(4)
            .faults(Faults::NONE)
            .behaviour(Behaviour {
                durations: Duration::ZERO..CLAIM_TIMEOUT * 4,
                ..Behaviour::default()
            })
            .build()
            .await
            .unwrap();
        for n in 0..12 {
            sim.publish(&Job { n });
        }
        let stats = sim.run().stats;
        assert_eq!(stats.reclaims, 0, "seed {seed}: {stats:?}");
        assert_eq!(stats.refused_completions + stats.refused_failures, 0);
        assert_eq!(stats.stale_overlaps, 0);
        assert!(stats.extends > 0);
    }
}

/// Replaying a seed replays the run: the same trace line for line (worker, time, positions,
/// attempts, outcomes), although tokens, event ids and tokio's own randomness differ per run.
#[tokio::test]
async fn the_same_seed_gives_the_same_trace() {
    for handler in ["sim.each", "sim.batch"] {
        for seed in 0..20 {
            let first = simulation(handler, seed).await.run();
            let second = simulation(handler, seed).await.run();
            assert_eq!(first.trace, second.trace, "{handler}, seed {seed}");
            assert_eq!(first.stats, second.stats);
            assert!(
                first.trace.len() > 50,
                "a real run: {} lines",
                first.trace.len()
            );
        }
    }
    let one = simulation("sim.each", 42).await.run();
    let other = simulation("sim.each", 43).await.run();
    assert_ne!(one.trace, other.trace);
}

/// Handler calls of a fixed length that always succeed.
fn steady(duration: Duration) -> Behaviour {
    Behaviour {
        durations: duration..duration + Duration::from_millis(1),
        retry: 0.0,
        permanent: 0.0,
    }
}

async fn scripted(workers: usize, behaviour: Behaviour) -> Simulation {
    let sim = Simulation::builder("sim.each")
        .workers(workers)
        .faults(Faults::NONE)
        .behaviour(behaviour)
        .build()
        .await
        .unwrap();
    sim.publish(&Job { n: 1 });
    sim
}

#[tokio::test]
async fn a_crashed_worker_s_claim_is_taken_over_only_after_the_timeout() {
    let mut sim = scripted(2, steady(Duration::from_secs(10))).await;
    assert!(sim.poll(0), "w0 claims the delivery and starts its handler");
    assert_eq!(sim.stats().claims, 1);
    let claimed_at = sim.clock().now();
    sim.crash(0);

    // w1 polls every 2 s; the model fails the run if it claims before the claim expires.
    assert!(sim.run_until(1_000, |sim| sim.stats().reclaims == 1));
    assert_eq!(sim.clock().now() - claimed_at, CLAIM_TIMEOUT);
    let report = sim.finish();
    assert_eq!(report.stats.completed, 1);
    assert!(
        report
            .trace
            .iter()
            .any(|line| line.ends_with("claim -> 1@2"))
    );
}

#[tokio::test]
async fn a_stalled_worker_s_late_completion_is_refused() {
    let mut sim = scripted(2, steady(Duration::from_secs(10))).await;
    assert!(sim.poll(0));
    sim.stall(0, CLAIM_TIMEOUT * 4);

    // w1 takes the delivery over once w0's claim expires, and completes it.
    assert!(sim.run_until(1_000, |sim| sim.stats().completed == 1));
    // w0 wakes up, finishes its handler call and tries to complete: refused.
    assert!(sim.run_until(1_000, |sim| sim.stats().refused_completions == 1));
    let report = sim.finish();
    assert_eq!(report.stats.completed, 1, "handled twice, completed once");
    assert_eq!(
        report.stats.stale_overlaps, 1,
        "w1 handled it while w0's call hung"
    );
}

#[tokio::test]
async fn a_heartbeat_keeps_a_claim_through_ten_claim_timeouts() {
    let mut sim = scripted(2, steady(CLAIM_TIMEOUT * 10)).await;
    assert!(sim.poll(0));
    // w1 polls all along; w0's heartbeat extends every 10 s.
    assert!(sim.run_until(10_000, |sim| sim.stats().completed == 1));
    let stats = sim.finish().stats;
    assert_eq!(stats.claims, 1, "never claimed again: {stats:?}");
    assert!(stats.extends >= 29, "{stats:?}");
}
