//! PostgreSQL for tests and examples: a fresh database per test, a throwaway cluster when
//! there is no server, and PgBouncer in transaction mode in front of a database.
//!
//! - [`TestDatabase`] creates an `osa_test_<uuid>` database on the server named by the admin
//!   url in `DATABASE_URL`, and drops it afterwards. Without `DATABASE_URL` it fails (it never
//!   skips), telling you to run `scripts/test.sh`.
//! - [`ThrowawayCluster`] runs a private server from the local PostgreSQL binaries, installing
//!   them with apt when they are missing and the process is root. `scripts/test.sh` runs the
//!   test suite under the `with-postgres` binary of this crate, which starts one when
//!   `DATABASE_URL` is unset and points `DATABASE_URL` at it.
//! - [`database_url_or_throwaway`] is the same fallback inside one process, for examples.
//! - [`PgBouncer`] runs PgBouncer with `pool_mode = transaction` in front of a database (the
//!   local `pgbouncer`, installed with apt when it is missing and the process is root), for
//!   tests of what such a pooler breaks.
//! - [`Partition`] cuts one TCP connection to the server with iptables, both ways, for tests of
//!   what a failed network does (root only; installs `iptables` with apt when it is missing).
//! - [`unless_unavailable`] lets a test that needs pgbouncer or iptables skip, with a note, on a
//!   machine that has neither and cannot install them, except under `CI=true`.
//!
//! # Examples
//!
//! An example program that works with or without `DATABASE_URL`:
//!
//! ```no_run
//! use osa_events_testing::pg::database_url_or_throwaway;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let (url, _cluster) = database_url_or_throwaway()?; // keep `_cluster` alive until the end
//! let pool = sqlx::PgPool::connect(&url).await?;
//! # Ok(())
//! # }
//! ```

mod binaries;
mod bouncer;
mod cluster;
mod command;
mod database;
mod error;
mod partition;

pub use bouncer::PgBouncer;
pub use cluster::ThrowawayCluster;
pub use database::TestDatabase;
pub use error::FixtureError;
pub use partition::Partition;

use std::env::{self, VarError};

/// A fixture's result, for a test that needs a tool this machine may lack: `Some` of the value;
/// or, when the tool is missing or cannot run (no `pgbouncer` or `iptables` and no way to
/// install it, not root) and `CI` is not `true`, `None` after printing on stderr why the test is
/// skipped, so the test can return early. Under `CI=true`, and for any other error, it panics
/// with `needed` (what the test needs, e.g. "pgbouncer in transaction mode") and the error.
///
/// # Examples
///
/// ```no_run
/// use osa_events_testing::pg::{PgBouncer, unless_unavailable};
///
/// # fn example(url: &str) {
/// let Some(bouncer) = unless_unavailable(PgBouncer::start_transaction_mode(url), "pgbouncer")
/// else {
///     return; // skipped, and said why
/// };
/// # }
/// ```
///
/// # Panics
///
/// On any error under `CI=true`, and on errors other than a missing or failing tool.
pub fn unless_unavailable<T>(result: Result<T, FixtureError>, needed: &str) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(
            error @ (FixtureError::PgBouncerNotFound { .. }
            | FixtureError::IptablesNotFound { .. }
            | FixtureError::Spawn { .. }
            | FixtureError::CommandFailed { .. }),
        ) if env::var("CI").as_deref() != Ok("true") => {
            eprintln!(
                "skipping: {needed} is not available here (under CI=true this fails): {error}"
            );
            None
        }
        Err(error) => panic!("{needed}: {error}"),
    }
}

/// The admin url in `DATABASE_URL`, for creating test databases.
///
/// # Errors
///
/// [`FixtureError::DatabaseUrlUnset`] when it is unset or empty, whose message says to run
/// `scripts/test.sh` (which provides a throwaway cluster) or to set it;
/// [`FixtureError::DatabaseUrlNotUnicode`] when it is not unicode.
pub fn require_database_url() -> Result<String, FixtureError> {
    match env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Ok(url),
        Ok(_) | Err(VarError::NotPresent) => Err(FixtureError::DatabaseUrlUnset),
        Err(VarError::NotUnicode(_)) => Err(FixtureError::DatabaseUrlNotUnicode),
    }
}

/// `DATABASE_URL` if it is set; otherwise a freshly started [`ThrowawayCluster`] and its url.
///
/// For examples and tools that should run on a machine with no database set up. When it
/// starts a cluster, it says so on stderr. Keep the returned cluster alive as long as the url
/// is in use: dropping it stops the server and deletes its data. Note that
/// [`std::process::exit`] skips destructors; return from `main` instead, or drop the cluster
/// first.
///
/// # Examples
///
/// ```no_run
/// use osa_events_testing::pg::database_url_or_throwaway;
///
/// let (url, cluster) = database_url_or_throwaway()?;
/// // ... connect to `url` and work ...
/// drop(cluster); // stops the throwaway server, if one was started
/// # Ok::<(), osa_events_testing::pg::FixtureError>(())
/// ```
///
/// # Errors
///
/// [`FixtureError::DatabaseUrlNotUnicode`], or any error of [`ThrowawayCluster::start`].
pub fn database_url_or_throwaway() -> Result<(String, Option<ThrowawayCluster>), FixtureError> {
    match require_database_url() {
        Ok(url) => Ok((url, None)),
        Err(FixtureError::DatabaseUrlUnset) => {
            let cluster = ThrowawayCluster::start()?;
            eprintln!(
                "DATABASE_URL is unset: started a throwaway PostgreSQL cluster at 127.0.0.1:{} (removed on exit)",
                cluster.port()
            );
            Ok((cluster.url().to_owned(), Some(cluster)))
        }
        Err(err) => Err(err),
    }
}
