//! The nodes table: each runtime instance's record of itself, refreshed by its heartbeat.
//!
//! Liveness is judged by the store's clock alone (`last_seen_at` is the store's time of the last
//! refresh), so nodes whose clocks disagree still agree on who is alive.

use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{SqliteStore, duration_of, epoch_seconds};
use crate::time::from_epoch_seconds;
use osa_events_core::operations::{NodeRecord, NodeStatus};
use osa_events_core::{Error, Result};

/// Records node `?1`, seen now. A node recorded again keeps its host, pid, version and start:
/// they describe the process, which the id names.
const RECORD_SQL: &str = r#"
insert into nodes
    (id, name, namespace, host, pid, version, handlers, projections, started_at, heartbeat)
values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
on conflict (id) do update
set name = excluded.name, namespace = excluded.namespace, handlers = excluded.handlers,
    projections = excluded.projections, heartbeat = excluded.heartbeat,
    last_seen_at = unixepoch('subsec')
"#;

/// Forgets the nodes other than `?1` not seen for `?2` seconds.
const FORGET_SQL: &str = r#"
delete from nodes where last_seen_at < unixepoch('subsec') - ?2 and id <> ?1
"#;

const REMOVE_SQL: &str = "delete from nodes where id = ?1";

/// The nodes seen within `?2` seconds, by name then id, each alive while fewer than `?1`
/// heartbeats have passed since it was last seen.
const LIST_SQL: &str = r#"
select id, name, namespace, host, pid, version, handlers, projections, started_at, heartbeat,
       last_seen_at, last_seen_at > unixepoch('subsec') - heartbeat * ?1
from nodes
where last_seen_at >= unixepoch('subsec') - ?2
order by name, id
"#;

/// A list of names as the JSON array text the table keeps.
fn names_json(names: &[String]) -> String {
    serde_json::to_string(names).expect("a list of strings serializes")
}

/// The JSON array text of a stored list of names.
fn names_of(text: &str, column: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|error| {
        Error::Database(
            format!("a node's `{column}` is not a JSON array of names ({error}): {text:?}").into(),
        )
    })
}

pub(super) async fn record(store: &SqliteStore, node: &NodeRecord) -> Result<()> {
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(RECORD_SQL)
        .bind(node.id)
        .bind(&node.name)
        .bind(node.namespace.as_deref())
        .bind(&node.host)
        .bind(i64::from(node.pid))
        .bind(&node.version)
        .bind(names_json(&node.handlers))
        .bind(names_json(&node.projections))
        .bind(epoch_seconds(node.started_at))
        .bind(node.heartbeat.as_secs_f64())
        .execute(&mut *tx)
        .await?;
    sqlx::query(FORGET_SQL)
        .bind(node.id)
        .bind(NodeRecord::STALE_AFTER.as_secs_f64())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn remove(store: &SqliteStore, id: Uuid) -> Result<()> {
    sqlx::query(REMOVE_SQL)
        .bind(id)
        .execute(store.pool())
        .await?;
    Ok(())
}

type NodeRow = (
    Uuid,
    String,
    Option<String>,
    String,
    i64,
    String,
    String,
    String,
    f64,
    f64,
    f64,
    bool,
);

/// The nodes seen within [`NodeRecord::STALE_AFTER`], read on `conn` (inside a caller's
/// transaction, they are what it sees).
pub(super) async fn list(conn: &mut SqliteConnection) -> Result<Vec<NodeStatus>> {
    let rows: Vec<NodeRow> = sqlx::query_as(LIST_SQL)
        .bind(i64::from(NodeRecord::MISSED_HEARTBEATS))
        .bind(NodeRecord::STALE_AFTER.as_secs_f64())
        .fetch_all(conn)
        .await?;
    rows.into_iter()
        .map(|row| {
            Ok(NodeStatus {
                record: NodeRecord {
                    id: row.0,
                    name: row.1,
                    namespace: row.2,
                    host: row.3,
                    pid: u32::try_from(row.4).unwrap_or(0),
                    version: row.5,
                    handlers: names_of(&row.6, "handlers")?,
                    projections: names_of(&row.7, "projections")?,
                    started_at: from_epoch_seconds(row.8),
                    heartbeat: duration_of(row.9),
                },
                last_seen: from_epoch_seconds(row.10),
                alive: row.11,
            })
        })
        .collect()
}
