//! Fault tests: real PostgreSQL, real worker processes (`osa-chaos`, see `src/bin/osa-chaos`),
//! real signals. Each test breaks something for real and then checks, in SQL and in the
//! handlers' ledger table, that no event was lost or left stuck and that duplicates stay within
//! what at-least-once delivery explains. `RELIABILITY.md` describes each test and its last figures.
//!
//! `sqlite_crash` runs the crash test on an SQLite file instead (`src/bin/osa-sqlite-chaos`), and
//! needs no PostgreSQL. `nats_faults` runs the NATS relay and JetStream consumers as processes
//! (`src/bin/osa-nats-chaos`) against a throwaway `nats-server` of each test's own.
//!
//! By default every test runs in a bounded form (seconds). `OSA_RELIABILITY_SCALE` scales event
//! counts and durations: a number (`OSA_RELIABILITY_SCALE=4`), or `long` (= 10);
//! `scripts/reliability.sh` runs the long form in release mode. Randomized choices (which worker
//! to kill, when) come from a seed printed at the start and in every failure message;
//! `OSA_RELIABILITY_SEED` replays one.
//!
//! The tests take turns (`serial`): they measure rates, latencies and memory, which two of them
//! running side by side on a small machine would distort. Other tests still run alongside.
//!
//! Some tests reproduce runtime bugs these tests found, since fixed (RELIABILITY.md, "Issues
//! these tests found").

#![cfg(target_os = "linux")]

mod crash;
mod db_restart;
mod deploy;
mod fatal_exit;
mod heartbeat;
mod load;
mod nats_faults;
mod ordered;
mod poison;
mod projection_failover;
mod projection_partition;
mod security;
mod server_crash;
mod shutdown;
mod sqlite_crash;
mod worker_partition;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use osa_events::PgStore;
use osa_events_fixtures::pg::TestDatabase;
use osa_events_testing::Rng;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

/// Every handler of `osa-chaos` records its effect here (see `src/bin/osa-chaos/handlers.rs`).
/// No unique key: a duplicate effect must show as a second row, not as an error.
const LEDGER_DDL: &str = "create table chaos_ledger (
    handler text not null,
    seq bigint not null,
    pid int not null,
    attempt int not null,
    handled_at timestamptz not null default clock_timestamp()
)";

/// The read model of the `chaos.projection` projection (see `src/bin/osa-chaos/projection.rs`).
/// One row per applied event: the primary key makes applying an event twice fail its batch, and
/// `applied_seq` records the order of application.
const PROJECTED_DDL: &str = "create table chaos_projected (
    position bigint primary key,
    n bigint not null,
    applied_seq bigserial not null,
    applied_by int not null
)";

/// One reliability test at a time (see the module docs).
pub(crate) async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// The scale factor from `OSA_RELIABILITY_SCALE`: 1 unless set; `long` is 10.
pub(crate) fn scale() -> f64 {
    match std::env::var("OSA_RELIABILITY_SCALE") {
        Err(_) => 1.0,
        Ok(value) if value == "long" => 10.0,
        Ok(value) => value
            .parse::<f64>()
            .ok()
            .filter(|scale| *scale > 0.0)
            .unwrap_or_else(|| {
                panic!("OSA_RELIABILITY_SCALE={value}: expected `long` or a positive number")
            }),
    }
}

/// `base` scaled by [`scale`], at least `base` when the scale is below 1.
pub(crate) fn scaled(base: u64) -> u64 {
    (base as f64 * scale()).round().max(1.0) as u64
}

/// The variable that replays a run's random choices.
const SEED_VAR: &str = "OSA_RELIABILITY_SEED";

/// This test's random source: seeded from `OSA_RELIABILITY_SEED` when it is set (a replay), else
/// from the clock; the seed is printed either way.
pub(crate) fn seeded_rng() -> Rng {
    Rng::from_env_or_random(SEED_VAR)
}

/// How to replay the run of `seed`, for failure messages: `(replay with OSA_RELIABILITY_SEED=…)`.
pub(crate) fn replay_hint(seed: u64) -> String {
    format!("(replay with {SEED_VAR}={seed})")
}

/// A fresh, migrated database with the tables `osa-chaos` writes, and a directory for the
/// processes' logs (kept when the test fails or `OSA_RELIABILITY_KEEP_LOGS` is set, removed
/// otherwise).
pub(crate) struct Scene {
    pub(crate) test: &'static str,
    pub(crate) pool: PgPool,
    logs: PathBuf,
    database: TestDatabase,
}

