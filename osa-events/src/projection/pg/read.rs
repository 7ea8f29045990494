//! Reading the log for a projection: in a stable order, with no event ever skipped.
//!
//! `position` alone is not safe: positions are taken when a transaction inserts, but become
//! visible when it commits. A transaction holding position 10 may commit after position 11 was
//! read and checkpointed, and a reader ordered by position would skip 10 for ever.
//!
//! Every event carries `commit_xid`, the id of the transaction that published it. A snapshot's
//! `xmin` is the oldest transaction id still running when the snapshot was taken: every
//! transaction with a lower id has finished, so its events are visible now (committed) or never
//! will be (rolled back). The reader therefore reads only events with `commit_xid < xmin`, in
//! `(commit_xid, position)` order, and checkpoints the last `(commit_xid, position)` it applied.
//! Any event that becomes visible later belongs to a transaction with an id of at least this
//! `xmin`, larger than every checkpointed `commit_xid`, so it sorts after the checkpoint: nothing is
//! skipped, and nothing is read twice. The price: a projection lags behind the oldest transaction
//! running in the cluster (a long transaction anywhere holds it back), which the status reports.

use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::Result;
pub(crate) use crate::projection::store::Checkpoint;
use crate::store::postgres::from_epoch_seconds;
use crate::store::{Delivery, Fence};

/// Locks the checkpoint row for the batch's transaction (a concurrent reset waits for it).
const CHECKPOINT_SQL: &str = "select position, coalesce(commit_xid, '0')::text from osa_events.checkpoints where name = $1 for update";

/// Ordered by the `xid8` columns themselves: an output column of the same name would win in
/// `order by`, and the text of a transaction id sorts "1000" before "999".
const READ_SQL: &str = r#"
select position, commit_xid::text as commit_xid_text, id, event_type, event_version, routing_key,
       payload::text as payload, metadata::text as metadata,
       extract(epoch from created_at)::float8 as published_at
from osa_events.events
where event_type = any($1)
  and (commit_xid, position) > ($2::text::xid8, $3)
  and commit_xid < pg_snapshot_xmin(pg_current_snapshot())
order by events.commit_xid, events.position
limit $4
"#;

const SAVE_SQL: &str = r#"
update osa_events.checkpoints
set position = $2, commit_xid = $3::text::xid8, last_error = null, failed_at = null, updated_at = now()
where name = $1
"#;

/// One event read for a projection.
#[derive(FromRow)]
struct EventRow {
    position: i64,
    commit_xid_text: String,
    id: Uuid,
    event_type: String,
    event_version: i32,
    routing_key: Option<String>,
    payload: String,
    metadata: String,
    published_at: f64,
}

pub(crate) async fn checkpoint(conn: &mut PgConnection, name: &str) -> Result<Checkpoint> {
    let (position, commit_xid): (i64, String) = sqlx::query_as(CHECKPOINT_SQL)
        .bind(name)
        .fetch_one(conn)
        .await?;
    Ok(Checkpoint {
        commit_xid: parse_xid(&commit_xid),
        position,
    })
}

/// Up to `limit` events after `after`, as deliveries (no claim: the token is nil; attempt 1), with
/// the checkpoint of the last one.
pub(crate) async fn events_after(
    conn: &mut PgConnection,
    event_types: &[&str],
    after: Checkpoint,
    limit: u32,
) -> Result<(Vec<Delivery>, Checkpoint)> {
    let rows: Vec<EventRow> = sqlx::query_as(READ_SQL)
        .bind(event_types)
        .bind(after.commit_xid.to_string())
        .bind(after.position)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?;
    let last = rows.last().map_or(after, |row| Checkpoint {
        commit_xid: parse_xid(&row.commit_xid_text),
        position: row.position,
    });
    let events = rows
        .into_iter()
        .map(|row| Delivery {
            fence: Fence {
                position: row.position,
                token: Uuid::nil(),
            },
            attempt: 1,
            last_error: None,
            event_id: row.id,
            event_type: row.event_type,
            event_version: row.event_version,
            routing_key: row.routing_key,
            payload: row.payload,
            metadata: row.metadata,
            published_at: from_epoch_seconds(row.published_at),
        })
        .collect();
    Ok((events, last))
}

pub(crate) async fn save(
    conn: &mut PgConnection,
    name: &str,
    checkpoint: Checkpoint,
) -> Result<()> {
    sqlx::query(SAVE_SQL)
        .bind(name)
        .bind(checkpoint.position)
        .bind(checkpoint.commit_xid.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// xid8 values are unsigned 64-bit integers, printed in decimal.
pub(crate) fn parse_xid(text: &str) -> u64 {
    text.parse().unwrap_or(0)
}
