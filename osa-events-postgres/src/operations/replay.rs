//! Replay: delivering a stretch of the log again to one handler, a chunk per transaction.
//!
//! The copy statement ([`COPY_SQL`]) is shared with the backfill of a new subscription: it reads
//! the next chunk of the log in position order, keeps the events the subscription would receive
//! (its type, the routing key, the time window), and inserts a pending delivery for each one that
//! has none (an open delivery or a dead letter of the same event stays as it is, and is counted
//! as skipped). Publishers are never held up: the copy reads committed events and inserts rows
//! no publish can conflict with (a publish inserts its deliveries before its events are
//! visible).

use super::{PgStore, Subscribed, epoch_seconds, subscribed};
use osa_events_core::operations::{Replay, ReplayStep};
use osa_events_core::{Error, Result};

/// The subscription's row, locked for the copies of one transaction: copies of the same
/// subscription (a replay's chunks, a backfill's steps) take turns, so each sees the deliveries the
/// one before inserted.
pub(super) const LOCK_SUBSCRIPTION_SQL: &str =
    "select 1 from osa_events.subscriptions where id = $1 for no key update";

/// Parameters: `$1` subscription, `$2` after, `$3` through (inclusive), `$4` chunk, `$5` event
/// type, `$6` routing key (null: any), `$7`/`$8` published at or after / before (epoch seconds,
/// null: any), `$9` when the new deliveries are due (epoch seconds, null: now).
///
/// A delayed event (`deliver_at`, see `Outgoing::deliver_after`) whose due time is later than
/// that is copied due at its own time: a copy never delivers a delayed event early, and one whose
/// time has passed is due as any other copied event.
pub(super) const COPY_SQL: &str = r#"
with examined as (
    select e.position, e.event_type, e.routing_key, e.created_at, e.deliver_at, e.ordering_key
    from osa_events.events e
    where e.position > $2 and e.position <= $3
    order by e.position
    limit $4
), matching as (
    select x.position, x.deliver_at, x.ordering_key from examined x
    where x.event_type = $5
      and ($6::text is null or x.routing_key = $6)
      and ($7::float8 is null or x.created_at >= to_timestamp($7))
      and ($8::float8 is null or x.created_at < to_timestamp($8))
), ordered as (
    select s.ordered is not null as ordered from osa_events.subscriptions s where s.id = $1
), inserted as (
    -- An event that has a delivery already is skipped before the insert, not by its conflict:
    -- a keyed delivery joins its key before the insert checks for one (`deliveries_join_key`),
    -- and a skipped one must not. The subscription's row is locked by the statement before
    -- (`LOCK_SUBSCRIPTION_SQL`), so no other copy inserts between this snapshot and this insert.
    insert into osa_events.deliveries (subscription_id, event_position, run_at, ordering_key)
    select $1, m.position, greatest(coalesce(to_timestamp($9::float8), now()), m.deliver_at),
           case when o.ordered then m.ordering_key end
    from matching m cross join ordered o
    where not exists (select 1 from osa_events.deliveries d
                      where d.subscription_id = $1 and d.event_position = m.position)
    order by m.ordering_key, m.position
    on conflict (subscription_id, event_position) do nothing
    returning 1
), woken as (
    select pg_notify('osa_events', $1::text) where exists (select 1 from inserted)
)
select (select max(position) from examined), (select count(*) from matching),
       (select count(*) from inserted), (select count(*) from woken)
"#;

const HEAD_SQL: &str = "select coalesce(max(position), 0) from osa_events.events";

/// What one copy did: the last position read (`None`: nothing left in the range), matching
/// events, deliveries created.
pub(super) struct Copied {
    pub(super) last_read: Option<i64>,
    pub(super) matching: u64,
    pub(super) inserted: u64,
}

/// Runs [`COPY_SQL`] on `conn`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn copy(
    store: &PgStore,
    conn: &mut sqlx::PgConnection,
    subscription: &Subscribed,
    after: i64,
    through: i64,
    chunk: u32,
    routing_key: Option<&str>,
    window: (Option<f64>, Option<f64>),
    due_at: Option<f64>,
) -> Result<Copied> {
    sqlx::query(LOCK_SUBSCRIPTION_SQL)
        .bind(subscription.id)
        .execute(store.ops(&mut *conn))
        .await?;
    let (last_read, matching, inserted, _woken): (Option<i64>, i64, i64, i64) =
        sqlx::query_as(COPY_SQL)
            .bind(subscription.id)
            .bind(after)
            .bind(through)
            .bind(i64::from(chunk))
            .bind(&subscription.event_type)
            .bind(routing_key)
            .bind(window.0)
            .bind(window.1)
            .bind(due_at)
            .fetch_one(store.ops(conn))
            .await?;
    Ok(Copied {
        last_read,
        matching: u64::try_from(matching).unwrap_or(0),
        inserted: u64::try_from(inserted).unwrap_or(0),
    })
}

/// The routing key a replay may use for `subscription`: its own when it has one (a replay
/// cannot send it events of another key), else the replay's filter.
fn routing_key<'a>(subscription: &'a Subscribed, replay: &'a Replay) -> Result<Option<&'a str>> {
    match (&subscription.routing_key, &replay.routing_key) {
        (Some(own), Some(asked)) if own != asked => Err(Error::Config(
            format!(
                "handler `{}` receives routing key `{own}` only, not `{asked}`",
                subscription.name
            )
            .into(),
        )),
        (Some(own), _) => Ok(Some(own)),
        (None, asked) => Ok(asked.as_deref()),
    }
}

pub(super) async fn step(
    store: &PgStore,
    replay: &Replay,
    after: i64,
    end: Option<i64>,
) -> Result<ReplayStep> {
    let chunk = replay.checked_chunk()?;
    let mut tx = store.pool().begin().await?;
    let subscription = subscribed(store, &mut tx, &replay.handler).await?;
    if subscription.retired {
        return Err(Error::Config(
            format!(
                "handler `{}` is retired: nothing is delivered to it",
                subscription.name
            )
            .into(),
        ));
    }
    if let Some(asked) = &replay.event_type
        && *asked != subscription.event_type
    {
        return Err(Error::Config(
            format!(
                "handler `{}` receives `{}` events, not `{asked}`",
                subscription.name, subscription.event_type
            )
            .into(),
        ));
    }
    let key = routing_key(&subscription, replay)?;
    let end = match end.or(replay.through_position) {
        Some(end) => end,
        None => {
            let (head,): (i64,) = sqlx::query_as(HEAD_SQL)
                .fetch_one(store.ops(&mut tx))
                .await?;
            head
        }
    };
    let copied = copy(
        store,
        &mut tx,
        &subscription,
        after,
        end,
        chunk,
        key,
        (
            replay.published_after.map(epoch_seconds),
            replay.published_before.map(epoch_seconds),
        ),
        None,
    )
    .await?;
    tx.commit().await?;
    let through = copied.last_read.unwrap_or(end).max(after);
    Ok(ReplayStep {
        delivered: copied.inserted,
        skipped: copied.matching - copied.inserted,
        through,
        end,
        done: through >= end || copied.last_read.is_none(),
    })
}