impl Scene {
    /// A fresh database, migrated (as the superuser of `DATABASE_URL`), with the tables
    /// `osa-chaos` writes.
    pub(crate) async fn new(test: &'static str) -> Scene {
        Scene::migrated(Scene::unmigrated(test).await).await
    }

    /// `scene`, migrated, with the tables `osa-chaos` writes.
    pub(crate) async fn migrated(scene: Scene) -> Scene {
        PgStore::from_pool(scene.pool.clone())
            .migrate()
            .await
            .expect("migrations apply to a fresh database");
        scene.create_ledger().await;
        scene
    }

    /// A fresh, empty database.
    pub(crate) async fn unmigrated(test: &'static str) -> Scene {
        let database = TestDatabase::create()
            .await
            .unwrap_or_else(|error| panic!("no test database: {error}"));
        Scene::on(test, database)
    }

    /// A scene on `database` as it is, with a fresh log directory.
    pub(crate) fn on(test: &'static str, database: TestDatabase) -> Scene {
        Scene {
            test,
            pool: database.pool().clone(),
            logs: log_dir(test),
            database,
        }
    }

    /// Creates the handlers' ledger table and the projection's read model.
    pub(crate) async fn create_ledger(&self) {
        for ddl in [LEDGER_DDL, PROJECTED_DDL] {
            sqlx::query(ddl)
                .execute(&self.pool)
                .await
                .expect("create the ledger");
        }
    }

    /// The url of the test database (superuser, as `DATABASE_URL`).
    pub(crate) fn url(&self) -> &str {
        self.database.url()
    }

    /// The test database's name.
    pub(crate) fn database_name(&self) -> &str {
        self.database.name()
    }

    /// Starts `osa-chaos work` with `handlers` and extra `args`, connected as the test's superuser.
    pub(crate) fn worker(&self, name: &str, handlers: &str, args: &[&str]) -> Proc {
        self.worker_at(self.url(), name, handlers, args)
    }

    /// Starts `osa-chaos work` connected to `url`.
    pub(crate) fn worker_at(&self, url: &str, name: &str, handlers: &str, args: &[&str]) -> Proc {
        let mut all = vec!["work", "--handlers", handlers];
        all.extend_from_slice(args);
        Proc::spawn(&self.logs, name, url, &all)
    }

    /// Starts `osa-nats-chaos` with `args` (`relay ...` or `consume ...`), connected as the
    /// test's superuser.
    pub(crate) fn nats_chaos(&self, name: &str, args: &[&str]) -> Proc {
        Proc::start(
            env!("CARGO_BIN_EXE_osa-nats-chaos"),
            &self.logs,
            name,
            &[("OSA_CHAOS_DATABASE_URL", self.url())],
            args,
        )
    }

    /// Starts `osa-chaos publish` with `args`.
    pub(crate) fn publisher(&self, name: &str, args: &[&str]) -> Proc {
        self.publisher_at(self.url(), name, args)
    }

    /// Starts `osa-chaos publish` connected to `url`.
    pub(crate) fn publisher_at(&self, url: &str, name: &str, args: &[&str]) -> Proc {
        let mut all = vec!["publish"];
        all.extend_from_slice(args);
        Proc::spawn(&self.logs, name, url, &all)
    }

    /// Waits until the subscriptions of `names` exist (workers register them at start-up).
    pub(crate) async fn subscribed(&self, names: &[&str]) {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        eventually(
            Duration::from_secs(30),
            "the workers registered their handlers",
            || async {
                let found: i64 = sqlx::query_scalar(
                    "select count(*) from osa_events.subscriptions where name = any($1)",
                )
                .bind(&names)
                .fetch_one(&self.pool)
                .await
                .unwrap_or(0);
                found == names.len() as i64
            },
        )
        .await;
    }

    /// `(rows, distinct seqs)` of `handler` in the ledger.
    pub(crate) async fn ledger(&self, handler: &str) -> (i64, i64) {
        sqlx::query_as("select count(*), count(distinct seq) from chaos_ledger where handler = $1")
            .bind(handler)
            .fetch_one(&self.pool)
            .await
            .expect("read the ledger")
    }

    /// The `seq`s of `0..events` that `handler` never recorded.
    pub(crate) async fn missing(&self, handler: &str, events: i64) -> Vec<i64> {
        sqlx::query_scalar(
            "select s from generate_series(0, $2 - 1) s \
             where not exists (select 1 from chaos_ledger l where l.handler = $1 and l.seq = s) \
             order by s limit 20",
        )
        .bind(handler)
        .bind(events)
        .fetch_all(&self.pool)
        .await
        .expect("read the ledger")
    }

