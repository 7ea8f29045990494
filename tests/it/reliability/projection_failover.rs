//! 7. Projection failover: the leader of a projection, a real process, SIGKILLed mid-run; the
//!    other process takes over, and the read model is still exact.
//!
//! Two `osa-chaos work --handlers chaos.projection` processes run the projection: one leads (its
//! dedicated session holds the projection's advisory lock), the other follows. Each batch works
//! 20 ms after writing its rows, so a kill often lands between its writes and its commit. An
//! `osa-chaos publish` process publishes `chaos.item` events at 250/s from 8 concurrent
//! publishers, each holding its transaction open 20-220 ms, so transactions commit in another
//! order than they began (the test samples that they did). A few times, at a random moment, the
//! test finds the leader (the `application_name` of the session holding the lock ends with the
//! leader's process id), SIGKILLs it, measures how long the other process takes to lead and to
//! commit a batch of its own, and then starts a replacement, which follows. Then the publisher
//! stops, the projection catches up, and the read model `chaos_projected` must be exact: one row
//! per published event, none missing, none extra, none applied twice (the primary key would have
//! failed the batch), all applied in the log's commit order, by one leader after
//! another, and no batch rolled back except by a kill.

use std::time::{Duration, Instant};

use super::{
    Proc, Scene, count_lines, eventually, mib, replay_hint, report, scaled, seeded_rng, serial,
    tail,
};

pub(super) const PROJECTION: &str = "chaos.projection";
/// Each batch works 20 ms after writing its rows, inside its transaction: a kill often lands
/// between the writes and the commit.
pub(super) const NODE_ARGS: &[&str] = &["--work-ms", "20"];
/// Events per second over all publishers: enough that every leader has batches to apply.
const RATE: u64 = 250;
/// A takeover (the other process leads and commits its first batch) must take less than this.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(10);
pub(super) const WAIT: Duration = Duration::from_secs(30);

