//! Operating projections on SQLite: where each stands, how far behind, who leads; rewinding one;
//! the event types its checkpoint was built from.

use sqlx::{Executor, Sqlite};

use super::read::checkpoint_at;
use crate::SqliteStore;
use crate::time::{age, from_epoch_seconds};
use osa_events_core::store::{ProjectionStatus, ProjectionStore, ResetTo, event_type_set};
use osa_events_core::{Error, Result};

/// The checkpoint of `?1`, its leader while the lease is live, and its lag: the events of the
/// types `?2` (a JSON array) after it (all committed: the log holds nothing else), with the age
/// of the oldest of them.
const STATUS_SQL: &str = r#"
select k.position, k.last_error, k.updated_at,
       case when k.lease_token is not null and k.lease_until > unixepoch('subsec')
            then k.leader end,
       count(e.position),
       unixepoch('subsec') - min(e.created_at)
from checkpoints k
left join events e
  on e.position > k.position and e.event_type in (select value from json_each(?2))
where k.name = ?1
group by k.name
"#;

/// The lag of a projection with no checkpoint yet: every event of its types, and the age of the
/// oldest.
const LAG_FROM_BEGINNING_SQL: &str = r#"
select count(*), unixepoch('subsec') - min(created_at)
from events where event_type in (select value from json_each(?1))
"#;

/// What every reset sets besides the position: one more reset (so a batch read before it does not
/// commit over it, see `leader.rs`); the recorded event types are forgotten (the next start records
/// its own), and so is the last error.
macro_rules! reset_sql {
    ($insert:literal) => {
        concat!(
            $insert,
            r#"
on conflict (name) do update
set position = excluded.position, resets = checkpoints.resets + 1, event_types = null,
    last_error = null, failed_at = null, updated_at = unixepoch('subsec')
"#
        )
    };
}

const RESET_BEGINNING_SQL: &str =
    reset_sql!("insert into checkpoints (name, position) values (?1, 0)");

/// After the last event committed (0 on an empty log). `where true`: an `insert … select` with an
/// upsert needs a `where`, or SQLite reads `on conflict` as the select's join constraint.
const RESET_END_SQL: &str = reset_sql!(
    "insert into checkpoints (name, position) select ?1, coalesce(max(position), 0) from events where true"
);

/// Just after the event at `?2`; no row when there is none.
const RESET_AFTER_SQL: &str = reset_sql!(
    "insert into checkpoints (name, position) select ?1, position from events where position = ?2"
);

/// The recorded event types of a projection (a JSON array), and whether its checkpoint is at the
/// beginning.
const EVENT_TYPES_SQL: &str = "select event_types, position = 0 from checkpoints where name = ?1";

const RECORD_EVENT_TYPES_SQL: &str = r#"
insert into checkpoints (name, position, event_types) values (?1, 0, ?2)
on conflict (name) do update set event_types = excluded.event_types
"#;

const ACKNOWLEDGE_EVENT_TYPES_SQL: &str =
    "update checkpoints set event_types = null where name = ?1";

/// A list of names as a JSON array, for `json_each` and the `event_types` column.
fn json(names: &[&str]) -> String {
    serde_json::Value::from(names).to_string()
}

/// The state of projection `name`, which reads `event_types`.
pub(crate) async fn status(
    store: &SqliteStore,
    name: &str,
    event_types: &[&str],
) -> Result<ProjectionStatus> {
    type Row = (i64, Option<String>, f64, Option<String>, i64, Option<f64>);
    let types = json(event_types);
    let row: Option<Row> = sqlx::query_as(STATUS_SQL)
        .bind(name)
        .bind(&types)
        .fetch_optional(store.pool())
        .await?;
    let Some((position, last_error, updated_at, leader, lag, oldest)) = row else {
        let (lag, oldest): (i64, Option<f64>) = sqlx::query_as(LAG_FROM_BEGINNING_SQL)
            .bind(&types)
            .fetch_one(store.pool())
            .await?;
        let mut status = ProjectionStatus::never_ran(name, lag);
        status.oldest_unapplied = age(oldest);
        return Ok(status);
    };
    let mut status = ProjectionStatus::never_ran(name, lag);
    status.oldest_unapplied = age(oldest);
    status.position = position;
    status.commit_seq = checkpoint_at(position).commit_seq;
    status.leader = leader;
    status.last_error = last_error;
    status.updated_at = from_epoch_seconds(updated_at);
    Ok(status)
}