    /// Open deliveries by status: `(pending, claimed, dead)`.
    pub(crate) async fn open(&self) -> Open {
        let (pending, claimed, dead): (i64, i64, i64) = sqlx::query_as(
            "select count(*) filter (where status in ('pending', 'waiting')), \
                    count(*) filter (where status = 'claimed'), \
                    count(*) filter (where status = 'dead') \
             from osa_events.deliveries",
        )
        .fetch_one(&self.pool)
        .await
        .expect("count deliveries");
        Open {
            pending,
            claimed,
            dead,
        }
    }

    /// Waits until no delivery is pending or claimed (dead ones may stay).
    pub(crate) async fn drained(&self, limit: Duration, context: &str) {
        eventually(
            limit,
            &format!("every delivery completed ({context})"),
            || async {
                let open = self.open().await;
                open.unfinished() == 0
            },
        )
        .await;
    }

    /// Waits until no delivery is pending or claimed; `false` if that takes longer than `limit`.
    pub(crate) async fn drains_within(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let open = self.open().await;
            if open.unfinished() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The p99 publication-to-handling latency of `handler` in ms, for each tenth of the span
    /// over which the events were published (empty tenths are left out).
    pub(crate) async fn latency_by_tenth(&self, handler: &str) -> Vec<f64> {
        sqlx::query_scalar(
            "with lat as ( \
                 select e.created_at, extract(epoch from l.handled_at - e.created_at)::float8 * 1000 as ms \
                 from chaos_ledger l \
                 join osa_events.events e on (e.payload->>'seq')::bigint = l.seq \
                 where l.handler = $1), \
             span as ( \
                 select min(created_at) as t0, \
                        greatest(extract(epoch from max(created_at) - min(created_at))::float8, 0.001) as s \
                 from lat) \
             select percentile_cont(0.99) within group (order by ms) \
             from lat, span \
             group by least(floor(extract(epoch from created_at - t0)::float8 / s * 10), 9) \
             order by least(floor(extract(epoch from created_at - t0)::float8 / s * 10), 9)",
        )
        .bind(handler)
        .fetch_all(&self.pool)
        .await
        .expect("compute latencies")
    }

    /// Publication-to-handling latency of `handler`'s ledger rows: `(p50, p99, max)` in ms.
    pub(crate) async fn latency(&self, handler: &str) -> (f64, f64, f64) {
        sqlx::query_as(
            "select percentile_cont(0.5) within group (order by ms), \
                    percentile_cont(0.99) within group (order by ms), \
                    max(ms) \
             from (select extract(epoch from l.handled_at - e.created_at)::float8 * 1000 as ms \
                   from chaos_ledger l \
                   join osa_events.events e on (e.payload->>'seq')::bigint = l.seq \
                   where l.handler = $1) latencies",
        )
        .bind(handler)
        .fetch_one(&self.pool)
        .await
        .expect("compute latencies")
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        keep_or_remove(self.test, &self.logs);
    }
}

/// A fresh directory for `test`'s process logs, under the target's temporary directory.
pub(crate) fn log_dir(test: &str) -> PathBuf {
    let logs = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("reliability")
        .join(format!(
            "{test}-{}",
            &Uuid::new_v4().simple().to_string()[..8]
        ));
    std::fs::create_dir_all(&logs).expect("create the log directory");
    logs
}

/// Removes `test`'s log directory `logs`, unless the test is failing or
/// `OSA_RELIABILITY_KEEP_LOGS` is set (then it says where it is).
pub(crate) fn keep_or_remove(test: &str, logs: &Path) {
    if std::thread::panicking() || std::env::var_os("OSA_RELIABILITY_KEEP_LOGS").is_some() {
        eprintln!("{test}: process logs kept in {}", logs.display());
    } else {
        let _ = std::fs::remove_dir_all(logs);
    }
}

/// Open deliveries by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Open {
    pub(crate) pending: i64,
    pub(crate) claimed: i64,
    pub(crate) dead: i64,
}

impl Open {
    /// No delivery left open, none dead: where a run that lost nothing ends.
    pub(crate) const NONE: Open = Open {
        pending: 0,
        claimed: 0,
        dead: 0,
    };

    /// Deliveries still to be handled: pending or claimed (dead ones are finished, if badly).
    pub(crate) fn unfinished(&self) -> i64 {
        self.pending + self.claimed
    }
}

/// A running `osa-chaos` (or `osa-sqlite-chaos`, `osa-nats-chaos`) process; killed if dropped while
/// still running.
pub(crate) struct Proc {
    pub(crate) name: String,
    child: Child,
    pid: u32,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Peak RSS seen at the last [`memory`](Self::memory) call, kept after the process exits.
    pub(crate) peak_rss_kib: u64,
}