/// The session holding the projection's lock: its leader. The lock key is the runtime's business;
/// the `application_name` of a projection's session is documented (`ProjectionStatus::leader`),
/// and a follower's session, which fails to take the lock, holds no advisory lock.
const LEADER_SQL: &str = "select a.pid, a.application_name from pg_stat_activity a \
     where a.datname = current_database() \
       and starts_with(a.application_name, 'osa-events projection chaos.projection ') \
       and exists (select 1 from pg_locks l \
                   where l.pid = a.pid and l.locktype = 'advisory' and l.granted)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_projection_leaders_are_replaced_and_every_event_is_applied_once_in_order() {
    let _turn = serial().await;
    let scene = Scene::new("projection_failover").await;
    let mut rng = seeded_rng();
    let seed = rng.seed();
    let replay = replay_hint(seed);
    let kills = scaled(6);
    let started = Instant::now();

    let (mut nodes, mut publisher) = two_nodes_and_a_publisher(&scene).await;

    let mut takeovers: Vec<Takeover> = Vec::new();
    let mut killed: Vec<Proc> = Vec::new();
    for round in 0..kills {
        tokio::time::sleep(rng.duration(Duration::from_millis(500)..Duration::from_millis(1500)))
            .await;
        let victim = leading_node(&scene, &nodes).await;
        let survivor = 1 - victim;
        let survivor_pid = nodes[survivor].pid();
        let applied_before = applied_by(&scene, survivor_pid).await;
        let killed_at = Instant::now();
        nodes[victim].kill().await;
        let victim_pid = nodes[victim].pid();
        let takeover = take_over(
            &scene,
            victim_pid,
            &nodes[survivor],
            applied_before,
            (killed_at, TAKEOVER_LIMIT),
            &replay,
        )
        .await;
        takeovers.push(takeover);
        let replacement = scene.worker(&format!("node{}", round + 2), PROJECTION, NODE_ARGS);
        following(&replacement).await;
        killed.push(std::mem::replace(&mut nodes[victim], replacement));
    }

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
    let out_of_position = committed_out_of_position_order(&scene).await;
    let handovers = handovers(&scene).await;
    let last_error = last_error(&scene).await;
    let pids: Vec<i32> = nodes
        .iter()
        .chain(&killed)
        .map(|node| node.pid() as i32)
        .collect();
    let strangers: i64 =
        sqlx::query_scalar("select count(*) from chaos_projected where applied_by <> all($1)")
            .bind(&pids)
            .fetch_one(&scene.pool)
            .await
            .unwrap();
    let warnings: usize = nodes
        .iter()
        .chain(&killed)
        .map(|node| count_lines(&node.stderr_text(), &[" WARN "]))
        .sum();
    let peak_rss = nodes
        .iter()
        .chain(&killed)
        .map(|node| node.peak_rss_kib)
        .max()
        .unwrap_or(0);
    let released: Vec<Duration> = takeovers.iter().map(|t| t.released).collect();
    let lead: Vec<Duration> = takeovers.iter().map(|t| t.lead).collect();
    let applied: Vec<Duration> = takeovers.iter().map(|t| t.applied).collect();

    report(
        "projection_failover",
        &[
            ("events", events.to_string()),
            ("published", published.to_string()),
            ("nodes", "2".to_owned()),
            ("kills", kills.to_string()),
            ("kills_mid_batch", handovers.mid_batch.to_string()),
            ("leaders", handovers.leaders.to_string()),
            ("session_ended_max", ms(max(&released))),
            ("lead_after_avg", ms(avg(&lead))),
            ("lead_after_max", ms(max(&lead))),
            ("takeover_avg", ms(avg(&applied))),
            ("takeover_max", ms(max(&applied))),
            (
                "committed_out_of_position_order",
                out_of_position.to_string(),
            ),
            ("catch_up", ms(catch_up)),
            ("warnings", warnings.to_string()),
            ("peak_rss", mib(peak_rss)),
            ("seconds", format!("{:.1}", started.elapsed().as_secs_f64())),
            ("seed", seed.to_string()),
        ],
    );
    exact.assert_exact(published, events, &replay);
    assert!(
        out_of_position > 0,
        "no transaction committed after one with later positions: the publishers did not \
         interleave their commits {replay}"
    );
    assert_eq!(
        last_error, None,
        "a batch of the projection failed {replay}"
    );
    assert_eq!(
        strangers, 0,
        "rows applied by a process the test never started"
    );
    assert_eq!(
        handovers.rolled_back_without_kill, 0,
        "a batch wrote rows and was rolled back though its leader was not killed {replay}"
    );
    assert!(
        handovers.leaders <= kills as i64 + 1 && handovers.runs == handovers.leaders,
        "leadership changed hands without a kill or came back to an earlier leader: \
         {} runs of {} leaders after {kills} kills {replay}",
        handovers.runs,
        handovers.leaders
    );
}

/// Starts the projection's two processes and the publisher; returns once both processes follow
/// the log and one of them leads.
pub(super) async fn two_nodes_and_a_publisher(scene: &Scene) -> ([Proc; 2], Proc) {
    let nodes = [
        scene.worker("node0", PROJECTION, NODE_ARGS),
        scene.worker("node1", PROJECTION, NODE_ARGS),
    ];
    let publisher = start_publisher(scene);
    for node in &nodes {
        following(node).await;
    }
    eventually(WAIT, "a node leads the projection", || async {
        leader(scene).await.is_some()
    })
    .await;
    (nodes, publisher)
}

/// Starts `osa-chaos publish` at [`RATE`] events per second from 8 concurrent publishers, each
/// holding its transaction open 20-220 ms, so that transactions commit out of order. Its cap is
/// far beyond any run: stop it with SIGTERM.
fn start_publisher(scene: &Scene) -> Proc {
    let cap = (RATE * 3600).to_string();
    scene.publisher(
        "publisher",
        &[
            "--events",
            &cap,
            "--publishers",
            "8",
            "--batch",
            "10",
            "--rate",
            &RATE.to_string(),
            "--hold-ms",
            "20",
            "--hold-jitter-ms",
            "200",
        ],
    )
}

/// The count of events a stopped publisher says it published.
pub(super) fn published(publisher: &Proc) -> i64 {
    publisher
        .stdout_text()
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix("published="))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no summary from the publisher: {}", publisher.stdout_text()))
}

