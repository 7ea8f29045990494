//! [`TestDatabase`]: a fresh database per test, dropped afterwards.

use std::ops::Range;
use std::thread;

use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};
use uuid::Uuid;

use super::{FixtureError, require_database_url};

/// How many connections [`TestDatabase::pool`] opens at most.
const POOL_MAX_CONNECTIONS: u32 = 10;

/// A fresh, empty database for one test, created on the server named by `DATABASE_URL` and
/// dropped (with `DROP DATABASE … WITH (FORCE)`) when this value is dropped.
///
/// Each database is named `osa_test_<uuid>`, so tests run in parallel without seeing each other
/// and leave nothing behind. `DATABASE_URL` must name a role that may create databases (the
/// superuser `postgres` of a [`ThrowawayCluster`] does).
///
/// There is no skipping: without `DATABASE_URL`, [`create`](Self::create) fails and says to run
/// `scripts/test.sh`, which provides a server. A test calling it fails loudly, under `CI=true`
/// and elsewhere.
///
/// Dropping works inside any async runtime, a current-thread `#[tokio::test]` included: the
/// database is dropped from a separate thread with its own runtime, which this thread waits for
/// (briefly), so the database is gone before the test returns.
///
/// # Examples
///
/// ```no_run
/// use osa_events_testing::pg::TestDatabase;
///
/// #[tokio::test]
/// async fn counts_nothing_in_an_empty_table() {
///     let db = TestDatabase::create().await.unwrap();
///     sqlx::query("CREATE TABLE t (id int)").execute(db.pool()).await.unwrap();
///     let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
///         .fetch_one(db.pool())
///         .await
///         .unwrap();
///     assert_eq!(n, 0);
/// } // `db` is dropped here, and its database with it
/// ```
///
/// [`ThrowawayCluster`]: super::ThrowawayCluster
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
    pool: PgPool,
}

impl TestDatabase {
    /// Creates a fresh database on the server named by the admin url in `DATABASE_URL`, and a
    /// pool of up to 10 connections to it.
    ///
    /// # Errors
    ///
    /// [`FixtureError::DatabaseUrlUnset`] (run `scripts/test.sh` or set `DATABASE_URL`) when
    /// `DATABASE_URL` is unset or empty; otherwise as [`create_on`](Self::create_on).
    pub async fn create() -> Result<Self, FixtureError> {
        Self::create_on(&require_database_url()?).await
    }

    /// Creates a fresh database on the server named by `admin_url`, and a pool of up to 10
    /// connections to it. [`create`](Self::create) calls this with `DATABASE_URL`.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Database`] when the server cannot be reached, the database cannot be
    /// created (the role lacks `CREATEDB`?), or the pool cannot connect to it.
    pub async fn create_on(admin_url: &str) -> Result<Self, FixtureError> {
        let name = format!("osa_test_{}", Uuid::new_v4().simple());
        let url = with_database(admin_url, &name);
        let error = |action: String| {
            move |source| FixtureError::Database {
                action,
                url: redact(admin_url),
                source,
            }
        };

        let mut admin = PgConnection::connect(admin_url)
            .await
            .map_err(error("connect to DATABASE_URL".to_owned()))?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .map_err(error(format!("create database `{name}`")))?;
        let _ = admin.close().await;

        let pool = match PgPoolOptions::new()
            .max_connections(POOL_MAX_CONNECTIONS)
            .connect(&url)
            .await
        {
            Ok(pool) => pool,
            Err(source) => {
                let _ = drop_database(admin_url, &name).await;
                return Err(error(format!("connect to the new database `{name}`"))(
                    source,
                ));
            }
        };
        Ok(Self {
            name,
            url,
            admin_url: admin_url.to_owned(),
            pool,
        })
    }

    /// The database's name, `osa_test_<uuid>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The url of this database: the admin url with its database replaced.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A pool of up to 10 connections to this database. Clone it to hand it out; the clones
    /// stop working once the `TestDatabase` is dropped.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Drop for TestDatabase {
    /// Drops the database, terminating its connections. Failures are printed to stderr, not
    /// raised: a leftover `osa_test_…` database is harmless and easy to spot.
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Our own thread and runtime: blocking on the caller's runtime would deadlock a
        // current-thread one, and a detached task could outlive the test process.
        let dropped = thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| format!("could not start a runtime: {err}"))?;
            runtime
                .block_on(drop_database(&admin_url, &name))
                .map_err(|err| err.to_string())
        })
        .join();
        let problem = match dropped {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err,
            Err(_) => "the dropping thread panicked".to_owned(),
        };
        eprintln!(
            "osa-events-testing: could not drop test database `{}` on {}: {problem}",
            self.name,
            redact(&self.admin_url)
        );
    }
}

/// `DROP DATABASE IF EXISTS … WITH (FORCE)` (PostgreSQL 13+) over a connection to `admin_url`.
async fn drop_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut admin = PgConnection::connect(admin_url).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await
}

/// `url` with its path (the database) replaced by `/database`; userinfo, host and query are kept.
fn with_database(url: &str, database: &str) -> String {
    let (path_start, path_end) = path_bounds(url);
    format!("{}/{database}{}", &url[..path_start], &url[path_end..])
}

/// `url` with the password, if any, replaced by `***`, for messages.
pub(crate) fn redact(url: &str) -> String {
    match password_bounds(url) {
        Some(password) => format!("{}***{}", &url[..password.start], &url[password.end..]),
        None => url.to_owned(),
    }
}

/// The byte range of the password of `url` (`scheme://user:password@host/…`, still
/// percent-encoded), if it has one.
pub(crate) fn password_bounds(url: &str) -> Option<Range<usize>> {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let (authority_end, _) = path_bounds(url);
    let authority = &url[authority_start..authority_end];
    let at = authority.rfind('@')?;
    let colon = authority[..at].find(':')?;
    Some(authority_start + colon + 1..authority_start + at)
}

/// The byte range of the path of `url` (`scheme://authority/path?query#fragment`); empty, at
/// the end of the authority, when there is no path.
pub(crate) fn path_bounds(url: &str) -> (usize, usize) {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let after = &url[authority_start..];
    let start = authority_start + after.find(['/', '?', '#']).unwrap_or(after.len());
    let end = start + url[start..].find(['?', '#']).unwrap_or(url.len() - start);
    (start, end)
}

#[cfg(test)]
mod tests;
