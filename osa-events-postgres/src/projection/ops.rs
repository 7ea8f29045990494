//! Operating projections on PostgreSQL: where each stands, how far behind, who leads; rewinding
//! one.

use sqlx::{Executor, PgPool, Postgres};

use super::leader::LOCK_NAMESPACE;
use super::read;
use crate::PgStore;
use crate::store::{age, from_epoch_seconds};
use osa_events_core::store::{ProjectionStatus, ProjectionStore, ResetTo, event_type_set};
use osa_events_core::{Error, Result};

/// The checkpoint, its lag (committed events of its types after it: every committed transaction
/// has its number) with the age of the oldest of them, and its leader while some session holds
/// the lock.
const STATUS_SQL: &str = r#"
select k.position, k.commit_seq, k.last_error,
       extract(epoch from k.updated_at)::float8,
       lag.events,
       case when exists (
           select 1 from pg_locks l
           where l.locktype = 'advisory' and l.granted
             and l.database = (select oid from pg_database where datname = current_database())
             and l.classid = $3::int4::oid
             and l.objid = hashtext('osa_events.projection:' || $1)::oid
             and l.objsubid = 2
       ) then k.leader end,
       extract(epoch from now() - lag.oldest)::float8
from osa_events.checkpoints k
cross join lateral (
    select count(*) as events, min(e.created_at) as oldest
    from osa_events.commits c join osa_events.events e on e.commit_id = c.id
    where e.event_type = any($2)
      and c.seq >= k.commit_seq
      and (c.seq > k.commit_seq or e.position > k.position)
) as lag
where k.name = $1
"#;

/// The lag of a projection that has no checkpoint yet (every committed event of its types), and
/// the age of the oldest of them.
const LAG_FROM_BEGINNING_SQL: &str = r#"
select count(*), extract(epoch from now() - min(e.created_at))::float8
from osa_events.commits c join osa_events.events e on e.commit_id = c.id
where e.event_type = any($1) and c.seq is not null
"#;

const RESET_BEGINNING_SQL: &str = r#"
insert into osa_events.checkpoints (name, position, commit_seq) values ($1, 0, 0)
on conflict (name) do update set position = 0, commit_seq = 0, event_types = null, last_error = null, failed_at = null, updated_at = now()
"#;

/// After the last event of the highest commit number this transaction sees (`(0, 0)` on an empty
/// log).
const RESET_END_SQL: &str = r#"
insert into osa_events.checkpoints (name, position, commit_seq)
select $1, coalesce(last.position, 0), coalesce(last.seq, 0)
from (select 1) as one
left join lateral (
    select e.position, c.seq
    from osa_events.commits c join osa_events.events e on e.commit_id = c.id
    where c.seq is not null
    order by c.seq desc, e.position desc
    limit 1
) as last on true
on conflict (name) do update
    set position = excluded.position, commit_seq = excluded.commit_seq, event_types = null,
        last_error = null, failed_at = null, updated_at = now()
"#;

/// Just after the event at `$2` in commit order: its commit's number and its position.
const RESET_AFTER_SQL: &str = r#"
insert into osa_events.checkpoints (name, position, commit_seq)
select $1, e.position, c.seq
from osa_events.events e join osa_events.commits c on c.id = e.commit_id
where e.position = $2
on conflict (name) do update
    set position = excluded.position, commit_seq = excluded.commit_seq, event_types = null,
        last_error = null, failed_at = null, updated_at = now()
"#;

/// The recorded event types of a projection, and whether its checkpoint is at the beginning.
const EVENT_TYPES_SQL: &str = r#"
select event_types, position = 0 and commit_seq = 0 from osa_events.checkpoints where name = $1
"#;

const RECORD_EVENT_TYPES_SQL: &str = r#"
insert into osa_events.checkpoints (name, position, commit_seq, event_types) values ($1, 0, 0, $2)
on conflict (name) do update set event_types = excluded.event_types
"#;

const ACKNOWLEDGE_EVENT_TYPES_SQL: &str =
    "update osa_events.checkpoints set event_types = null where name = $1";

/// See [`ProjectionStore::record_event_types`].
pub(super) async fn record_event_types(
    pool: &PgPool,
    name: &str,
    event_types: &[&str],
) -> Result<()> {
    let now = event_type_set(event_types);
    let row: Option<(Option<Vec<String>>, bool)> = sqlx::query_as(EVENT_TYPES_SQL)
        .bind(name)
        .fetch_optional(pool)
        .await?;
    match row {
        Some((Some(stored), at_beginning)) if stored != now && !at_beginning => {
            return Err(Error::ProjectionEventTypesChanged {
                projection: name.to_owned(),
                stored,
                now,
            });
        }
        Some((Some(stored), _)) if stored == now => return Ok(()),
        _ => {}
    }
    sqlx::query(RECORD_EVENT_TYPES_SQL)
        .bind(name)
        .bind(&now)
        .execute(pool)
        .await?;
    Ok(())
}

/// See [`ProjectionStore::acknowledge_event_types`].
pub(super) async fn acknowledge_event_types(pool: &PgPool, name: &str) -> Result<()> {
    sqlx::query(ACKNOWLEDGE_EVENT_TYPES_SQL)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

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
pub(crate) async fn status(
    pool: &PgPool,
    name: &str,
    event_types: &[&str],
) -> Result<ProjectionStatus> {
    type Row = (
        i64,
        i64,
        Option<String>,
        f64,
        i64,
        Option<String>,
        Option<f64>,
    );
    let row: Option<Row> = sqlx::query_as(STATUS_SQL)
        .bind(name)
        .bind(event_types)
        .bind(LOCK_NAMESPACE)
        .fetch_optional(pool)
        .await?;
    let Some((position, commit_seq, last_error, updated_at, lag, leader, oldest)) = row else {
        let (lag, oldest): (i64, Option<f64>) = sqlx::query_as(LAG_FROM_BEGINNING_SQL)
            .bind(event_types)
            .fetch_one(pool)
            .await?;
        let mut status = ProjectionStatus::never_ran(name, lag);
        status.oldest_unapplied = age(oldest);
        return Ok(status);
    };
    let mut status = ProjectionStatus::never_ran(name, lag);
    status.oldest_unapplied = age(oldest);
    status.position = position;
    status.commit_seq = read::checkpoint_of(commit_seq, position).commit_seq;
    status.leader = leader;
    status.last_error = last_error;
    status.updated_at = from_epoch_seconds(updated_at);
    Ok(status)
}

/// Rewinds projection `name` to `to`, in the caller's transaction: clear the read model in the same
/// transaction, and the projection rebuilds it from there. A leader applying a batch meanwhile
/// finishes it first (the checkpoint row is locked per batch), then continues from the new point.
///
/// **Reset first, then clear the read model.** A batch locks the checkpoint row first and then
/// writes the read model; a transaction that does the same, in the same order, waits for the batch
/// and then runs alone. The other order (`truncate`, then reset) holds the read model's lock while
/// waiting for the checkpoint row, which the batch holds while waiting for the read model: a
/// deadlock, which PostgreSQL breaks by aborting one of them.
///
/// # Examples
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool) -> Result<(), osa_events::Error> {
/// let mut tx = pool.begin().await?;
/// osa_events::reset_projection(&mut *tx, "order_totals", osa_events::ResetTo::Beginning).await?;
/// sqlx::query("truncate order_totals").execute(&mut *tx).await?;
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
        ResetTo::End => {
            sqlx::query(RESET_END_SQL)
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
