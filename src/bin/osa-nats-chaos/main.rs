//! `osa-nats-chaos`: the relay and consumer process of the NATS fault tests
//! (`tests/it/reliability/nats_faults.rs`), `osa-chaos`'s counterpart for JetStream.
//!
//! ```text
//! osa-nats-chaos relay   --nats-url URL [--batch 500] [--window 128]
//! osa-nats-chaos consume --nats-url URL [--stream EVENTS] [--work-ms 0] [--grace-ms 5000]
//! ```
//!
//! Both take the database url as `--database-url`, or from `OSA_CHAOS_DATABASE_URL` (what the
//! tests use: `ps` would show a password given on the command line), and log with `tracing` to
//! stderr (filter: `OSA_CHAOS_LOG`, default `info`).
//!
//! - `relay` runs the relay `chaos` of the `chaos.item` events (see `relay.rs`) from the database
//!   into JetStream until SIGTERM or SIGINT, then exits with 0.
//! - `consume` runs the handler `chaos.js` (see `consume.rs`) on the JetStream stream `--stream`
//!   until SIGTERM or SIGINT, then shuts down gracefully and exits with 0; it records each
//!   `chaos.job` it handles in the database's `chaos_ledger` table, which the test creates.
//!
//! A start-up error, or a relay that stops on an event the stream refuses, exits with 1.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use osa_events::CancellationToken;

mod consume;
mod relay;

/// The relay and consumer process of the NATS fault tests.
#[derive(Debug, Parser)]
#[command(name = "osa-nats-chaos")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Relays the `chaos.item` events of the database into JetStream until SIGTERM or SIGINT.
    Relay {
        #[command(flatten)]
        to: Endpoints,
        /// Events read from the log per batch.
        #[arg(long, default_value_t = 500)]
        batch: u32,
        /// PubAcks outstanding at most.
        #[arg(long, default_value_t = 128)]
        window: usize,
    },
    /// Runs the handler `chaos.js` on the JetStream stream until SIGTERM or SIGINT.
    Consume {
        #[command(flatten)]
        to: Endpoints,
        /// The stream the `chaos.job` events are in.
        #[arg(long, default_value = "EVENTS")]
        stream: String,
        /// Simulated work per job, in ms, before its ledger row.
        #[arg(long, default_value_t = 0)]
        work_ms: u64,
        /// How long in-flight handlers may run on after SIGTERM, in ms.
        #[arg(long, default_value_t = 5000)]
        grace_ms: u64,
    },
}

/// The database and the NATS server both modes connect to.
#[derive(Debug, Args)]
struct Endpoints {
    /// The PostgreSQL url (migrated, with the `chaos_ledger` table for `consume`).
    #[arg(long, env = "OSA_CHAOS_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The NATS server url (`nats://host:port`).
    #[arg(long)]
    nats_url: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    osa_events_suite::chaos_process::init_logging();
    match run(Cli::parse().mode).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("osa-nats-chaos: {error}");
            ExitCode::FAILURE
        }
    }
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

async fn run(mode: Mode) -> Result<(), Failure> {
    // SIGTERM must stop either mode cleanly at any moment, also while it is still connecting:
    // listen from the start, and hand the token on.
    let shutdown = CancellationToken::new();
    osa_events_suite::chaos_process::spawn_sigterm_listener(shutdown.clone())?;
    match mode {
        Mode::Relay { to, batch, window } => {
            relay::run(&to.database_url, &to.nats_url, batch, window, shutdown).await
        }
        Mode::Consume {
            to,
            stream,
            work_ms,
            grace_ms,
        } => {
            let plan = consume::Plan {
                stream,
                work: Duration::from_millis(work_ms),
                grace: Duration::from_millis(grace_ms),
            };
            consume::run(&to.database_url, &to.nats_url, plan, shutdown).await
        }
    }
}
