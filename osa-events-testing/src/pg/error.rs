//! [`FixtureError`]: every way the PostgreSQL fixtures can fail.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// The way out when a throwaway cluster fails, appended to messages.
pub(crate) const CLUSTER_HINT: &str =
    "set DATABASE_URL to use an existing PostgreSQL server instead";

/// The way out when installing PostgreSQL fails.
pub(crate) const INSTALL_HINT: &str = "install postgresql yourself (`apt-get install postgresql`), \
     or set DATABASE_URL to use an existing PostgreSQL server instead";

/// An error from the PostgreSQL test fixtures ([`ThrowawayCluster`], [`TestDatabase`],
/// [`PgBouncer`], [`Partition`]).
///
/// Every message says what was tried and what to do next. The `Debug` output is the
/// `Display` message, so a failed `.unwrap()` or `.expect()` in a test prints it readably.
///
/// [`ThrowawayCluster`]: super::ThrowawayCluster
/// [`TestDatabase`]: super::TestDatabase
/// [`PgBouncer`]: super::PgBouncer
/// [`Partition`]: super::Partition
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum FixtureError {
    /// `DATABASE_URL` is unset or empty, so there is no server to create a test database on.
    #[error(
        "DATABASE_URL is unset: run `scripts/test.sh` (it starts a throwaway PostgreSQL cluster), \
         or set DATABASE_URL to an admin url such as postgres://postgres@127.0.0.1:5432/postgres"
    )]
    DatabaseUrlUnset,

    /// `DATABASE_URL` is set but is not valid unicode.
    #[error(
        "DATABASE_URL is not valid unicode; set it to a url such as postgres://postgres@127.0.0.1:5432/postgres"
    )]
    DatabaseUrlNotUnicode,

    /// No PostgreSQL server binaries (`initdb`, `pg_ctl`) were found, and they were not installed.
    #[error("postgresql server binaries (initdb, pg_ctl) not found (tried {tried}); {hint}")]
    BinariesNotFound {
        /// The places that were searched.
        tried: String,
        /// What to do about it.
        hint: &'static str,
    },

    /// A helper program (`initdb`, `pg_ctl`, `apt-get`, …) could not be started at all.
    #[error("could not run `{command}`: {source}; {hint}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it could not be started.
        #[source]
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },

    /// A helper program ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}); {hint}; its output ends with:\n{output}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// The last lines of its stdout and stderr.
        output: String,
        /// What to do about it.
        hint: &'static str,
    },

    /// No free TCP port could be found on 127.0.0.1 for a throwaway cluster or a PgBouncer.
    #[error("could not find a free TCP port on 127.0.0.1: {source}; {hint}")]
    NoFreePort {
        /// Why binding port 0 failed.
        #[source]
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },

    /// `pg_ctl start` did not bring the server up.
    #[error(
        "postgresql server did not start on 127.0.0.1:{port} (`{command}` failed); {hint}; \
         the server log ends with:\n{log_tail}"
    )]
    ServerStart {
        /// The `pg_ctl start` command line.
        command: String,
        /// The TCP port the server was asked to listen on.
        port: u16,
        /// The last lines of the server log, or of `pg_ctl`'s output when the log is empty.
        log_tail: String,
        /// What to do about it.
        hint: &'static str,
    },

    /// No `pgbouncer` binary was found, and it was not installed.
    #[error("pgbouncer not found (tried {tried}); {hint}")]
    PgBouncerNotFound {
        /// The places that were searched.
        tried: String,
        /// What to do about it.
        hint: &'static str,
    },

    /// `pgbouncer` exited, or did not accept connections in time.
    #[error(
        "pgbouncer did not start on 127.0.0.1:{port} (`{command}`): {reason}; {hint}; \
         its log ends with:\n{log_tail}"
    )]
    PgBouncerStart {
        /// The `pgbouncer` command line.
        command: String,
        /// The TCP port it was asked to listen on.
        port: u16,
        /// What went wrong: how it exited, or how long it was waited for.
        reason: String,
        /// The last lines of its log.
        log_tail: String,
        /// What to do about it.
        hint: &'static str,
    },

    /// No `iptables` binary was found, and it was not installed.
    #[error("iptables not found (tried {tried}); {hint}")]
    IptablesNotFound {
        /// The places that were searched.
        tried: String,
        /// What to do about it.
        hint: &'static str,
    },

    /// The server session to cut does not exist, or is connected through a Unix socket, which
    /// no packet filter can cut.
    #[error(
        "server session {pid} was not found in pg_stat_activity with a TCP client port; to cut \
         a session's connection, connect it with a host and port, not a Unix socket"
    )]
    NotTcpSession {
        /// The process id of the server session.
        pid: i32,
    },

    /// A database url given to a fixture could not be parsed.
    #[error(
        "invalid database url {url}: {source}; expected e.g. postgres://postgres@127.0.0.1:5432/postgres"
    )]
    InvalidUrl {
        /// The url, with any password replaced by `***`.
        url: String,
        /// Why it was rejected.
        #[source]
        source: sqlx::Error,
    },

    /// A file system operation on a fixture's temporary directory failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "create directory".
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A statement or connection against the server failed.
    #[error(
        "could not {action} (server {url}): {source}; is the server running and DATABASE_URL an admin url?"
    )]
    Database {
        /// What was being done, e.g. "create database `osa_test_…`".
        action: String,
        /// The url, with any password replaced by `***`.
        url: String,
        /// The underlying error.
        #[source]
        source: sqlx::Error,
    },
}

impl fmt::Debug for FixtureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
