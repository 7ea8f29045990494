//! Connecting at start-up: a bounded wait, with backoff, for a database that is not up yet.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use osa_events_core::Result;

/// How [`PgStore::connect_with`](super::PgStore::connect_with) waits for a database that does not
/// accept connections yet (containers started together, a server restarting): the first
/// connection is tried again with exponential backoff until it succeeds or `max_wait` has passed.
///
/// Only errors a wait can cure are retried: the connection refused, reset or timed out, the host
/// not resolvable yet, and the server's "the database system is starting up" (SQLSTATE `57P03`)
/// or "too many connections" (`53300`) and its other connection exceptions (class `08`, `57P0x`).
/// A malformed URL, a failed authentication or an unknown database fails at once. Each failed
/// attempt is logged at WARN with its cause.
///
/// The default waits up to 30 s, after 100 ms, then twice as long each time, at most 2 s apart.
///
/// # Examples
///
/// ```no_run
/// # async fn example() -> Result<(), osa_events::Error> {
/// use std::time::Duration;
/// use osa_events::{ConnectRetry, PgStore};
///
/// let url = "postgres://app@db/app";
/// // Give the database a minute to come up, as a compose file's `depends_on` does not:
/// let store = PgStore::connect_with(url, ConnectRetry::default().max_wait(Duration::from_secs(60))).await?;
/// // Fail at once instead (a command-line tool):
/// let store = PgStore::connect_with(url, ConnectRetry::none()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectRetry {
    max_wait: Duration,
    first_delay: Duration,
    max_delay: Duration,
}

impl ConnectRetry {
    /// The default longest wait: 30 s.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);
    /// The default delay before the second attempt: 100 ms.
    pub const DEFAULT_FIRST_DELAY: Duration = Duration::from_millis(100);
    /// The default longest delay between two attempts: 2 s.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(2);

    /// One attempt, no wait: the first error is returned.
    pub const fn none() -> Self {
        Self {
            max_wait: Duration::ZERO,
            first_delay: Self::DEFAULT_FIRST_DELAY,
            max_delay: Self::DEFAULT_MAX_DELAY,
        }
    }

    /// Gives up once `max_wait` has passed since the first attempt (no attempt starts later).
    #[must_use]
    pub const fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Waits `first` after the first failed attempt, doubling each time up to `max`.
    #[must_use]
    pub const fn delays(mut self, first: Duration, max: Duration) -> Self {
        self.first_delay = first;
        self.max_delay = max;
        self
    }
}

impl Default for ConnectRetry {
    fn default() -> Self {
        Self {
            max_wait: Self::DEFAULT_MAX_WAIT,
            first_delay: Self::DEFAULT_FIRST_DELAY,
            max_delay: Self::DEFAULT_MAX_DELAY,
        }
    }
}

/// Makes (and closes) a first connection to `options`, retrying as `retry` says.
pub(super) async fn first_connection(
    options: &PgConnectOptions,
    retry: ConnectRetry,
) -> Result<()> {
    let started = tokio::time::Instant::now();
    let mut delay = retry.first_delay;
    let mut attempt: u32 = 1;
    loop {
        let error = match PgConnection::connect_with(options).await {
            Ok(conn) => {
                conn.close().await?;
                if attempt > 1 {
                    tracing::info!(attempt, waited = ?started.elapsed(), "connected to the database");
                }
                return Ok(());
            }
            Err(error) => error,
        };
        let waited = started.elapsed();
        if !transient(&error) || waited + delay > retry.max_wait {
            if attempt > 1 {
                tracing::warn!(attempt, ?waited, %error, "cannot connect to the database; giving up");
            }
            return Err(error.into());
        }
        tracing::warn!(attempt, retry_in = ?delay, %error, "cannot connect to the database yet; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(retry.max_delay);
        attempt += 1;
    }
}

/// Whether waiting may cure `error`.
fn transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            code == "57P03" || code == "53300" || code.starts_with("08") || code.starts_with("57P0")
        }),
        _ => false,
    }
}
