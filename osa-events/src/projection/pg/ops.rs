//! Operating projections on PostgreSQL: where each stands, how far behind, who leads; rewinding
//! one.

use sqlx::{Executor, PgPool, Postgres};

use super::leader::LOCK_NAMESPACE;
use super::read::parse_xid;
use crate::projection::store::{ProjectionStatus, ProjectionStore, ResetTo};
use crate::store::postgres::from_epoch_seconds;
use crate::{Error, PgStore, Result};

/// The checkpoint, its lag, and its leader while some session holds the lock.
const STATUS_SQL: &str = r#"
select c.position, coalesce(c.commit_xid, '0')::text, c.last_error,
       extract(epoch from c.updated_at)::float8,
       (select count(*) from osa_events.events e
         where e.event_type = any($2)
           and (e.commit_xid, e.position) > (coalesce(c.commit_xid, '0'::xid8), c.position)
           and e.commit_xid < pg_snapshot_xmin(pg_current_snapshot())),
       case when exists (
           select 1 from pg_locks l
           where l.locktype = 'advisory' and l.granted
             and l.database = (select oid from pg_database where datname = current_database())
             and l.classid = $3::int4::oid
             and l.objid = hashtext('osa_events.projection:' || $1)::oid
             and l.objsubid = 2
       ) then c.leader end
from osa_events.checkpoints c where c.name = $1
"#;

/// The lag of a projection that has no checkpoint yet: every committed event of its types.
const LAG_FROM_BEGINNING_SQL: &str = r#"
select count(*) from osa_events.events
where event_type = any($1) and commit_xid < pg_snapshot_xmin(pg_current_snapshot())
"#;

const RESET_BEGINNING_SQL: &str = r#"
insert into osa_events.checkpoints (name, position, commit_xid) values ($1, 0, '0')
on conflict (name) do update set position = 0, commit_xid = '0', last_error = null, failed_at = null, updated_at = now()
"#;

const RESET_AFTER_SQL: &str = r#"
insert into osa_events.checkpoints (name, position, commit_xid)
select $1, e.position, e.commit_xid from osa_events.events e where e.position = $2
on conflict (name) do update
    set position = excluded.position, commit_xid = excluded.commit_xid,
        last_error = null, failed_at = null, updated_at = now()
"#;

impl PgStore {
    /// The state of every projection registered in this program, sorted by name (see
    /// [`ProjectionStore::statuses`]).
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the queries fail.
    pub async fn projection_status(&self) -> Result<Vec<ProjectionStatus>> {
        self.statuses().await
    }
}

/// The state of projection `name`, which reads `event_types`.
pub(super) async fn status(
    pool: &PgPool,
    name: &str,
    event_types: &[&str],
) -> Result<ProjectionStatus> {
    type Row = (i64, String, Option<String>, f64, i64, Option<String>);
    let row: Option<Row> = sqlx::query_as(STATUS_SQL)
        .bind(name)
        .bind(event_types)
        .bind(LOCK_NAMESPACE)
        .fetch_optional(pool)
        .await?;
    let Some((position, commit_xid, last_error, updated_at, lag, leader)) = row else {
        let lag: i64 = sqlx::query_scalar(LAG_FROM_BEGINNING_SQL)
            .bind(event_types)
            .fetch_one(pool)
            .await?;
        return Ok(ProjectionStatus::never_ran(name, lag));
    };
    Ok(ProjectionStatus {
        name: name.to_owned(),
        position,
        commit_xid: parse_xid(&commit_xid),
        lag,
        leader,
        last_error,
        updated_at: from_epoch_seconds(updated_at),
    })
}

/// Rewinds projection `name` to `to`, in the caller's transaction: clear the read model in the same
/// transaction, and the projection rebuilds it from there. A leader applying a batch meanwhile
/// finishes it first (the checkpoint row is locked per batch), then continues from the new point.
///
/// # Examples
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool) -> Result<(), osa_events::Error> {
/// let mut tx = pool.begin().await?;
/// sqlx::query("truncate order_totals").execute(&mut *tx).await?;
/// osa_events::reset_projection(&mut *tx, "order_totals", osa_events::ResetTo::Beginning).await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Config`] when `AfterPosition` names no event; [`Error::Database`] when the statement fails.
pub async fn reset_projection<'c, X>(executor: X, name: &str, to: ResetTo) -> Result<()>
where
    X: Executor<'c, Database = Postgres>,
{
    let result = match to {
        ResetTo::Beginning => {
            sqlx::query(RESET_BEGINNING_SQL)
                .bind(name)
                .execute(executor)
                .await?
        }
        ResetTo::AfterPosition(position) => {
            sqlx::query(RESET_AFTER_SQL)
                .bind(name)
                .bind(position)
                .execute(executor)
                .await?
        }
    };
    if result.rows_affected() == 0 {
        return Err(Error::Config(
            format!("cannot reset projection `{name}`: no event at {to:?}").into(),
        ));
    }
    Ok(())
}
