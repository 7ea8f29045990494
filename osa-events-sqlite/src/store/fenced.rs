//! Writes about claimed deliveries, each fenced by claim token and batched into one statement.
//!
//! The fences of a batch are bound as one JSON array of `[position, token]` pairs and read with
//! `json_each`, so one statement (prepared once per connection) serves any batch size. A row
//! whose token no longer matches (its claim expired and was taken over) is not touched.

use std::time::Duration;

use sqlx::{Executor, Sqlite, SqliteConnection};

use osa_events_core::Result;
use osa_events_core::store::{Failure, Fence, SubscriptionId};

/// The fences as JSON: `[[position, "token"], ...]`, tokens as stored (32 hex digits).
pub(crate) fn fences_json(fences: impl Iterator<Item = Fence>) -> String {
    let pairs: Vec<(i64, String)> = fences
        .map(|fence| (fence.position, fence.token.simple().to_string()))
        .collect();
    serde_json::to_string(&pairs).expect("fences serialize")
}

/// Deletes the claimed deliveries of `?1` whose tokens still match (`?2`: the fences); the
/// statement's change count is how many.
pub const COMPLETE_SQL: &str = r#"
delete from deliveries
where subscription_id = ?1 and status = 'claimed'
  and (event_position, claim_token) in (select value ->> 0, value ->> 1 from json_each(?2))
"#;

pub(crate) async fn complete<'c, X>(
    executor: X,
    subscription: SubscriptionId,
    done: &[Fence],
) -> Result<u64>
where
    X: Executor<'c, Database = Sqlite>,
{
    if done.is_empty() {
        return Ok(0);
    }
    written(
        executor,
        COMPLETE_SQL,
        subscription,
        fences_json(done.iter().copied()),
    )
    .await
}

/// Runs `statement` for `subscription` with its `rows` (the JSON of fences or failures); returns
/// how many rows it changed.
async fn written<'c, X>(
    executor: X,
    statement: &'static str,
    subscription: SubscriptionId,
    rows: String,
) -> Result<u64>
where
    X: Executor<'c, Database = Sqlite>,
{
    let done = sqlx::query(statement)
        .bind(subscription.0)
        .bind(rows)
        .execute(executor)
        .await?;
    Ok(done.rows_affected())
}

/// A failure is pending again after its retry delay, or dead when it has none (null): a dead row
/// leaves the claimable index and keeps its error. `?2`: `[[position, "token", "error",
/// retry_seconds or null], ...]`.
const FAIL_SQL: &str = r#"
update deliveries
set status = case when f.retry is null then 'dead' else 'pending' end,
    run_at = unixepoch('subsec') + coalesce(f.retry, 0),
    last_error = f.error,
    claim_token = null,
    claimed_by = null,
    updated_at = unixepoch('subsec')
from (select value ->> 0 as position, value ->> 1 as token, value ->> 2 as error,
             value ->> 3 as retry
      from json_each(?2)) as f
where deliveries.subscription_id = ?1 and deliveries.event_position = f.position
  and deliveries.claim_token = f.token and deliveries.status = 'claimed'
"#;

/// The subscription keeps its latest error, for status.
const LAST_ERROR_SQL: &str = r#"
update subscriptions set last_error = ?2, last_failed_at = unixepoch('subsec') where id = ?1
"#;

