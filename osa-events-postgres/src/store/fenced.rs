//! Writes about claimed deliveries, each fenced by claim token and batched into one statement.
//!
//! The fences of a batch are bound as two parallel arrays (positions, tokens) and joined with
//! `unnest` inside a function of the schema (migration `lean_claims`), so one statement serves any
//! batch size and each row is found by primary key, whatever the statistics say. A row
//! whose token no longer matches (its claim expired and was taken over) is not touched.

use std::time::Duration;

use sqlx::{Executor, Postgres};
use uuid::Uuid;

use osa_events_core::Result;
use osa_events_core::store::{Failure, Fence, SubscriptionId};

/// A function's row count, as the store reports it.
fn count(written: i64) -> u64 {
    u64::try_from(written).unwrap_or(0)
}

pub(super) fn split(fences: impl ExactSizeIterator<Item = Fence>) -> (Vec<i64>, Vec<Uuid>) {
    let mut positions = Vec::with_capacity(fences.len());
    let mut tokens = Vec::with_capacity(fences.len());
    for fence in fences {
        positions.push(fence.position);
        tokens.push(fence.token);
    }
    (positions, tokens)
}

/// Deletes the claimed deliveries whose tokens still match; returns how many.
///
/// Every fenced write is a function of the schema (migration `lean_claims`), so its plan is one
/// primary-key lookup per fence whatever the table's statistics say.
pub const COMPLETE_SQL: &str = "select osa_events.complete_deliveries($1, $2, $3)";

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
    let written: i64 = sqlx::query_scalar(COMPLETE_SQL)
        .bind(subscription.0)
        .bind(positions)
        .bind(tokens)
        .fetch_one(executor)
        .await?;
    Ok(count(written))
}

/// A failure with no retry delay (null) is dead: the row leaves the claimable index and keeps
/// its error.
const FAIL_SQL: &str = "select osa_events.fail_deliveries($1, $2, $3, $4, $5)";

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
    let written: i64 = sqlx::query_scalar(statement)
        .bind(subscription.0)
        .bind(positions)
        .bind(tokens)
        .bind(errors)
        .bind(retry_secs)
        .fetch_one(executor)
        .await?;
    Ok(count(written))
}

/// Moves the claims' expiry; returns the positions still held.
const EXTEND_SQL: &str = "select * from osa_events.extend_deliveries($1, $2, $3, $4)";

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
const RELEASE_SQL: &str = "select osa_events.release_deliveries($1, $2, $3)";

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
    let written: i64 = sqlx::query_scalar(RELEASE_SQL)
        .bind(subscription.0)
        .bind(positions)
        .bind(tokens)
        .fetch_one(executor)
        .await?;
    Ok(count(written))
}

/// A deferred claim is pending again after its delay, keeps its reason as the last error, and its
/// attempt is given back: this process could not take it yet, which is not the event's failure.
const DEFER_SQL: &str = "select osa_events.defer_deliveries($1, $2, $3, $4, $5)";

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
