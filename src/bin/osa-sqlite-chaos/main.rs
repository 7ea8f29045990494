//! `osa-sqlite-chaos`: the worker process of the SQLite reliability test
//! (`tests/it/reliability/sqlite_crash.rs`), `osa-chaos`'s counterpart on the embedded store.
//!
//! ```text
//! osa-sqlite-chaos work --db PATH --handlers chaos.ledger,chaos.tx [--grace-ms 5000]
//!                       [--busy-timeout-ms 10000]
//! ```
//!
//! `work` opens the SQLite file at `PATH` with the default [`SqliteSettings`] (WAL, a 10 s busy
//! timeout unless `--busy-timeout-ms` says otherwise: a short one is the control run that shows
//! the test sees a locked database), runs the selected handlers (`handlers.rs`) until SIGTERM or SIGINT, then
//! shuts down gracefully and exits with 0; a start-up error exits with 1. The file must be
//! migrated, with the `chaos_ledger` table the handlers write, before the first worker starts: the
//! test does that, so that workers started side by side never race on the schema. The test process
//! publishes the events itself, a fourth process writing to the same file.
//!
//! It logs with `tracing` to stderr (filter: `OSA_CHAOS_LOG`, default `info`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use osa_events::{CancellationToken, Resources, Runtime, SqliteSettings, SqliteStore};

mod handlers;

/// The worker process of the SQLite reliability test.
#[derive(Debug, Parser)]
#[command(name = "osa-sqlite-chaos")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Runs handlers on the SQLite file until SIGTERM or SIGINT.
    Work {
        /// The database file (migrated, with the `chaos_ledger` table).
        #[arg(long)]
        db: PathBuf,
        /// The handlers to run, comma-separated: `chaos.ledger`, `chaos.tx`.
        #[arg(long, value_delimiter = ',', required = true)]
        handlers: Vec<String>,
        /// How long in-flight handlers may run on after SIGTERM, in ms.
        #[arg(long, default_value_t = 5000)]
        grace_ms: u64,
        /// How long a write waits for another process's write lock, in ms (default: the store's).
        #[arg(long)]
        busy_timeout_ms: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    osa_events_suite::chaos_process::init_logging();
    let Mode::Work {
        db,
        handlers,
        grace_ms,
        busy_timeout_ms,
    } = Cli::parse().mode;
    let mut settings = SqliteSettings::default();
    if let Some(ms) = busy_timeout_ms {
        settings = settings.busy_timeout(Duration::from_millis(ms));
    }
    match work(db, settings, handlers, Duration::from_millis(grace_ms)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("osa-sqlite-chaos: {error}");
            ExitCode::FAILURE
        }
    }
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

async fn work(
    db: PathBuf,
    settings: SqliteSettings,
    handlers: Vec<String>,
    grace: Duration,
) -> Result<(), Failure> {
    // SIGTERM must stop the worker cleanly at any moment, also while it is still opening the file
    // (the runtime only listens once it runs): listen from the start, and hand the token on.
    let shutdown = CancellationToken::new();
    osa_events_suite::chaos_process::spawn_sigterm_listener(shutdown.clone())?;
    let store = tokio::select! {
        store = SqliteStore::open_with(&db, settings) => store?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let app = handlers::App {
        store: store.clone(),
        pid: i64::from(std::process::id()),
    };
    Runtime::builder(store)
        .resources(Resources::new().with(app))
        .only(handlers.iter().filter(|name| !name.is_empty()))
        .grace_period(grace)
        .handle_signals(false)
        .shutdown_token(shutdown)
        .build()?
        .run()
        .await?;
    Ok(())
}
