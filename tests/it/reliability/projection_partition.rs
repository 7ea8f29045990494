//! 8. Projection partition: the network between the projection's leader and PostgreSQL fails;
//!    the server notices within seconds, the other process takes over, and when the network
//!    heals the old leader learns it lost the lead and follows.
//!
//! The scene is the failover test's (two `osa-chaos work --handlers chaos.projection` processes,
//! a publisher whose transactions commit out of order), but the leader is not killed: the test
//! cuts its leading session's TCP connection with iptables (`osa_events_fixtures::pg::Partition`),
//! dropping every packet both ways. Nothing closes the connection, so only the keepalive settings
//! and `tcp_user_timeout` the leader's session sets (`osa-events-postgres/src/projection/leader.rs`) make the server
//! end that session and free the lock; without them a half-open connection holds the lock for
//! hours. The test measures how long the server takes, and how long until the other process
//! leads and commits a batch. Then it heals the network: the old leader's next packet is answered
//! with a reset, its batch fails, and it must wait for the lock again (the test sees its new
//! session queued for the lock). Last, the test kills the current leader, and the old one must
//! take over, proving it recovered. The read model must be exact, as in the failover test, with
//! no batch failed and leadership moving only on a cut or a kill.
//!
//! Cutting a connection needs root and iptables (installed with apt when missing): outside CI a
//! machine without them skips the test with a note; under `CI=true` it fails.

use std::time::{Duration, Instant};

use osa_events_fixtures::pg::{Partition, unless_unavailable};

use super::projection_failover::{
    NODE_ARGS, PROJECTION, WAIT, applied_by, avg, catch_up, exactness, following, handovers,
    last_error, leader_session, leading_node, logged_events, max, ms, published, take_over,
    two_nodes_and_a_publisher,
};
use super::{Proc, Scene, count_lines, mib, replay_hint, report, scaled, seeded_rng, serial, tail};

/// The server must end a cut leader's session, and the other process lead and commit a batch,
/// within this: keepalives after 3 idle seconds, 3 probes a second apart, or 5 s of
/// unacknowledged data (`tcp_user_timeout`), then up to a second until the follower's next try.
const CUT_TAKEOVER_LIMIT: Duration = Duration::from_secs(15);
/// After the network heals, the old leader's next retransmission (TCP backs off to several
/// seconds while cut) meets a reset; it must be queued for the lock again within this.
const REJOIN_LIMIT: Duration = Duration::from_secs(40);
/// A takeover after a kill must take less than this (as in the failover test).
const KILL_TAKEOVER_LIMIT: Duration = Duration::from_secs(10);

