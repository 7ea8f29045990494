//! The claim: one statement that locks, claims and returns up to `limit` due deliveries, and
//! optionally completes the previous batch first.

use sqlx::postgres::PgRow;
use sqlx::{Executor, FromRow, Postgres, Row};
use uuid::Uuid;

use super::from_epoch_seconds;
use osa_events_core::Result;
use osa_events_core::store::{ClaimRequest, Delivery, Fence};

use super::fenced::split;

/// Claims up to `$2` due deliveries of subscription `$1` for worker `$3`, for `$4` seconds.
///
/// The statement is a function of the schema (`osa_events.claim_deliveries`, migration
/// `lean_claims`): its own planner settings fix the plan (an ordered walk of the claimable index,
/// whatever the table's statistics say), and PostgreSQL caches it for the session. The migration
/// explains the protocol step by step.
pub const CLAIM_SQL: &str = "select * from osa_events.claim_deliveries($1, $2, $3, $4)";

#[derive(FromRow)]
struct ClaimedRow {
    event_position: i64,
    due_at: f64,
    claim_token: Uuid,
    attempts: i32,
    last_error: Option<String>,
    id: Uuid,
    event_type: String,
    event_version: i32,
    routing_key: Option<String>,
    payload: String,
    metadata: String,
    published_at: f64,
}

pub(super) async fn claim<'c, X>(executor: X, request: ClaimRequest<'_>) -> Result<Vec<Delivery>>
where
    X: Executor<'c, Database = Postgres>,
{
    let rows = sqlx::query(CLAIM_SQL)
        .bind(request.subscription.0)
        .bind(limit_of(&request))
        .bind(request.worker)
        .bind(request.claim_timeout.as_secs_f64())
        .fetch_all(executor)
        .await?;
    Ok(claimed_of(&rows)?.1)
}

/// The claim's limit as the function's `integer`: a batch is far below `i32::MAX` (the macro and
/// the runtime builder bound it), so the clamp never bites.
fn limit_of(request: &ClaimRequest<'_>) -> i32 {
    i32::try_from(request.limit).unwrap_or(i32::MAX)
}

/// The completion count and the claimed deliveries of `claim_deliveries`' rows, in claim order.
/// Every row carries the count; when nothing was claimed, one row carries only the count.
fn claimed_of(rows: &[PgRow]) -> Result<(u64, Vec<Delivery>)> {
    let completed: i64 = match rows.first() {
        Some(row) => row.try_get("completed")?,
        None => 0,
    };
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        if row.try_get::<Option<i64>, _>("event_position")?.is_some() {
            claimed.push(ClaimedRow::from_row(row)?);
        }
    }
    Ok((
        u64::try_from(completed).unwrap_or(0),
        in_claim_order(claimed),
    ))
}

/// UPDATE ... RETURNING has no order; hand the deliveries out in the order they were picked.
fn in_claim_order(mut rows: Vec<ClaimedRow>) -> Vec<Delivery> {
    rows.sort_unstable_by(|a, b| {
        a.due_at
            .total_cmp(&b.due_at)
            .then(a.event_position.cmp(&b.event_position))
    });
    rows.into_iter().map(Delivery::from).collect()
}

/// The fenced completion of the previous batch (`$5`, `$6`: positions and tokens) and the claim of
/// the next, in one statement (one round trip, one commit).
const COMPLETE_AND_CLAIM_SQL: &str =
    "select * from osa_events.claim_deliveries($1, $2, $3, $4, $5, $6)";

pub(super) async fn complete_and_claim<'c, X>(
    executor: X,
    done: &[Fence],
    request: ClaimRequest<'_>,
) -> Result<(u64, Vec<Delivery>)>
where
    X: Executor<'c, Database = Postgres>,
{
    let (positions, tokens) = split(done.iter().copied());
    let rows = sqlx::query(COMPLETE_AND_CLAIM_SQL)
        .bind(request.subscription.0)
        .bind(limit_of(&request))
        .bind(request.worker)
        .bind(request.claim_timeout.as_secs_f64())
        .bind(positions)
        .bind(tokens)
        .fetch_all(executor)
        .await?;
    claimed_of(&rows)
}

impl From<ClaimedRow> for Delivery {
    fn from(row: ClaimedRow) -> Self {
        Delivery {
            fence: Fence {
                position: row.event_position,
                token: row.claim_token,
            },
            attempt: u32::try_from(row.attempts).unwrap_or(0),
            last_error: row.last_error,
            event_id: row.id,
            event_type: row.event_type,
            event_version: row.event_version,
            routing_key: row.routing_key,
            payload: row.payload,
            metadata: row.metadata,
            published_at: from_epoch_seconds(row.published_at),
        }
    }
}
