//! The nodes table: each runtime instance's record of itself.

use uuid::Uuid;

use super::{PgStore, epoch_seconds, seconds};
use crate::store::from_epoch_seconds;
use osa_events_core::Result;
use osa_events_core::operations::{NodeRecord, NodeStatus};

/// Upserts the node and forgets the ones not seen for `$11` seconds, in one statement.
const RECORD_SQL: &str = r#"
with recorded as (
    insert into osa_events.nodes
        (id, name, namespace, host, pid, version, handlers, projections, started_at, heartbeat)
    values ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9), make_interval(secs => $10))
    on conflict (id) do update
    set name = excluded.name, namespace = excluded.namespace, handlers = excluded.handlers,
        projections = excluded.projections, heartbeat = excluded.heartbeat, last_seen_at = now()
    returning 1
), forgotten as (
    delete from osa_events.nodes
    where last_seen_at < now() - make_interval(secs => $11) and id <> $1
    returning 1
)
select (select count(*) from recorded), (select count(*) from forgotten)
"#;

const REMOVE_SQL: &str = "delete from osa_events.nodes where id = $1";

const LIST_SQL: &str = r#"
select id, name, namespace, host, pid, version, handlers, projections,
       extract(epoch from started_at)::float8, extract(epoch from heartbeat)::float8,
       extract(epoch from last_seen_at)::float8,
       last_seen_at > now() - heartbeat * $1::int4
from osa_events.nodes
where last_seen_at >= now() - make_interval(secs => $2)
order by name, id
"#;

pub(super) async fn record(store: &PgStore, node: &NodeRecord) -> Result<()> {
    let mut conn = store.pool().acquire().await?;
    let _: (i64, i64) = sqlx::query_as(RECORD_SQL)
        .bind(node.id)
        .bind(&node.name)
        .bind(node.namespace.as_deref())
        .bind(&node.host)
        .bind(i32::try_from(node.pid).unwrap_or(i32::MAX))
        .bind(&node.version)
        .bind(&node.handlers)
        .bind(&node.projections)
        .bind(epoch_seconds(node.started_at))
        .bind(seconds(node.heartbeat))
        .bind(seconds(NodeRecord::STALE_AFTER))
        .fetch_one(store.ops(&mut conn))
        .await?;
    Ok(())
}

pub(super) async fn remove(store: &PgStore, id: Uuid) -> Result<()> {
    let mut conn = store.pool().acquire().await?;
    sqlx::query(REMOVE_SQL)
        .bind(id)
        .execute(store.ops(&mut conn))
        .await?;
    Ok(())
}

pub(super) async fn list(store: &PgStore) -> Result<Vec<NodeStatus>> {
    let mut conn = store.pool().acquire().await?;
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        Uuid,
        String,
        Option<String>,
        String,
        i32,
        String,
        Vec<String>,
        Vec<String>,
        f64,
        f64,
        f64,
        bool,
    )> = sqlx::query_as(LIST_SQL)
        .bind(i32::try_from(NodeRecord::MISSED_HEARTBEATS).unwrap_or(3))
        .bind(seconds(NodeRecord::STALE_AFTER))
        .fetch_all(store.ops(&mut conn))
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| NodeStatus {
            record: NodeRecord {
                id: row.0,
                name: row.1,
                namespace: row.2,
                host: row.3,
                pid: u32::try_from(row.4).unwrap_or(0),
                version: row.5,
                handlers: row.6,
                projections: row.7,
                started_at: from_epoch_seconds(row.8),
                heartbeat: std::time::Duration::from_secs_f64(row.9.max(0.0)),
            },
            last_seen: from_epoch_seconds(row.10),
            alive: row.11,
        })
        .collect())
}