/// One takeover, measured from the moment the leader was lost (killed, or cut off).
#[derive(Debug, Clone, Copy)]
pub(super) struct Takeover {
    /// Until the lost leader's session no longer held the projection's lock: PostgreSQL ends
    /// the session once it reads the end of the closed connection (after a kill), or once its
    /// keepalives or user timeout give up (after a cut).
    pub(super) released: Duration,
    /// Until the other process held the lock.
    pub(super) lead: Duration,
    /// Until it had committed a batch of its own (its rows, with the checkpoint).
    pub(super) applied: Duration,
}

/// Waits until the session of `victim` (a process id) has let the lock go and `survivor` leads
/// and has committed rows beyond `applied_before`, measuring from `lost_at`, when the leader was
/// killed or cut off; panics `limit` after `lost_at` with its log.
pub(super) async fn take_over(
    scene: &Scene,
    victim: u32,
    survivor: &Proc,
    applied_before: i64,
    (lost_at, limit): (Instant, Duration),
    replay: &str,
) -> Takeover {
    let (mut released, mut lead) = (None, None);
    loop {
        let holder = leader(scene).await;
        if holder != Some(victim) {
            released.get_or_insert_with(|| lost_at.elapsed());
        }
        match holder {
            Some(pid) if pid == survivor.pid() => {
                lead.get_or_insert_with(|| lost_at.elapsed());
            }
            // The killed process's session has not ended yet, or nobody leads yet.
            Some(pid) if pid == victim => {}
            None => {}
            Some(pid) => panic!(
                "after the kill, process {pid} leads, not {} (pid {}) {replay}",
                survivor.name,
                survivor.pid()
            ),
        }
        if let (Some(released), Some(lead)) = (released, lead)
            && applied_by(scene, survivor.pid()).await > applied_before
        {
            return Takeover {
                released,
                lead,
                applied: lost_at.elapsed(),
            };
        }
        if lost_at.elapsed() >= limit {
            panic!(
                "{} did not take the projection over within {limit:?} of losing its leader \
                 (its session ended after {released:?}, {} led after {lead:?}) {replay}; \
                 {}; its log:\n{}",
                survivor.name,
                survivor.name,
                checkpoint_gap(scene).await,
                tail(&survivor.stderr_text(), 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the projection has a row for each of the `events` published, and returns how
/// long that took; panics after [`WAIT`] with where the projection stands.
pub(super) async fn catch_up(scene: &Scene, events: i64, replay: &str) -> Duration {
    let started = Instant::now();
    loop {
        let applied = projected(scene).await;
        if applied >= events {
            return started.elapsed();
        }
        if started.elapsed() >= WAIT {
            let never: Vec<(i64, i64)> = sqlx::query_as(
                "select position, commit_id from osa_events.events e \
                 where event_type = 'chaos.item' \
                   and not exists (select 1 from chaos_projected p where p.position = e.position) \
                 order by position limit 20",
            )
            .fetch_all(&scene.pool)
            .await
            .expect("compare the read model with the log");
            panic!(
                "the projection applied {applied} of {events} events within {WAIT:?} {replay}; \
                 not applied (position, commit_id), first 20: {never:?}; last error: {:?}; {}",
                last_error(scene).await,
                checkpoint_gap(scene).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The error of the projection's last failed batch, cleared by its next successful one.
pub(super) async fn last_error(scene: &Scene) -> Option<String> {
    sqlx::query_scalar("select last_error from osa_events.checkpoints where name = $1")
        .bind(PROJECTION)
        .fetch_one(&scene.pool)
        .await
        .expect("the projection has a checkpoint")
}

/// The rows whose event sorts after the checkpoint (committed effects the checkpoint does not
/// cover: the next batch would apply their events again and fail on the primary key), described
/// for a failure message.
pub(super) async fn checkpoint_gap(scene: &Scene) -> String {
    let checkpoint: Option<(i64, i64)> =
        sqlx::query_as("select position, commit_seq from osa_events.checkpoints where name = $1")
            .bind(PROJECTION)
            .fetch_optional(&scene.pool)
            .await
            .expect("read the checkpoint");
    let beyond: Vec<(i64, i64, i64, i32)> = sqlx::query_as(
        "select p.position, m.seq, p.applied_seq, p.applied_by \
         from chaos_projected p join osa_events.events e using (position) \
         join osa_events.commits m on m.id = e.commit_id \
         join osa_events.checkpoints c on c.name = $1 \
         where (m.seq, e.position) > (c.commit_seq, c.position) \
         order by p.applied_seq limit 20",
    )
    .bind(PROJECTION)
    .fetch_all(&scene.pool)
    .await
    .expect("compare the read model with the checkpoint");
    format!(
        "checkpoint (position, commit_seq) {checkpoint:?}; rows beyond it \
         (position, commit_seq, applied_seq, applied_by): {beyond:?}"
    )
}

/// Waits until `node`'s runtime has started: its projection runner tries for the lead from then on.
pub(super) async fn following(node: &Proc) {
    eventually(
        WAIT,
        &format!("{} started its runtime", node.name),
        || async { count_lines(&node.stderr_text(), &["osa-events runtime started"]) > 0 },
    )
    .await;
}

/// The process id of the projection's leader, if a session holds its lock. Panics if two do.
async fn leader(scene: &Scene) -> Option<u32> {
    leader_session(scene).await.map(|(_, process)| process)
}

/// The server process id of the session holding the projection's lock, and the process id of the
/// node it belongs to. Panics if two sessions hold it.
pub(super) async fn leader_session(scene: &Scene) -> Option<(i32, u32)> {
    let sessions: Vec<(i32, String)> = sqlx::query_as(LEADER_SQL)
        .fetch_all(&scene.pool)
        .await
        .expect("read the lock holders");
    assert!(
        sessions.len() <= 1,
        "two sessions lead the projection: {sessions:?}"
    );
    // `osa-events projection NAME HOST:PID`
    sessions.first().map(|(session, name)| {
        let process = name
            .rsplit_once(':')
            .and_then(|(_, pid)| pid.parse().ok())
            .unwrap_or_else(|| {
                panic!("the leader's application_name `{name}` does not end with `:PID`")
            });
        (*session, process)
    })
}

/// The index in `nodes` of the leader. PostgreSQL cuts `application_name` at 63 bytes: with a long
/// host name the process id may be cut too, and no node matches.
pub(super) async fn leading_node(scene: &Scene, nodes: &[Proc; 2]) -> usize {
    let pid = leader(scene)
        .await
        .expect("a node leads the projection before each kill");
    nodes
        .iter()
        .position(|node| node.pid() == pid)
        .unwrap_or_else(|| {
            panic!(
                "the leader's pid {pid} is no running node's ({}, {}); is the host name so \
                 long that PostgreSQL cut the application_name?",
                nodes[0].pid(),
                nodes[1].pid()
            )
        })
}

pub(super) async fn applied_by(scene: &Scene, pid: u32) -> i64 {
    sqlx::query_scalar("select count(*) from chaos_projected where applied_by = $1")
        .bind(pid as i32)
        .fetch_one(&scene.pool)
        .await
        .expect("read the read model")
}

pub(super) async fn projected(scene: &Scene) -> i64 {
    sqlx::query_scalar("select count(*) from chaos_projected")
        .fetch_one(&scene.pool)
        .await
        .expect("read the read model")
}

/// The read model against the log.
#[derive(Debug)]
pub(super) struct Exactness {
    /// Published `chaos.item` events with no row.
    pub(super) missing: i64,
    /// Rows with no published `chaos.item` event.
    pub(super) extra: i64,
    /// Rows whose `n` is not their event's `seq`.
    pub(super) wrong_payload: i64,
    /// Rows whose rank by `applied_seq` differs from their event's rank in the log's order
    /// `(commit seq, position)`.
    pub(super) out_of_commit_order: i64,
}

impl Exactness {
    /// Panics unless the log holds the `published` events (`events` of them are logged) and the
    /// read model is exactly those events, applied in the log's order.
    pub(super) fn assert_exact(&self, published: i64, events: i64, replay: &str) {
        assert_eq!(
            published, events,
            "the publisher's count differs from the log {replay}"
        );
        assert_eq!(self.missing, 0, "published events never applied {replay}");
        assert_eq!(self.extra, 0, "applied events never published {replay}");
        assert_eq!(
            self.wrong_payload, 0,
            "rows whose `n` is not their event's `seq` {replay}"
        );
        assert_eq!(
            self.out_of_commit_order, 0,
            "events applied out of the log's (commit, position) order {replay}"
        );
    }
}

/// The `chaos.item` events in the log.
pub(super) async fn logged_events(scene: &Scene) -> i64 {
    sqlx::query_scalar("select count(*) from osa_events.events where event_type = 'chaos.item'")
        .fetch_one(&scene.pool)
        .await
        .expect("count the log's events")
}

pub(super) async fn exactness(scene: &Scene) -> Exactness {
    let (missing, extra, wrong_payload, out_of_commit_order) =
        sqlx::query_as(
            "with item as (select e.position, c.seq as commit_seq, (e.payload->>'seq')::bigint as seq \
                           from osa_events.events e join osa_events.commits c on c.id = e.commit_id \
                           where e.event_type = 'chaos.item'), \
                  ranked as (select p.position, \
                                    row_number() over (order by p.applied_seq) as by_application, \
                                    row_number() over (order by i.commit_seq, i.position) as by_log \
                             from chaos_projected p join item i using (position)) \
             select (select count(*) from item where position not in (select position from chaos_projected)), \
                    (select count(*) from chaos_projected where position not in (select position from item)), \
                    (select count(*) from chaos_projected p join item i using (position) where p.n <> i.seq), \
                    (select count(*) from ranked where by_application <> by_log)",
        )
        .fetch_one(&scene.pool)
        .await
        .expect("compare the read model with the log");
    Exactness {
        missing,
        extra,
        wrong_payload,
        out_of_commit_order,
    }
}

/// Who applied what, in the order of application.
#[derive(Debug)]
pub(super) struct Handovers {
    /// Processes that applied rows.
    pub(super) leaders: i64,
    /// Maximal runs of rows by one process: equal to `leaders` when no leader came back.
    pub(super) runs: i64,
    /// Handovers where the killed leader had written rows of a batch it never committed: its
    /// `applied_seq` values are missing between its last row and its successor's first.
    pub(super) mid_batch: i64,
    /// Gaps in `applied_seq` within one leader's rows: a batch that wrote rows, then rolled back.
    pub(super) rolled_back_without_kill: i64,
}

pub(super) async fn handovers(scene: &Scene) -> Handovers {
    let (leaders, runs, mid_batch, rolled_back_without_kill) = sqlx::query_as(
        "with steps as (select applied_by, applied_seq, \
                               lag(applied_by) over (order by applied_seq) as previous_by, \
                               lag(applied_seq) over (order by applied_seq) as previous_seq \
                        from chaos_projected) \
         select (select count(distinct applied_by) from chaos_projected), \
                count(*) filter (where previous_by is null or previous_by <> applied_by), \
                count(*) filter (where previous_by <> applied_by and applied_seq > previous_seq + 1), \
                count(*) filter (where previous_by = applied_by and applied_seq > previous_seq + 1) \
         from steps",
    )
    .fetch_one(&scene.pool)
    .await
    .expect("read the order of application");
    Handovers {
        leaders,
        runs,
        mid_batch,
        rolled_back_without_kill,
    }
}

/// The `chaos.item` events that committed after an event with a higher position: transactions
/// that inserted first but committed later, which the projection must apply in commit order, not
/// position order.
async fn committed_out_of_position_order(scene: &Scene) -> i64 {
    sqlx::query_scalar(
        "select count(*) from ( \
             select e.position, max(e.position) over ( \
                 order by c.seq, e.position rows between unbounded preceding and 1 preceding \
             ) as highest_before \
             from osa_events.events e join osa_events.commits c on c.id = e.commit_id \
             where e.event_type = 'chaos.item') as ordered \
         where position < highest_before",
    )
    .fetch_one(&scene.pool)
    .await
    .expect("compare the commit order with the positions")
}

pub(super) fn ms(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

pub(super) fn max(durations: &[Duration]) -> Duration {
    durations.iter().copied().max().unwrap_or_default()
}

pub(super) fn avg(durations: &[Duration]) -> Duration {
    let count = u32::try_from(durations.len()).unwrap_or(u32::MAX).max(1);
    durations.iter().sum::<Duration>() / count
}
