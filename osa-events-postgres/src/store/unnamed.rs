//! [`PgUnnamed`]: an executor that runs every statement unnamed, for transaction-mode poolers.

use std::fmt;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Either, Execute, Executor, PgConnection, Postgres, SqlStr};

/// An sqlx executor over a connection that runs every statement as an unnamed statement: parsed
/// for this one execution, never prepared under a name and cached on the connection.
///
/// sqlx prepares each query under a name (`sqlx_s_1`, ...) and keeps it on the connection for
/// reuse. Through a pooler in transaction mode (PgBouncer `pool_mode = transaction`, before
/// PgBouncer 1.21's `max_prepared_statements`) each transaction may run on another server
/// session, where that name is unknown or names another client's statement, so a later
/// execution fails (`prepared statement "sqlx_s_1" does not exist`, `... already exists`) or
/// binds to the wrong statement. `PgConnectOptions::statement_cache_capacity(0)` does not help: sqlx still names
/// the statements, and leaves them on the server session. An unnamed statement is parsed again
/// every time, in the same transaction as its execution. Use `PgUnnamed` inside a transaction
/// (the pooler keeps a transaction on one server session); outside one, sqlx's parse and its
/// execution are two round trips the pooler may send to different sessions.
///
/// [`PgStore::through_transaction_pooler`](crate::PgStore::through_transaction_pooler) makes the
/// store run its own statements this way. Wrap the executor of your own statements and of
/// [`publish`](crate::publish) in it when they run through such a pooler (or set
/// [`persistent(false)`](sqlx::query::Query::persistent) on each query). An explicit
/// [`Executor::prepare`] through it is passed on as it is: it prepares a named statement.
///
/// # Examples
///
/// ```no_run
/// use osa_events::PgUnnamed;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(osa_events::Event, Serialize, Deserialize)]
/// # #[event(name = "record.published")]
/// # struct RecordPublished { srn: String }
///
/// # async fn example(pool: sqlx::PgPool) -> Result<(), osa_events::Error> {
/// let mut tx = pool.begin().await?; // `pool` connects through PgBouncer in transaction mode
/// sqlx::query("insert into records (srn) values ($1)")
///     .bind("srn:1")
///     .execute(PgUnnamed::new(&mut tx))
///     .await?;
/// osa_events::publish(PgUnnamed::new(&mut tx), &RecordPublished { srn: "srn:1".into() }).await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub struct PgUnnamed<'c> {
    conn: &'c mut PgConnection,
    /// Let cached statements be cached after all: how the store runs its statements when it is
    /// not behind a transaction-mode pooler, through the same code.
    cached: bool,
}

impl<'c> PgUnnamed<'c> {
    /// Runs the statements given to it on `conn`, unnamed.
    pub fn new(conn: &'c mut PgConnection) -> Self {
        Self {
            conn,
            cached: false,
        }
    }

    /// Unnamed only when `unnamed`; otherwise each query's own choice (named and cached by
    /// default), exactly as on `conn` itself.
    pub(crate) fn when(unnamed: bool, conn: &'c mut PgConnection) -> Self {
        Self {
            conn,
            cached: !unnamed,
        }
    }
}

impl fmt::Debug for PgUnnamed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgUnnamed")
            .field("cached", &self.cached)
            .finish_non_exhaustive()
    }
}

/// A query whose `persistent` flag is overridden.
struct Unnamed<E> {
    query: E,
    cached: bool,
}

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for Unnamed<E> {
    fn sql(self) -> SqlStr {
        self.query.sql()
    }

    fn statement(&self) -> Option<&PgStatement> {
        self.query.statement()
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, BoxDynError> {
        self.query.take_arguments()
    }

    fn persistent(&self) -> bool {
        self.cached && self.query.persistent()
    }
}

impl<'c> Executor<'c> for PgUnnamed<'c> {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        self.conn.fetch_many(Unnamed {
            query,
            cached: self.cached,
        })
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        self.conn.fetch_optional(Unnamed {
            query,
            cached: self.cached,
        })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        self.conn.prepare_with(sql, parameters)
    }

    /// Required while sqlx's `offline` feature is on (our `macros` feature turns it on).
    fn describe<'e>(
        self,
        sql: SqlStr,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.conn.describe(sql)
    }
}
