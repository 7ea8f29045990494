//! Reading the log for a projection: in commit order, with no event ever skipped.
//!
//! # The order: commit order, which is causal order
//!
//! `position` alone is not safe: positions are taken when a transaction inserts, but become
//! visible when it commits, so a reader ordered by position would skip a transaction that holds
//! position 10 and commits after 11 was read. Transaction-id order is not safe either, nor
//! causal: a transaction's id is taken at its first write, not at its commit. Under READ
//! COMMITTED, T1 may write (taking id N), T2 (id N+1) may publish `order.placed` and commit, and
//! T1 may then read T2's order and publish `order.cancelled`: by id, `cancelled` comes first.
//!
//! So the log is ordered by commit. Each publishing transaction has one row in
//! `osa_events.commits`, created by its first publish; a deferred constraint trigger gives it the
//! next number of `osa_events.commit_seq` while the transaction commits, under a *shared* advisory
//! lock that it holds until its commit is visible. Events are read in `(commit seq, position)`
//! order. An event whose transaction saw another transaction's effects was numbered after that
//! transaction had committed, so after it: a projection never applies an event before one whose
//! effects its publishing transaction could see.
//!
//! # No gaps: the high-water mark
//!
//! Numbers are handed out just before commit, so for an instant number 11 may be visible while
//! 10's commit is still in flight. Before it reads, the reader asks for the high-water mark
//! (`osa_events.commit_high_water()`): it takes the same lock *exclusively*, which waits for the
//! commits in flight (milliseconds: only transactions already committing hold it), and returns the
//! last number handed out. Every transaction numbered up to it has then finished, so the reader's
//! next snapshot sees all of them, and no event can ever appear at or below it later: reading only
//! up to the mark, in order, skips nothing and reads nothing twice.
//!
//! Publishers share the lock, so they never wait for each other; a long transaction elsewhere
//! takes its number only when it commits, so it holds no projection back (the old
//! `xmin`-horizon reader lagged behind the oldest transaction in the cluster). Nothing here uses
//! transaction ids, so a dump and restore, or a logical migration to another cluster, keeps the
//! order: the sequences are restored with the data.
//!
//! A transaction that runs `SET CONSTRAINTS ALL IMMEDIATE` after publishing gets its number at
//! that moment instead of at commit; it then holds the shared lock to its end (readers wait for
//! it) and events it publishes after that point are ordered as of that moment. Don't.
//!
//! # Reading only what is new
//!
//! The checkpoint is a cursor `(commit_seq, position)`: the last event read. A batch that comes
//! back shorter than asked has read everything up to the mark, so the cursor moves to the mark's
//! last event even when none of it was of the projection's types: the next read starts there,
//! whatever the log's size. The leader also remembers the mark it read through; a poll that finds
//! the same mark and the same checkpoint is idle, and costs one read-only statement (no
//! transaction id, no row lock).

use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::store::from_epoch_seconds;
use osa_events_core::Result;
pub(crate) use osa_events_core::store::Checkpoint;
use osa_events_core::store::{Delivery, Fence};

/// Locks the checkpoint row for the batch's transaction (a concurrent reset waits for it).
const CHECKPOINT_SQL: &str =
    "select position, commit_seq from osa_events.checkpoints where name = $1 for update";

/// After the cursor `($2, $3)` and up to the mark `$5`: the rest of the cursor's own commit, then
/// the later commits in number order, each commit's events in position order.
///
/// The plan is pinned to walking the commits by number, and each commit's events by
/// `events (commit_id, position)`, so a poll reads only the commits since the cursor, however long
/// the log, and a commit of a million events is read batch by batch from where the cursor stands
/// in it:
/// - `offset 0` keeps PostgreSQL from flattening the lateral subqueries into one join;
/// - each commit's events are selected by a *range* on `commit_id` (`>=` and `<=` the commit,
///   or the row comparison with the cursor) and ordered by `(commit_id, position)`. With an
///   equality, PostgreSQL reduces the order to `position` alone, which the primary key also
///   provides, and for a rare event type (or a skewed log) it prefers to walk the primary key over
///   the whole log, filtering by commit and type: a poll would cost as much as the log is long.
const READ_SQL: &str = r#"
with rest_of_commit as (
    select e.*, c.seq as commit_seq
    from (select id, seq from osa_events.commits where seq = $2 and seq <= $5 offset 0) as c
    cross join lateral (
        select position, id, event_type, event_version, routing_key, payload, metadata, created_at
        from osa_events.events
        where (commit_id, position) > (c.id, $3) and commit_id <= c.id and event_type = any($1)
        order by commit_id, position
        limit $4
        offset 0
    ) as e
), later_commits as (
    select e.*, c.seq as commit_seq
    from (select id, seq from osa_events.commits where seq > $2 and seq <= $5 order by seq offset 0) as c
    cross join lateral (
        select position, id, event_type, event_version, routing_key, payload, metadata, created_at
        from osa_events.events
        where commit_id >= c.id and commit_id <= c.id and event_type = any($1)
        order by commit_id, position
        limit $4
        offset 0
    ) as e
    order by c.seq, e.position
    limit $4
)
select position, commit_seq, id, event_type, event_version, routing_key,
       payload::text as payload, metadata::text as metadata,
       extract(epoch from created_at)::float8 as published_at
