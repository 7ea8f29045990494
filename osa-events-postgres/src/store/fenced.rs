//! Writes about claimed deliveries, each fenced by claim token and batched into one statement.
//!
//! The fences of a batch are bound as two parallel arrays (positions, tokens) and joined with
//! `unnest`, so one statement serves any batch size and each row is found by primary key. A row
//! whose token no longer matches (its claim expired and was taken over) is not touched.

use std::time::Duration;

use sqlx::{Executor, Postgres};
use uuid::Uuid;

use osa_events_core::Result;
use osa_events_core::store::{Failure, Fence, SubscriptionId};

pub(super) fn split(fences: impl ExactSizeIterator<Item = Fence>) -> (Vec<i64>, Vec<Uuid>) {
    let mut positions = Vec::with_capacity(fences.len());
    let mut tokens = Vec::with_capacity(fences.len());
    for fence in fences {
        positions.push(fence.position);
        tokens.push(fence.token);
    }
    (positions, tokens)
}

/// Deletes the claimed deliveries whose tokens still match.
pub const COMPLETE_SQL: &str = r#"
delete from osa_events.deliveries d
using unnest($2::int8[], $3::uuid[]) as done (position, token)
where d.subscription_id = $1
  and d.event_position = done.position
  and d.claim_token = done.token
  and d.status = 'claimed'
"#;

pub(crate) async fn complete<'c, X>(
    executor: X,
    subscription: SubscriptionId,
    done: &[Fence],
) -> Result<u64>
where
    X: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    if done.is_empty() {
        return Ok(0);
    }
    let (positions, tokens) = split(done.iter().copied());
    let result = sqlx::query(COMPLETE_SQL)
        .bind(subscription.0)
        .bind(positions)
        .bind(tokens)
        .execute(executor)
        .await?;
    Ok(result.rows_affected())
}

/// `retry_secs` null means dead: the row leaves the claimable index and keeps its error.
const FAIL_SQL: &str = r#"
update osa_events.deliveries d
set status = case when f.retry_secs is null then 'dead' else 'pending' end,
    run_at = case when f.retry_secs is null then now() else now() + make_interval(secs => f.retry_secs) end,
    last_error = f.error,
    claim_token = null,
    claimed_by = null,
    updated_at = now()
from unnest($2::int8[], $3::uuid[], $4::text[], $5::float8[]) as f (position, token, error, retry_secs)
where d.subscription_id = $1
  and d.event_position = f.position
  and d.claim_token = f.token
  and d.status = 'claimed'
"#;

pub(super) async fn fail<'c, X>(
    executor: X,
    subscription: SubscriptionId,
    failures: &[Failure],
) -> Result<u64>
where
    X: Executor<'c, Database = Postgres>,
{
    write_failures(executor, FAIL_SQL, subscription, failures).await
}

/// Runs `statement` (`FAIL_SQL` or `DEFER_SQL`) for `failures`: their fences, their errors as
/// stored (NULs replaced), and their retry delays in seconds (null for none).
async fn write_failures<'c, X>(
    executor: X,
    statement: &'static str,
    subscription: SubscriptionId,
    failures: &[Failure],
) -> Result<u64>
where
    X: Executor<'c, Database = Postgres>,
{
    if failures.is_empty() {
        return Ok(0);
    }
    let (positions, tokens) = split(failures.iter().map(|failure| failure.fence));
    let stored: Vec<_> = failures.iter().map(Failure::stored_error).collect();
    let errors: Vec<&str> = stored.iter().map(AsRef::as_ref).collect();
    let retry_secs: Vec<Option<f64>> = failures
        .iter()
        .map(|failure| failure.retry_in.map(|delay| delay.as_secs_f64()))
        .collect();
    let result = sqlx::query(statement)
        .bind(subscription.0)
        .bind(positions)
        .bind(tokens)
        .bind(errors)
        .bind(retry_secs)
        .execute(executor)
        .await?;
    Ok(result.rows_affected())
}

const EXTEND_SQL: &str = r#"
update osa_events.deliveries d
set run_at = now() + make_interval(secs => $4), updated_at = now()
from unnest($2::int8[], $3::uuid[]) as held (position, token)
where d.subscription_id = $1
  and d.event_position = held.position
  and d.claim_token = held.token
  and d.status = 'claimed'
returning d.event_position
"#;

pub(super) async fn extend<'c, X>(
    executor: X,
    subscription: SubscriptionId,
    claims: &[Fence],
    claim_timeout: Duration,
) -> Result<Vec<i64>>
where
    X: Executor<'c, Database = Postgres>,
{
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let (positions, tokens) = split(claims.iter().copied());
    let held: Vec<(i64,)> = sqlx::query_as(EXTEND_SQL)
        .bind(subscription.0)
        .bind(positions)
        .bind(tokens)
        .bind(claim_timeout.as_secs_f64())
        .fetch_all(executor)
        .await?;
    Ok(held.into_iter().map(|(position,)| position).collect())
}

/// A released claim is due at once and its attempt is given back: the handler never finished it
/// (shutdown), so it should not count against the retries.
const RELEASE_SQL: &str = r#"
update osa_events.deliveries d
set status = 'pending',
    run_at = now(),
    attempts = greatest(d.attempts - 1, 0),
    claim_token = null,
    claimed_by = null,
    updated_at = now()
from unnest($2::int8[], $3::uuid[]) as held (position, token)
where d.subscription_id = $1
  and d.event_position = held.position
  and d.claim_token = held.token
  and d.status = 'claimed'
"#;

pub(super) async fn release<'c, X>(
    executor: X,
    subscription: SubscriptionId,
    claims: &[Fence],
) -> Result<u64>
where
    X: Executor<'c, Database = Postgres>,
{
    if claims.is_empty() {
        return Ok(0);
    }
    let (positions, tokens) = split(claims.iter().copied());
    let result = sqlx::query(RELEASE_SQL)
        .bind(subscription.0)
        .bind(positions)
        .bind(tokens)
        .execute(executor)
        .await?;
    Ok(result.rows_affected())
}

/// A deferred claim is pending again after its delay, keeps its reason as the last error, and its
/// attempt is given back: this process could not take it yet, which is not the event's failure.
const DEFER_SQL: &str = r#"
update osa_events.deliveries d
set status = 'pending',
    run_at = now() + make_interval(secs => coalesce(f.retry_secs, 0)),
    attempts = greatest(d.attempts - 1, 0),
    last_error = f.error,
    claim_token = null,
    claimed_by = null,
    updated_at = now()
from unnest($2::int8[], $3::uuid[], $4::text[], $5::float8[]) as f (position, token, error, retry_secs)
where d.subscription_id = $1
  and d.event_position = f.position
  and d.claim_token = f.token
  and d.status = 'claimed'
"#;

pub(super) async fn defer<'c, X>(
    executor: X,
    subscription: SubscriptionId,
    deferred: &[Failure],
) -> Result<u64>
where
    X: Executor<'c, Database = Postgres>,
{
    write_failures(executor, DEFER_SQL, subscription, deferred).await
}