/// Rewinds projection `name` to `to`, in the caller's transaction: clear the read model in the same
/// transaction, and the projection rebuilds it from there. Begin the transaction with
/// [`SqliteStore::begin`] (`BEGIN IMMEDIATE`): it then holds the write lock, so no batch commits
/// between the reset and the clearing, and a batch read before the reset is rolled back when it
/// commits (its effects would land on the cleared read model), the projection continuing from the
/// new point.
///
/// On SQLite the log's order is position order, so `AfterPosition(p)` applies exactly the events
/// after position `p`.
///
/// # Examples
///
/// ```no_run
/// # async fn example(store: osa_events::SqliteStore) -> Result<(), osa_events::Error> {
/// let mut tx = store.begin().await?;
/// osa_events::sqlite::reset_projection(&mut *tx, "order_totals", osa_events::ResetTo::Beginning)
///     .await?;
/// sqlx::query("delete from order_totals").execute(&mut *tx).await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Config`] when `AfterPosition` names no event; [`Error::Database`] when the statement
/// fails.
pub async fn reset_projection<'c, X>(executor: X, name: &str, to: ResetTo) -> Result<()>
where
    X: Executor<'c, Database = Sqlite>,
{
    let query = match to {
        ResetTo::Beginning => sqlx::query(RESET_BEGINNING_SQL).bind(name),
        ResetTo::End => sqlx::query(RESET_END_SQL).bind(name),
        ResetTo::AfterPosition(position) => sqlx::query(RESET_AFTER_SQL).bind(name).bind(position),
    };
    let result = query.execute(executor).await?;
    if result.rows_affected() == 0 {
        return Err(Error::Config(
            format!("cannot reset projection `{name}`: no event at {to:?}").into(),
        ));
    }
    Ok(())
}

/// See [`ProjectionStore::record_event_types`]: read and written in one write transaction.
pub(super) async fn record_event_types(
    store: &SqliteStore,
    name: &str,
    event_types: &[&str],
) -> Result<()> {
    let now = event_type_set(event_types);
    let mut tx = store.begin().await?;
    let row: Option<(Option<String>, bool)> = sqlx::query_as(EVENT_TYPES_SQL)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some((Some(stored), at_beginning)) = row {
        let stored: Vec<String> = serde_json::from_str(&stored).map_err(|error| {
            Error::Database(
                format!("projection `{name}`: its stored event types {stored:?} are not a JSON list: {error}")
                    .into(),
            )
        })?;
        if stored == now {
            return Ok(());
        }
        if !at_beginning {
            return Err(Error::ProjectionEventTypesChanged {
                projection: name.to_owned(),
                stored,
                now,
            });
        }
    }
    sqlx::query(RECORD_EVENT_TYPES_SQL)
        .bind(name)
        .bind(serde_json::Value::from(now.clone()).to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// See [`ProjectionStore::acknowledge_event_types`].
pub(super) async fn acknowledge_event_types(store: &SqliteStore, name: &str) -> Result<()> {
    sqlx::query(ACKNOWLEDGE_EVENT_TYPES_SQL)
        .bind(name)
        .execute(store.pool())
        .await?;
    Ok(())
}

impl SqliteStore {
    /// The state of every projection registered in this program, sorted by name (see
    /// [`ProjectionStore::statuses`]).
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the queries fail; [`Error::Busy`] never (they only read).
    pub async fn projection_status(&self) -> Result<Vec<ProjectionStatus>> {
        self.statuses().await
    }
}
