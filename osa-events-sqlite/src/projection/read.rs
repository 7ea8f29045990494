//! Reading the log for a projection: by position, which on SQLite is commit order.
//!
//! # The order: position order is commit order
//!
//! SQLite runs one write transaction at a time, and every transaction that publishes holds the
//! write lock from its `BEGIN IMMEDIATE` (or from its first write) to its end. `events.position`
//! is `AUTOINCREMENT`, handed out under that lock, so the transaction that takes position 10
//! commits (or rolls back) before any other transaction can take 11:
//!
//! - a reader never sees a position while a lower one may still commit (no in-flight gap);
//! - a rolled-back transaction's positions are handed out again to the next writer (its increment
//!   of `sqlite_sequence` rolls back with it), so a gap in what is visible is never filled later;
//! - a pruned event's position is never handed out again (`sqlite_sequence` keeps the highest).
//!
//! So the committed log is always a prefix of the position order, and a transaction that saw
//! another's effects committed after it, with higher positions: reading by position, in one
//! snapshot, is reading in commit (and causal) order, and no event can ever appear at or below a
//! position once a reader has seen that position. A [`Checkpoint`] is therefore
//! `{ commit_seq: position, position }`, and there is no commit table and no high-water mark.
//! `tests/it/sqlite_order.rs` checks it with concurrent publishers, rollbacks and a second process.
//!
//! # Reading without the lock
//!
//! A batch is read in one read transaction (WAL readers never wait for the writer): the
//! checkpoint (with its count of resets), the lease's token, the events after the checkpoint and the head of the log come
//! from one snapshot. A batch shorter than asked has read everything up to the head, so its
//! cursor moves to the head even past events of other types: the next read starts there.

use sqlx::{FromRow, SqliteConnection};
use uuid::Uuid;

use crate::time::from_epoch_seconds;
use osa_events_core::Result;
use osa_events_core::store::{Checkpoint, Delivery, Fence};

/// The checkpoint of projection `?1`, its resets, and whether the lease token `?2` holds it.
const CHECKPOINT_SQL: &str =
    "select position, resets, lease_token is ?2 from checkpoints where name = ?1";

/// Up to `?3` events of the types `?2` (a JSON array) after position `?1`, by position.
const READ_SQL: &str = r#"
select position, id, event_type, event_version, routing_key, payload, metadata, created_at
from events
where position > ?1 and event_type in (select value from json_each(?2))
order by position
limit ?3
"#;

/// The last position of the log (0 when empty).
const HEAD_SQL: &str = "select coalesce(max(position), 0) from events";

/// One event read for a projection.
#[derive(FromRow)]
struct EventRow {
    position: i64,
    id: Uuid,
    event_type: String,
    event_version: i64,
    routing_key: Option<String>,
    payload: String,
    metadata: String,
    created_at: f64,
}

/// The checkpoint of a position: its own commit number (see the [module docs](self)).
pub(super) fn checkpoint_at(position: i64) -> Checkpoint {
    Checkpoint {
        commit_seq: u64::try_from(position).unwrap_or(0),
        position,
    }
}

/// Where a projection stands, as its row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Standing {
    pub(super) checkpoint: Checkpoint,
    /// How many times it was reset: a batch commits only if none came since it was read.
    pub(super) resets: i64,
    /// Whether the lease token asked about holds it.
    pub(super) held: bool,
}

/// Where projection `name` stands, if it has a checkpoint, with whether `token` holds its lease.
pub(super) async fn standing(
    conn: &mut SqliteConnection,
    name: &str,
    token: &str,
) -> Result<Option<Standing>> {
    let row: Option<(i64, i64, bool)> = sqlx::query_as(CHECKPOINT_SQL)
        .bind(name)
        .bind(token)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|(position, resets, held)| Standing {
        checkpoint: checkpoint_at(position),
        resets,
        held,
    }))
}

/// What [`events_after`] read.
pub(super) struct Read {
    pub(super) events: Vec<Delivery>,
    /// The cursor after the batch: its last event, or the head of the log when the batch read
    /// everything up to it.
    pub(super) to: Checkpoint,
}

/// Up to `limit` events of `event_types` after `after`, as deliveries (no claim: the token is
/// nil; attempt 1). `conn` is in the read transaction of the batch, so the head is read in the
/// same snapshot as the events.
pub(super) async fn events_after(
    conn: &mut SqliteConnection,
    event_types: &[&str],
    after: Checkpoint,
    limit: u32,
) -> Result<Read> {
    let types = serde_json::to_string(event_types).expect("event types serialize");
    let rows: Vec<EventRow> = sqlx::query_as(READ_SQL)
        .bind(after.position)
        .bind(types)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
    let mut to = rows.last().map_or(after, |row| checkpoint_at(row.position));
    if rows.len() < usize::try_from(limit).unwrap_or(usize::MAX) {
        let head: i64 = sqlx::query_scalar(HEAD_SQL).fetch_one(&mut *conn).await?;
        // A log pruned down below the checkpoint leaves the checkpoint where it is.
        to = to.max(checkpoint_at(head));
    }
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
            event_version: i32::try_from(row.event_version).unwrap_or(i32::MAX),
            routing_key: row.routing_key,
            payload: row.payload,
            metadata: row.metadata,
            published_at: from_epoch_seconds(row.created_at),
        })
        .collect();
    Ok(Read { events, to })
}
