//! The claim: inside a write transaction (`BEGIN IMMEDIATE`, so no other writer runs between
//! the two statements), pick up to `limit` due deliveries in claim order, then claim exactly
//! those: fresh token, attempt counted, `run_at` moved to the claim's expiry.

use std::collections::HashMap;

use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row, SqliteConnection};
use uuid::Uuid;

use osa_events_core::Result;
use osa_events_core::store::{ClaimRequest, Delivery, Fence};

use crate::time::from_epoch_seconds;

/// The due deliveries of subscription `?1` in claim order (`run_at`, then position), at most `?2`,
/// with their events; none while the subscription is paused or retired. A claimed row whose claim
/// has expired has its `run_at` in the past, so it is due like a pending one; dead rows are not in
/// the index this walks (`deliveries_claimable`).
pub const PICK_SQL: &str = r#"
select d.event_position, d.attempts, d.last_error,
       e.id, e.event_type, e.event_version, e.routing_key, e.payload, e.metadata, e.created_at
from deliveries d
join events e on e.position = d.event_position
where d.subscription_id = ?1 and d.status <> 'dead' and d.run_at <= unixepoch('subsec')
  and exists (select 1 from subscriptions s
              where s.id = ?1 and s.paused_at is null and s.retired_at is null)
order by d.run_at, d.event_position
limit ?2
"#;

/// Claims the picked deliveries (`?2`: a JSON array of positions) of subscription `?1` for worker
/// `?3`, until `?4` seconds from now; returns each one's new token.
pub const CLAIM_SQL: &str = r#"
update deliveries
set status = 'claimed',
    attempts = attempts + 1,
    claim_token = lower(hex(randomblob(16))),
    claimed_by = ?3,
    run_at = unixepoch('subsec') + ?4,
    claimed_at = unixepoch('subsec'),
    updated_at = unixepoch('subsec')
where subscription_id = ?1 and event_position in (select value from json_each(?2))
returning event_position, claim_token
"#;

#[derive(FromRow)]
struct PickedRow {
    event_position: i64,
    attempts: i64,
    last_error: Option<String>,
    id: Uuid,
    event_type: String,
    event_version: i64,
    routing_key: Option<String>,
    payload: String,
    metadata: String,
    created_at: f64,
}

/// Claims up to `request.limit` deliveries, in claim order; `conn` must be in a write transaction.
pub(crate) async fn claim(
    conn: &mut SqliteConnection,
    request: ClaimRequest<'_>,
) -> Result<Vec<Delivery>> {
    let picked: Vec<PickedRow> = sqlx::query_as(PICK_SQL)
        .bind(request.subscription.0)
        .bind(i64::from(request.limit))
        .fetch_all(&mut *conn)
        .await?;
    if picked.is_empty() {
        return Ok(Vec::new());
    }
    let positions = serde_json::to_string(
        &picked
            .iter()
            .map(|row| row.event_position)
            .collect::<Vec<_>>(),
    )
    .expect("positions serialize");
    let claimed: Vec<SqliteRow> = sqlx::query(CLAIM_SQL)
        .bind(request.subscription.0)
        .bind(positions)
        .bind(request.worker)
        .bind(request.claim_timeout.as_secs_f64())
        .fetch_all(&mut *conn)
        .await?;
    let mut tokens = HashMap::with_capacity(claimed.len());
    for row in &claimed {
        let position: i64 = row.try_get("event_position")?;
        let token: String = row.try_get("claim_token")?;
        tokens.insert(position, token_of(&token)?);
    }
    picked
        .into_iter()
        .map(|row| {
            let token = tokens
                .get(&row.event_position)
                .copied()
                .ok_or_else(|| lost_row(row.event_position))?;
            Ok(delivery(row, token))
        })
        .collect()
}

/// A claim token as stored: 32 hex digits.
pub(crate) fn token_of(text: &str) -> Result<Uuid> {
    Uuid::try_parse(text).map_err(|error| {
        osa_events_core::Error::Database(
            format!("a stored claim token {text:?} is not a UUID: {error}").into(),
        )
    })
}

/// A picked row the claim did not update: impossible under the write lock, so the file was
/// changed by something that does not take it.
fn lost_row(position: i64) -> osa_events_core::Error {
    osa_events_core::Error::Database(
        format!(
            "the delivery at position {position} was picked for a claim and gone when claimed, \
             inside one write transaction: is the database file on a network file system, whose \
             locks SQLite cannot rely on?"
        )
        .into(),
    )
}

fn delivery(row: PickedRow, token: Uuid) -> Delivery {
    Delivery {
        fence: Fence {
            position: row.event_position,
            token,
        },
        attempt: u32::try_from(row.attempts + 1).unwrap_or(u32::MAX),
        last_error: row.last_error,
        event_id: row.id,
        event_type: row.event_type,
        event_version: i32::try_from(row.event_version).unwrap_or(i32::MAX),
        routing_key: row.routing_key,
        payload: row.payload,
        metadata: row.metadata,
        published_at: from_epoch_seconds(row.created_at),
    }
}
