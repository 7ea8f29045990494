//! `osa-chaos`: the worker and publisher process of the reliability tests (`tests/it/reliability`).
//!
//! ```text
//! osa-chaos work    --handlers chaos.ledger,chaos.tx [--grace-ms 5000] [--work-ms 0] [--migrate]
//! osa-chaos work    --handlers chaos.projection
//! osa-chaos work    --handlers chaos.deploy [--namespace billing] [--repoint chaos.deploy=2]
//! osa-chaos publish --events 1000 [--first 0] [--publishers 4] [--batch 50] [--rate 0] [--pad 64]
//!                   [--hold-ms 0] [--hold-jitter-ms 0]
//! ```
//!
//! Both also take `--connections 8` (pool size) and `--connect-for-ms 30000` (how long to retry
//! the first connection).
//!
//! Both read the database url from `OSA_CHAOS_DATABASE_URL` (never from the command line, where
//! `ps` would show a password), and log with `tracing` to stderr (filter: `OSA_CHAOS_LOG`,
//! default `info`).
//!
//! `work` runs the selected handlers and projections (`--handlers` takes the names of both; see
//! `handlers.rs` and `projection.rs`) until SIGTERM or SIGINT, then shuts down gracefully and
//! exits with 0; when a handler fails fatally (`HandlerError::fatal`) it shuts down the same way
//! and exits with 1, logging the error. `--namespace` sets the runtime's application namespace, `--repoint name=revision`
//! re-points a handler's subscription (`RuntimeBuilder::namespace`, `RuntimeBuilder::repoint`). `publish` publishes `chaos.item` events `first..first+events` with deterministic
//! ids from concurrent tasks, retrying failed transactions until they commit, prints
//! `published=.. batches=.. retries=.. elapsed_ms=..` on stdout and exits with 0; on SIGTERM or
//! SIGINT it starts no more transactions, commits those under way, and does the same. A start-up
//! error, or a publish the database refuses outright (a missing privilege), exits with 1.

use std::collections::HashMap;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use osa_events::{PgStore, Resources, Runtime};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

mod handlers;
mod projection;
mod publisher;

/// The environment variable that holds the database url.
const URL_VAR: &str = "OSA_CHAOS_DATABASE_URL";

#[tokio::main]
async fn main() -> ExitCode {
    osa_events_suite::chaos_process::init_logging();
    match run(std::env::args().skip(1).collect()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("osa-chaos: {error}");
            ExitCode::FAILURE
        }
    }
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

async fn run(args: Vec<String>) -> Result<(), Failure> {
    let Some((mode, rest)) = args.split_first() else {
        return Err("usage: osa-chaos work|publish [--option value]...".into());
    };
    let mut options = Options::parse(rest)?;
    let url = std::env::var(URL_VAR).map_err(|_| format!("{URL_VAR} is not set"))?;
    let connect_for = Duration::from_millis(options.take("connect-for-ms", 30_000)?);
    let connections = options.take("connections", 8)?;
    if mode != "work" && mode != "publish" {
        return Err(format!("unknown mode `{mode}`: expected `work` or `publish`").into());
    }
    // SIGTERM must stop either mode cleanly at any moment, also while it is still connecting
    // (the runtime only listens once it runs): listen from the start, and hand the token on.
    let shutdown = CancellationToken::new();
    osa_events_suite::chaos_process::spawn_sigterm_listener(shutdown.clone())?;
    let pool = tokio::select! {
        pool = connect(&url, connections, connect_for) => pool?,
        () = shutdown.cancelled() => return Ok(()),
    };
    if mode == "work" {
        work(pool, options, shutdown).await
    } else {
        publish(pool, options, shutdown).await
    }
}