/// Sessions of the projection of process `$1` waiting for the projection's advisory lock: a
/// follower in PostgreSQL's lock queue.
const QUEUED_SQL: &str = "select count(*) from pg_stat_activity \
     where datname = current_database() \
       and starts_with(application_name, 'osa-events projection chaos.projection ') \
       and application_name like '%:' || $1::text \
       and wait_event_type = 'Lock' and wait_event = 'advisory'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_is_replaced_within_seconds_and_follows_once_the_network_heals() {
    let _turn = serial().await;
    let scene = Scene::new("projection_partition").await;
    let mut rng = seeded_rng();
    let seed = rng.seed();
    let replay = replay_hint(seed);
    let cuts = scaled(1);
    let started = Instant::now();

    let (mut nodes, mut publisher) = two_nodes_and_a_publisher(&scene).await;

    let mut takeovers = Vec::new();
    let mut rejoins = Vec::new();
    for _ in 0..cuts {
        tokio::time::sleep(rng.duration(Duration::from_millis(500)..Duration::from_millis(1500)))
            .await;
        let victim = leading_node(&scene, &nodes).await;
        let survivor = 1 - victim;
        let applied_before = applied_by(&scene, nodes[survivor].pid()).await;
        let (session, _) = leader_session(&scene)
            .await
            .expect("the leader's session, just seen");
        let Some(partition) = cut(&scene, session).await else {
            return;
        };
        let cut_at = Instant::now();
        takeovers.push(
            take_over(
                &scene,
                nodes[victim].pid(),
                &nodes[survivor],
                applied_before,
                (cut_at, CUT_TAKEOVER_LIMIT),
                &replay,
            )
            .await,
        );
        partition.heal().expect("heal the partition");
        rejoins.push(rejoin(&scene, &nodes[victim], &replay).await);
    }

    // The last cut-off leader recovered: it takes over when the current leader dies.
    let victim = leading_node(&scene, &nodes).await;
    let survivor = 1 - victim;
    let applied_before = applied_by(&scene, nodes[survivor].pid()).await;
    let killed_at = Instant::now();
    nodes[victim].kill().await;
    let retake = take_over(
        &scene,
        nodes[victim].pid(),
        &nodes[survivor],
        applied_before,
        (killed_at, KILL_TAKEOVER_LIMIT),
        &replay,
    )
    .await;
    let killed = std::mem::replace(
        &mut nodes[victim],
        scene.worker("replacement", PROJECTION, NODE_ARGS),
    );
    following(&nodes[victim]).await;

    let (status, _) = publisher.stop(WAIT).await;
    assert!(status.success(), "the publisher exited with {status}");
    let published = published(&publisher);
    let events = logged_events(&scene).await;
    let catch_up = catch_up(&scene, events, &replay).await;
    for node in &mut nodes {
        let (status, _) = node.stop(WAIT).await;
        assert!(status.success(), "{} exited with {status}", node.name);
    }

    let exact = exactness(&scene).await;
    let handovers = handovers(&scene).await;
    let last_error = last_error(&scene).await;
    let all = || nodes.iter().chain([&killed]);
    let store_failures: usize = all()
        .map(|node| count_lines(&node.stderr_text(), &["projection store failed"]))
        .sum();
    let peak_rss = all().map(|node| node.peak_rss_kib).max().unwrap_or(0);
    let released: Vec<Duration> = takeovers.iter().map(|t| t.released).collect();
    let lead: Vec<Duration> = takeovers.iter().map(|t| t.lead).collect();
    let applied: Vec<Duration> = takeovers.iter().map(|t| t.applied).collect();

    report(
        "projection_partition",
        &[
            ("events", events.to_string()),
            ("published", published.to_string()),
            ("cuts", cuts.to_string()),
            ("session_ended_avg", ms(avg(&released))),
            ("session_ended_max", ms(max(&released))),
            ("lead_after_max", ms(max(&lead))),
            ("takeover_avg", ms(avg(&applied))),
            ("takeover_max", ms(max(&applied))),
            ("rejoined_max", ms(max(&rejoins))),
            ("retake_after_kill", ms(retake.applied)),
            ("leaders", handovers.leaders.to_string()),
            ("runs", handovers.runs.to_string()),
            ("store_failures_logged", store_failures.to_string()),
            ("catch_up", ms(catch_up)),
            ("peak_rss", mib(peak_rss)),
            ("seconds", format!("{:.1}", started.elapsed().as_secs_f64())),
            ("seed", seed.to_string()),
        ],
    );
    exact.assert_exact(published, events, &replay);
    assert_eq!(
        last_error, None,
        "a batch of the projection failed {replay}"
    );
    assert_eq!(
        handovers.rolled_back_without_kill, 0,
        "a batch wrote rows and was rolled back without a cut or a kill {replay}"
    );
    // Leadership alternates between the two first nodes, once per cut and once for the kill.
    assert_eq!(
        (handovers.leaders, handovers.runs),
        (2, cuts as i64 + 2),
        "leadership changed hands other than by a cut or the kill {replay}"
    );
}

/// Cuts the connection of server session `session`, or, outside CI on a machine where that is
/// impossible (not root, no iptables, no netfilter), says why and returns `None`.
async fn cut(scene: &Scene, session: i32) -> Option<Partition> {
    unless_unavailable(
        Partition::cut_session(&scene.pool, session).await,
        "cutting the leader's connection",
    )
}

/// Waits until `node`, cut off while it led, has a session queued for the lock again, and
/// returns how long after the heal that took; panics after [`REJOIN_LIMIT`] with its log.
async fn rejoin(scene: &Scene, node: &Proc, replay: &str) -> Duration {
    let healed_at = Instant::now();
    loop {
        let queued: i64 = sqlx::query_scalar(QUEUED_SQL)
            .bind(i64::from(node.pid()))
            .fetch_one(&scene.pool)
            .await
            .expect("read the lock queue");
        if queued > 0 {
            return healed_at.elapsed();
        }
        assert!(
            healed_at.elapsed() < REJOIN_LIMIT,
            "{} did not wait for the lock again within {REJOIN_LIMIT:?} of the heal {replay}; \
             its log:\n{}",
            node.name,
            tail(&node.stderr_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