from (select * from rest_of_commit union all select * from later_commits) as next
order by commit_seq, position
limit $4
"#;

/// The last event of commit `$1` (0 when it has none: an empty commit is read through at any
/// position).
const COMMIT_END_SQL: &str = r#"
select coalesce(max(position), 0) from osa_events.events
where commit_id = (select id from osa_events.commits where seq = $1)
"#;

const SAVE_SQL: &str = r#"
update osa_events.checkpoints
set position = $2, commit_seq = $3, last_error = null, failed_at = null, updated_at = now()
where name = $1
"#;

/// One event read for a projection.
#[derive(FromRow)]
struct EventRow {
    position: i64,
    commit_seq: i64,
    id: Uuid,
    event_type: String,
    event_version: i32,
    routing_key: Option<String>,
    payload: String,
    metadata: String,
    published_at: f64,
}

/// What a leader's probe found: the mark up to which the log is settled, and the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Probe {
    pub(super) high_water: u64,
    pub(super) checkpoint: Checkpoint,
}

pub(crate) async fn checkpoint(conn: &mut PgConnection, name: &str) -> Result<Checkpoint> {
    let (position, commit_seq): (i64, i64) = sqlx::query_as(CHECKPOINT_SQL)
        .bind(name)
        .fetch_one(conn)
        .await?;
    Ok(checkpoint_of(commit_seq, position))
}

/// What [`events_after`] read.
pub(super) struct Read {
    pub(super) events: Vec<Delivery>,
    /// The cursor after the batch: its last event, or the mark's last event when the batch read
    /// everything up to the mark.
    pub(super) to: Checkpoint,
    /// Whether everything up to the mark was read.
    pub(super) reached_high_water: bool,
}

/// Up to `limit` events of `event_types` after `after` and up to commit `high_water`, as
/// deliveries (no claim: the token is nil; attempt 1).
pub(super) async fn events_after(
    conn: &mut PgConnection,
    event_types: &[&str],
    after: Checkpoint,
    high_water: u64,
    limit: u32,
) -> Result<Read> {
    let rows: Vec<EventRow> = sqlx::query_as(READ_SQL)
        .bind(event_types)
        .bind(signed(after.commit_seq))
        .bind(after.position)
        .bind(i64::from(limit))
        .bind(signed(high_water))
        .fetch_all(&mut *conn)
        .await?;
    let mut to = rows
        .last()
        .map_or(after, |row| checkpoint_of(row.commit_seq, row.position));
    let reached_high_water = rows.len() < usize::try_from(limit).unwrap_or(usize::MAX);
    if reached_high_water && to.commit_seq < high_water {
        let end: i64 = sqlx::query_scalar(COMMIT_END_SQL)
            .bind(signed(high_water))
            .fetch_one(&mut *conn)
            .await?;
        to = Checkpoint {
            commit_seq: high_water,
            position: end,
        };
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
            event_version: row.event_version,
            routing_key: row.routing_key,
            payload: row.payload,
            metadata: row.metadata,
            published_at: from_epoch_seconds(row.published_at),
        })
        .collect();
    Ok(Read {
        events,
        to,
        reached_high_water,
    })
}

pub(crate) async fn save(
    conn: &mut PgConnection,
    name: &str,
    checkpoint: Checkpoint,
) -> Result<()> {
    sqlx::query(SAVE_SQL)
        .bind(name)
        .bind(checkpoint.position)
        .bind(signed(checkpoint.commit_seq))
        .execute(conn)
        .await?;
    Ok(())
}

/// The checkpoint of a row's `commit_seq` and `position` columns.
pub(super) fn checkpoint_of(commit_seq: i64, position: i64) -> Checkpoint {
    Checkpoint {
        commit_seq: seq(commit_seq),
        position,
    }
}

/// Commit numbers come from a `bigint` sequence starting at 1: never negative.
fn seq(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

pub(super) fn signed(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