async fn work(
    pool: PgPool,
    mut options: Options,
    shutdown: CancellationToken,
) -> Result<(), Failure> {
    let handlers: String = options.take("handlers", String::new())?;
    let grace = Duration::from_millis(options.take("grace-ms", 5000)?);
    let work = Duration::from_millis(options.take("work-ms", 0)?);
    let migrate = options.flag("migrate");
    let namespace: String = options.take("namespace", String::new())?;
    let repoint: String = options.take("repoint", String::new())?;
    options.finish()?;

    let store = PgStore::from_pool(pool.clone());
    if migrate {
        store.migrate().await?;
    }
    let app = handlers::App {
        pool,
        pid: i32::try_from(std::process::id())?,
        work,
    };
    let mut builder = Runtime::builder(store)
        .resources(Resources::new().with(app))
        .only(handlers.split(',').filter(|name| !name.is_empty()))
        .grace_period(grace)
        .handle_signals(false)
        .shutdown_token(shutdown);
    if !namespace.is_empty() {
        builder = builder.namespace(namespace);
    }
    if !repoint.is_empty() {
        let (name, revision) = repoint
            .split_once('=')
            .ok_or_else(|| format!("--repoint {repoint}: expected `name=revision`"))?;
        builder = builder.repoint(name, revision.parse::<u32>()?);
    }
    let runtime = builder.build()?;
    runtime.run().await?;
    Ok(())
}

async fn publish(
    pool: PgPool,
    mut options: Options,
    shutdown: CancellationToken,
) -> Result<(), Failure> {
    let plan = publisher::Plan {
        first: options.take("first", 0)?,
        events: options.take("events", 1000)?,
        publishers: options.take("publishers", 4)?,
        batch: options.take::<usize>("batch", 50)?.max(1),
        rate: options.take("rate", 0.0)?,
        pad: options.take("pad", 64)?,
        hold: Duration::from_millis(options.take("hold-ms", 0)?),
        hold_jitter: Duration::from_millis(options.take("hold-jitter-ms", 0)?),
    };
    options.finish()?;
    let started = Instant::now();
    let summary = publisher::run(pool, plan, shutdown).await?;
    println!(
        "published={} batches={} retries={} elapsed_ms={}",
        summary.published.load(std::sync::atomic::Ordering::Relaxed),
        summary.batches.load(std::sync::atomic::Ordering::Relaxed),
        summary.retries.load(std::sync::atomic::Ordering::Relaxed),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// A pool of up to `connections`, retrying the first connection for up to `connect_for`: a
/// worker restarted while the database is unreachable waits for it instead of exiting.
///
/// The first connection is made on its own: when the pool makes it, a refused connection is
/// retried until the pool's acquire timeout and then reported as "pool timed out", without its
/// cause.
async fn connect(url: &str, connections: u32, connect_for: Duration) -> Result<PgPool, Failure> {
    let deadline = Instant::now() + connect_for;
    let mut failures = 0u32;
    loop {
        match PgConnection::connect(url).await {
            Ok(probe) => {
                let _ = probe.close().await;
                break;
            }
            Err(error) if Instant::now() < deadline => {
                failures += 1;
                tracing::warn!(%error, attempt = failures, "cannot connect to the database; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(format!("cannot connect to the database: {error}").into()),
        }
    }
    Ok(PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await?)
}

/// `--name value` pairs and `--flag`s, each taken once; leftovers are an error.
#[derive(Debug)]
struct Options(HashMap<String, Option<String>>);

impl Options {
    fn parse(args: &[String]) -> Result<Self, Failure> {
        let mut options = HashMap::new();
        let mut args = args.iter().peekable();
        while let Some(arg) = args.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("expected `--option`, found `{arg}`"))?;
            let value = args.next_if(|next| !next.starts_with("--")).cloned();
            options.insert(name.to_owned(), value);
        }
        Ok(Self(options))
    }

    fn take<T: FromStr>(&mut self, name: &str, default: T) -> Result<T, Failure>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.remove(name) {
            None => Ok(default),
            Some(None) => Err(format!("--{name} needs a value").into()),
            Some(Some(value)) => value
                .parse()
                .map_err(|error| format!("--{name} {value}: {error}").into()),
        }
    }

    fn flag(&mut self, name: &str) -> bool {
        self.0.remove(name).is_some()
    }

    fn finish(self) -> Result<(), Failure> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(name) => Err(format!("unknown option --{name}").into()),
        }
    }
}
