//! The claim: one statement that locks, claims and returns up to `limit` due deliveries.

use sqlx::{Executor, FromRow, Postgres, Row};
use uuid::Uuid;

use super::from_epoch_seconds;
use osa_events_core::Result;
use osa_events_core::store::{ClaimRequest, Delivery, Fence};

use super::fenced::split;

/// The two CTEs of every claim, `picked` and `claimed`, shared by [`CLAIM_SQL`] and
/// `COMPLETE_AND_CLAIM_SQL` so the heart of the protocol is written once.
///
/// `picked` takes due rows in index order (`deliveries_claimable`: subscription, run_at,
/// position; dead rows are not in it) and skips rows another claimer holds. Eligibility is decided
/// inside the locked sub-select, so two claimers can never both pass it for one row. `claimed` hands
/// out a fresh token, counts the attempt, and sets `run_at` to the claim's expiry: an expired claim
/// is simply a due row again.
macro_rules! claim_ctes {
    () => {
        r#"
picked as (
    select subscription_id, event_position, run_at
    from osa_events.deliveries
    where subscription_id = $1 and status <> 'dead' and run_at <= now()
    order by run_at, event_position
    limit $2
    for no key update skip locked
), claimed as (
    update osa_events.deliveries d
    set status = 'claimed',
        attempts = d.attempts + 1,
        claim_token = gen_random_uuid(),
        claimed_by = $3,
        run_at = now() + make_interval(secs => $4),
        updated_at = now()
    from picked, osa_events.events e
    where d.subscription_id = picked.subscription_id
      and d.event_position = picked.event_position
      and e.position = picked.event_position
    returning d.event_position, extract(epoch from picked.run_at)::float8 as due_at, d.claim_token,
              d.attempts, d.last_error, e.id, e.event_type, e.event_version, e.routing_key,
              e.payload::text as payload, e.metadata::text as metadata,
              extract(epoch from e.created_at)::float8 as published_at
)
"#
    };
}

/// Claims up to `$2` due deliveries of subscription `$1` for worker `$3`, for `$4` seconds.
pub const CLAIM_SQL: &str = concat!("with ", claim_ctes!(), "select * from claimed");

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
    let rows: Vec<ClaimedRow> = sqlx::query_as(CLAIM_SQL)
        .bind(request.subscription.0)
        .bind(i64::from(request.limit))
        .bind(request.worker)
        .bind(request.claim_timeout.as_secs_f64())
        .fetch_all(executor)
        .await?;
    Ok(in_claim_order(rows))
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

/// The fenced completion of the previous batch and the claim of the next, in one statement (one
/// round trip, one commit). The completed rows are claimed rows whose `run_at` lies in the future,
/// so the claim's sub-select never considers them. The outer left join yields one row even when
/// nothing is claimed, to carry the completion count.
const COMPLETE_AND_CLAIM_SQL: &str = concat!(
    r#"
with done as (
    delete from osa_events.deliveries d
    using unnest($5::int8[], $6::uuid[]) as done (position, token)
    where d.subscription_id = $1
      and d.event_position = done.position
      and d.claim_token = done.token
      and d.status = 'claimed'
    returning 1
), "#,
    claim_ctes!(),
    r#"
select counted.completed, claimed.*
from (select count(*) as completed from done) as counted
left join claimed on true
"#
);

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
        .bind(i64::from(request.limit))
        .bind(request.worker)
        .bind(request.claim_timeout.as_secs_f64())
        .bind(positions)
        .bind(tokens)
        .fetch_all(executor)
        .await?;
    let completed: i64 = match rows.first() {
        Some(row) => row.try_get("completed")?,
        None => 0,
    };
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<Option<i64>, _>("event_position")?.is_some() {
            claimed.push(ClaimedRow::from_row(row)?);
        }
    }
    Ok((
        u64::try_from(completed).unwrap_or(0),
        in_claim_order(claimed),
    ))
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
