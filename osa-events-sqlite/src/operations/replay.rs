//! Replay: delivering a stretch of the log again to one handler, a chunk per write transaction.
//!
//! The copy ([`copy`]) is shared with the backfill of a new subscription: it reads the next chunk
//! of the log in position order, keeps the events the subscription would receive (its type, the
//! routing key, the time window), and inserts a pending delivery for each one that has none (an
//! open delivery or a dead letter of the same event stays as it is, and is counted as skipped).
//! A step is one short write transaction, so a publisher waits for it at most that long.

use sqlx::SqliteConnection;

use super::{SqliteStore, Subscribed, count, epoch_seconds, subscribed};
use osa_events_core::operations::{Replay, ReplayStep};
use osa_events_core::{Error, Result};

/// The chunk of the log a copy reads: `?2` after, `?3` through (inclusive), `?4` chunk; and the
/// events of it the subscription takes: `?5` event type, `?6` routing key (null: any), `?7`/`?8`
/// published at or after / before (epoch seconds, null: any).
macro_rules! chunk {
    () => {
        r#"
with examined as (
    select e.position, e.event_type, e.routing_key, e.created_at, e.deliver_at, e.ordering_key
    from events e
    where e.position > ?2 and e.position <= ?3
    order by e.position
    limit ?4
), matching as (
    select x.position, x.deliver_at, x.ordering_key from examined x
    where x.event_type = ?5
      and (?6 is null or x.routing_key = ?6)
      and (?7 is null or x.created_at >= ?7)
      and (?8 is null or x.created_at < ?8)
)"#
    };
}

/// The last position of the chunk (null: nothing left in the range) and how many of its events
/// match. `?1` is not used, but counted (SQLite counts parameters up to the highest number), so
/// both statements take the same parameters.
const EXAMINE_SQL: &str = concat!(
    chunk!(),
    r#"
select (select max(position) from examined), (select count(*) from matching)
"#
);

/// A pending delivery for subscription `?1` of each matching event it has no row of, due at `?9`
/// (epoch seconds, null: now), or at the event's own due time when that is later (a delayed event,
/// see `Outgoing::deliver_after`): a copy never delivers a delayed event early.
pub(super) const COPY_SQL: &str = concat!(
    chunk!(),
    r#"
insert into deliveries (subscription_id, event_position, run_at, ordering_key)
select ?1, m.position, max(coalesce(?9, unixepoch('subsec')), coalesce(m.deliver_at, 0)),
       case when (select s.ordered from subscriptions s where s.id = ?1) is not null
            then m.ordering_key end
from matching m
where true
order by m.position
on conflict (subscription_id, event_position) do nothing
"#
);

const HEAD_SQL: &str = "select coalesce(max(position), 0) from events";

/// What one copy did: the last position read (`None`: nothing left in the range), matching
/// events, deliveries created.
pub(super) struct Copied {
    pub(super) last_read: Option<i64>,
    pub(super) matching: u64,
    pub(super) inserted: u64,
}

/// Which events of a chunk a copy takes, beyond the subscription's event type.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Wanted<'a> {
    /// Only this routing key (`None`: any).
    pub(super) routing_key: Option<&'a str>,
    /// Only events published at or after this time (epoch seconds).
    pub(super) published_after: Option<f64>,
    /// Only events published before this time (epoch seconds).
    pub(super) published_before: Option<f64>,
}

/// Copies the matching events of the next `chunk` of the log in `(after, through]` into
/// `subscription`'s deliveries, due at `due_at` (epoch seconds; `None`: now); `conn` must be in
/// a write transaction, so both statements read the same log.
pub(super) async fn copy(
    conn: &mut SqliteConnection,
    subscription: &Subscribed,
    (after, through): (i64, i64),
    chunk: u32,
    wanted: Wanted<'_>,
    due_at: Option<f64>,
) -> Result<Copied> {
    macro_rules! bind_chunk {
        ($query:expr) => {
            $query
                .bind(subscription.id)
                .bind(after)
                .bind(through)
                .bind(i64::from(chunk))
                .bind(&subscription.event_type)
                .bind(wanted.routing_key)
                .bind(wanted.published_after)
                .bind(wanted.published_before)
        };
    }
    let (last_read, matching): (Option<i64>, i64) = bind_chunk!(sqlx::query_as(EXAMINE_SQL))
        .fetch_one(&mut *conn)
        .await?;
    let inserted = if matching > 0 {
        bind_chunk!(sqlx::query(COPY_SQL))
            .bind(due_at)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    } else {
        0
    };
    Ok(Copied {
        last_read,
        matching: count(matching),
        inserted,
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

/// One step of `replay`; wakes the handler's workers when it delivered anything.
pub(super) async fn step(
    store: &SqliteStore,
    replay: &Replay,
    after: i64,
    end: Option<i64>,
) -> Result<ReplayStep> {
    let chunk = replay.checked_chunk()?;
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
    let subscription = subscribed(&mut tx, &replay.handler).await?;
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
    let wanted = Wanted {
        routing_key: routing_key(&subscription, replay)?,
        published_after: replay.published_after.map(epoch_seconds),
        published_before: replay.published_before.map(epoch_seconds),
    };
    let end = match end.or(replay.through_position) {
        Some(end) => end,
        None => sqlx::query_scalar(HEAD_SQL).fetch_one(&mut *tx).await?,
    };
    let copied = copy(&mut tx, &subscription, (after, end), chunk, wanted, None).await?;
    tx.commit().await?;
    if copied.inserted > 0 {
        store.wake_subscription(subscription.id());
    }
    let through = copied.last_read.unwrap_or(end).max(after);
    Ok(ReplayStep {
        delivered: copied.inserted,
        skipped: copied.matching - copied.inserted,
        through,
        end,
        done: through >= end || copied.last_read.is_none(),
    })
}