/// `failures` as the JSON of `FAIL_SQL` and `DEFER_SQL`.
fn failures_json(failures: &[Failure]) -> String {
    let rows: Vec<serde_json::Value> = failures
        .iter()
        .map(|failure| {
            serde_json::json!([
                failure.fence.position,
                failure.fence.token.simple().to_string(),
                failure.stored_error(),
                failure.retry_in.map(|delay| delay.as_secs_f64()),
            ])
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// Records `failures`, and the last one's error on the subscription when any was written; `conn`
/// should be in a transaction, so both land together.
pub(crate) async fn fail(
    conn: &mut SqliteConnection,
    subscription: SubscriptionId,
    failures: &[Failure],
) -> Result<u64> {
    if failures.is_empty() {
        return Ok(0);
    }
    let written = written(&mut *conn, FAIL_SQL, subscription, failures_json(failures)).await?;
    if written > 0 {
        let last = failures.last().expect("not empty");
        sqlx::query(LAST_ERROR_SQL)
            .bind(subscription.0)
            .bind(last.stored_error())
            .execute(&mut *conn)
            .await?;
    }
    Ok(written)
}

/// Moves the claims' expiry to `?3` seconds from now; returns the positions still held.
const EXTEND_SQL: &str = r#"
update deliveries
set run_at = unixepoch('subsec') + ?3, updated_at = unixepoch('subsec')
from (select value ->> 0 as position, value ->> 1 as token from json_each(?2)) as held
where deliveries.subscription_id = ?1 and deliveries.event_position = held.position
  and deliveries.claim_token = held.token and deliveries.status = 'claimed'
returning event_position
"#;

pub(crate) async fn extend<'c, X>(
    executor: X,
    subscription: SubscriptionId,
    claims: &[Fence],
    claim_timeout: Duration,
) -> Result<Vec<i64>>
where
    X: Executor<'c, Database = Sqlite>,
{
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let held: Vec<(i64,)> = sqlx::query_as(EXTEND_SQL)
        .bind(subscription.0)
        .bind(fences_json(claims.iter().copied()))
        .bind(claim_timeout.as_secs_f64())
        .fetch_all(executor)
        .await?;
    let mut held: Vec<i64> = held.into_iter().map(|(position,)| position).collect();
    held.sort_unstable();
    Ok(held)
}

/// A released claim is due at once and its attempt is given back: the handler never finished it
/// (shutdown), so it should not count against the retries.
const RELEASE_SQL: &str = r#"
update deliveries
set status = 'pending',
    run_at = unixepoch('subsec'),
    attempts = max(attempts - 1, 0),
    claim_token = null,
    claimed_by = null,
    updated_at = unixepoch('subsec')
from (select value ->> 0 as position, value ->> 1 as token from json_each(?2)) as held
where deliveries.subscription_id = ?1 and deliveries.event_position = held.position
  and deliveries.claim_token = held.token and deliveries.status = 'claimed'
"#;

pub(crate) async fn release<'c, X>(
    executor: X,
    subscription: SubscriptionId,
    claims: &[Fence],
) -> Result<u64>
where
    X: Executor<'c, Database = Sqlite>,
{
    if claims.is_empty() {
        return Ok(0);
    }
    written(
        executor,
        RELEASE_SQL,
        subscription,
        fences_json(claims.iter().copied()),
    )
    .await
}

/// A deferred claim is pending again after its delay (none: at once), keeps its reason as the last
/// error, and its attempt is given back: this process could not take it yet, which is not the
/// event's failure.
const DEFER_SQL: &str = r#"
update deliveries
set status = 'pending',
    run_at = unixepoch('subsec') + coalesce(f.retry, 0),
    attempts = max(attempts - 1, 0),
    last_error = f.error,
    claim_token = null,
    claimed_by = null,
    updated_at = unixepoch('subsec')
from (select value ->> 0 as position, value ->> 1 as token, value ->> 2 as error,
             value ->> 3 as retry
      from json_each(?2)) as f
where deliveries.subscription_id = ?1 and deliveries.event_position = f.position
  and deliveries.claim_token = f.token and deliveries.status = 'claimed'
"#;

pub(crate) async fn defer<'c, X>(
    executor: X,
    subscription: SubscriptionId,
    deferred: &[Failure],
) -> Result<u64>
where
    X: Executor<'c, Database = Sqlite>,
{
    if deferred.is_empty() {
        return Ok(0);
    }
    written(executor, DEFER_SQL, subscription, failures_json(deferred)).await
}