impl Proc {
    fn spawn(logs: &Path, name: &str, url: &str, args: &[&str]) -> Proc {
        Proc::start(
            env!("CARGO_BIN_EXE_osa-chaos"),
            logs,
            name,
            &[("OSA_CHAOS_DATABASE_URL", url)],
            args,
        )
    }

    /// Starts `program` with `args` and `env`, logging at `info` to `name.out` and `name.err` in
    /// `logs`.
    pub(crate) fn start(
        program: &str,
        logs: &Path,
        name: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Proc {
        let stdout = logs.join(format!("{name}.out"));
        let stderr = logs.join(format!("{name}.err"));
        let open = |path: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open a log file")
        };
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .env("OSA_CHAOS_LOG", "info")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::from(open(&stdout)))
            .stderr(Stdio::from(open(&stderr)))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("start {program}: {error}"));
        let pid = child.id().expect("a started process has a pid");
        Proc {
            name: name.to_owned(),
            child,
            pid,
            stdout,
            stderr,
            peak_rss_kib: 0,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process is still running.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and wait until it is gone.
    pub(crate) async fn kill(&mut self) {
        self.memory();
        self.child.start_kill().expect("SIGKILL a worker");
        self.child.wait().await.expect("reap a killed worker");
    }

    /// Sends SIGTERM (graceful shutdown).
    pub(crate) fn terminate(&mut self) {
        self.memory();
        let status = std::process::Command::new("sh")
            .args(["-c", "kill -s TERM \"$1\"", "sh", &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s TERM {} failed", self.pid);
    }

    /// Waits for the process to exit on its own, at most `limit`.
    pub(crate) async fn exit(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for osa-chaos"),
            Err(_) => panic!(
                "{} (pid {}) did not exit within {limit:?}; its log:\n{}",
                self.name,
                self.pid,
                tail(&self.stderr_text(), 40)
            ),
        }
    }

    /// SIGTERM, then the exit status and how long the exit took. A process started a moment ago
    /// is first given until `limit` to install its signal handler, so that the SIGTERM is the
    /// graceful stop it means and not the default action (the process dead by signal 15).
    pub(crate) async fn stop(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        self.listening_for_sigterm(limit).await;
        // Gone already (reaped by the wait above): its status is the answer, and a signal to its
        // pid would find no process.
        if let Ok(Some(status)) = self.child.try_wait() {
            return (status, Duration::ZERO);
        }
        let sent = Instant::now();
        self.terminate();
        let status = self.exit(limit).await;
        (status, sent.elapsed())
    }

    /// Waits until the process has logged
    /// [`LISTENING_FOR_SIGTERM`](osa_events_suite::chaos_process::LISTENING_FOR_SIGTERM) or has
    /// exited, at most `limit`; panics past it.
    async fn listening_for_sigterm(&mut self, limit: Duration) {
        let marker = osa_events_suite::chaos_process::LISTENING_FOR_SIGTERM;
        let since = Instant::now();
        while !self.stderr_text().contains(marker) && self.running() {
            assert!(
                since.elapsed() < limit,
                "{} (pid {}) did not install its SIGTERM handler within {limit:?}; its log:\n{}",
                self.name,
                self.pid,
                tail(&self.stderr_text(), 40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `(VmRSS, VmHWM)` in KiB from `/proc/<pid>/status`; `None` once the process is gone.
    /// Updates [`peak_rss_kib`](Self::peak_rss_kib).
    pub(crate) fn memory(&mut self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        };
        let (rss, hwm) = (field("VmRSS:")?, field("VmHWM:")?);
        self.peak_rss_kib = self.peak_rss_kib.max(hwm);
        Some((rss, hwm))
    }

    pub(crate) fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub(crate) fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Counts the log lines that contain every one of `needles` (e.g. `[" WARN osa_events", "claim"]`).
pub(crate) fn count_lines(log: &str, needles: &[&str]) -> usize {
    log.lines()
        .filter(|line| needles.iter().all(|needle| line.contains(needle)))
        .count()
}

/// Prints one test's figures as `RELIABILITY <test>: key=value ...` (shown with `--nocapture`,
/// and by `scripts/reliability.sh`).
pub(crate) fn report(test: &str, figures: &[(&str, String)]) {
    let mut line = format!("RELIABILITY {test} (scale {}):", scale());
    for (key, value) in figures {
        let _ = write!(line, " {key}={value}");
    }
    // On a line of its own: with `--nocapture` the harness's "test ... " is still open.
    println!("\n{line}");
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `limit`.
pub(crate) async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// KiB as MiB with one decimal.
pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1}MiB", kib as f64 / 1024.0)
}
