//! Operating projections: where each stands, how far behind, who leads; rewinding one.

use std::time::SystemTime;

use sqlx::{Executor, Postgres};

use super::ProjectionRegistration;
use super::leader::{LOCK_HOLDER_SQL, lock_namespace};
use super::read::parse_xid;
use crate::store::postgres::from_epoch_seconds;
use crate::{Error, PgStore, Result};

/// A projection's state, from [`PgStore::projection_status`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// The position of the last applied event (0 before the first).
    pub position: i64,
    /// The publishing transaction id of the last applied event.
    pub commit_xid: u64,
    /// Events of its types not applied yet (committed ones only).
    pub lag: i64,
    /// The `application_name` of the session holding its lock (`osa-events projection NAME
    /// HOST:PID`), if any process leads it.
    pub leader: Option<String>,
    /// The error of the last failed batch, cleared by the next successful one.
    pub last_error: Option<String>,
    /// When the checkpoint last changed.
    pub updated_at: SystemTime,
}

/// Where [`reset_projection`] rewinds a projection to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// Before the first event: the projection applies the whole log again.
    Beginning,
    /// Just after the event at this position: the projection applies what follows it.
    AfterPosition(i64),
}

const STATUS_SQL: &str = r#"
select c.position, coalesce(c.commit_xid, '0')::text, c.last_error,
       extract(epoch from c.updated_at)::float8,
       (select count(*) from osa_events.events e
         where e.event_type = any($2)
           and (e.commit_xid, e.position) > (coalesce(c.commit_xid, '0'::xid8), c.position)
           and e.commit_xid < pg_snapshot_xmin(pg_current_snapshot()))
from osa_events.checkpoints c where c.name = $1
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
    /// The state of every projection registered in this program, sorted by name.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the queries fail.
    pub async fn projection_status(&self) -> Result<Vec<ProjectionStatus>> {
        let mut registrations: Vec<&ProjectionRegistration> =
            inventory::iter::<ProjectionRegistration>
                .into_iter()
                .collect();
        registrations.sort_by_key(|r| r.spec.name());
        let mut statuses = Vec::with_capacity(registrations.len());
        for registration in registrations {
            let name = registration.spec.name();
            let row: Option<(i64, String, Option<String>, f64, i64)> = sqlx::query_as(STATUS_SQL)
                .bind(name)
                .bind(registration.spec.event_types())
                .fetch_optional(self.pool())
                .await?;
            let leader: Option<String> = sqlx::query_scalar(LOCK_HOLDER_SQL)
                .bind(lock_namespace())
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
            let (position, commit_xid, last_error, updated_at, lag) =
                row.unwrap_or((0, "0".into(), None, 0.0, 0));
            statuses.push(ProjectionStatus {
                name: name.to_owned(),
                position,
                commit_xid: parse_xid(&commit_xid),
                lag,
                leader,
                last_error,
                updated_at: from_epoch_seconds(updated_at),
            });
        }
        Ok(statuses)
    }
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
