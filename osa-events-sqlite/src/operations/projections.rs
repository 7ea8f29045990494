//! The projections as operators see them: [`Operations::projections`], and the projections of
//! [`Status`].
//!
//! Read from the `checkpoints` table's columns alone, whichever program runs each projection: on
//! SQLite the log's order is position order, so a checkpoint's commit number is its position; a
//! projection is led while its lease has a token and has not expired (store time); its lag is the
//! events of its recorded types after its position.
//!
//! [`Operations::projections`]: osa_events_core::operations::Operations::projections
//! [`Status`]: osa_events_core::operations::Status

use sqlx::{FromRow, SqliteConnection};

use crate::time::{age, from_epoch_seconds};
use osa_events_core::__private::{ProjectionRegistration, inventory};
use osa_events_core::Result;
use osa_events_core::store::ProjectionStatus;

/// Every checkpoint, by name, with its lag (events of its recorded types after it; none while it
/// has no recorded types, as after a reset) and the age of the oldest of those events.
const CHECKPOINTS_SQL: &str = r#"
select k.name, k.position, k.last_error, k.updated_at,
       case when k.lease_token is not null and k.lease_until > unixepoch('subsec')
            then k.leader end as leader,
       (select count(*) from events e
         where e.position > k.position
           and e.event_type in (select value from json_each(coalesce(k.event_types, '[]'))))
         as lag,
       (select unixepoch('subsec') - min(e.created_at) from events e
         where e.position > k.position
           and e.event_type in (select value from json_each(coalesce(k.event_types, '[]'))))
         as oldest
from checkpoints k
order by k.name
"#;

/// The lag of a projection with no checkpoint yet: every event of its types (`?1`, a JSON
/// array), and the age of the oldest.
const LAG_FROM_BEGINNING_SQL: &str = r#"
select count(*), unixepoch('subsec') - min(e.created_at)
from events e
where e.event_type in (select value from json_each(?1))
"#;

/// A row of [`CHECKPOINTS_SQL`].
#[derive(FromRow)]
struct Checkpoint {
    name: String,
    position: i64,
    last_error: Option<String>,
    updated_at: f64,
    leader: Option<String>,
    lag: i64,
    oldest: Option<f64>,
}

/// Every projection with a checkpoint in the file (whichever program runs it), and the ones
/// registered in this program that have none yet, by name; read on `conn` (inside a caller's
/// transaction, in its snapshot).
pub(super) async fn list(conn: &mut SqliteConnection) -> Result<Vec<ProjectionStatus>> {
    let stored: Vec<Checkpoint> = sqlx::query_as(CHECKPOINTS_SQL)
        .fetch_all(&mut *conn)
        .await?;
    let mut statuses: Vec<ProjectionStatus> = stored.into_iter().map(status_of).collect();
    for registration in inventory::iter::<ProjectionRegistration> {
        let spec = registration.spec();
        if statuses.iter().any(|status| status.name == spec.name()) {
            continue;
        }
        let event_types =
            serde_json::to_string(spec.event_types()).expect("a list of strings serializes");
        let (lag, oldest): (i64, Option<f64>) = sqlx::query_as(LAG_FROM_BEGINNING_SQL)
            .bind(event_types)
            .fetch_one(&mut *conn)
            .await?;
        let mut status = ProjectionStatus::never_ran(spec.name(), lag);
        status.oldest_unapplied = age(oldest);
        statuses.push(status);
    }
    statuses.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(statuses)
}

fn status_of(checkpoint: Checkpoint) -> ProjectionStatus {
    let mut status = ProjectionStatus::never_ran(&checkpoint.name, checkpoint.lag);
    status.position = checkpoint.position;
    status.commit_seq = u64::try_from(checkpoint.position).unwrap_or(0);
    status.oldest_unapplied = age(checkpoint.oldest);
    status.leader = checkpoint.leader;
    status.last_error = checkpoint.last_error;
    status.updated_at = from_epoch_seconds(checkpoint.updated_at);
    status
}
