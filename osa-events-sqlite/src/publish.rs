//! Publishing events inside the caller's transaction (transactional outbox).
//!
//! [`publish`] and its siblings take the caller's connection (`&mut tx`, a transaction begun with
//! [`SqliteStore::begin`](crate::SqliteStore::begin)): the events and their deliveries commit or
//! roll back with it. Two statements do it whatever the batch size: one inserts the events (bound
//! as one JSON array), one fans them out into deliveries. Payloads and metadata are stored in the
//! form PostgreSQL's `jsonb` returns them, so a handler receives the same text on every store.

use osa_events_core::store::{Envelopes, jsonb_text};
#[cfg(doc)]
use osa_events_core::{DEFAULT_MAX_PAYLOAD_BYTES, Error};
use osa_events_core::{Event, Outgoing, Published, PublishedEvent, Result};
use sqlx::SqliteConnection;
use tracing::Instrument;

use crate::store::wake::note_published;

/// Publishes `event` with no routing key, in the caller's transaction; returns its id and the
/// deliveries it got ([`PublishedEvent`]).
///
/// Every subscription of the event's type with no routing-key filter gets a delivery. Nothing is
/// visible to workers until the transaction commits; a rollback publishes nothing. Workers of this
/// process are woken when it commits; those of other processes find it at their next poll.
///
/// # Examples
///
/// ```no_run
/// # use osa_events::Event;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize)]
/// # #[event(name = "record.published")]
/// # struct RecordPublished { srn: String }
/// # async fn example(store: osa_events::SqliteStore) -> Result<(), Box<dyn std::error::Error>> {
/// let mut tx = store.begin().await?;
/// sqlx::query("insert into records (srn) values (?)").bind("srn:1").execute(&mut *tx).await?;
/// osa_events::sqlite::publish(&mut tx, &RecordPublished { srn: "srn:1".into() }).await?;
/// tx.commit().await?; // the event is delivered if and only if this commits
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Serialize`] if the event cannot be serialized, [`Error::PayloadTooLarge`] if it is over
/// [`DEFAULT_MAX_PAYLOAD_BYTES`], [`Error::NulCharacter`] if a string in it holds a NUL (nothing is
/// written in these cases, and the caller's transaction goes on), [`Error::Database`] if a
/// statement fails (for example when the migrations have not run).
pub async fn publish<E: Event>(conn: &mut SqliteConnection, event: &E) -> Result<PublishedEvent> {
    publish_one(conn, Outgoing::new(event)?).await
}

/// Publishes `event` with a routing key, in the caller's transaction; returns its id and the
/// deliveries it got ([`PublishedEvent`]).
///
/// Subscriptions of the event's type whose `routing_key` is this key, or unset, receive it.
///
/// # Errors
///
/// As for [`publish`].
pub async fn publish_routed<E: Event>(
    conn: &mut SqliteConnection,
    routing_key: &str,
    event: &E,
) -> Result<PublishedEvent> {
    publish_one(conn, Outgoing::new(event)?.with_routing_key(routing_key)).await
}

async fn publish_one(conn: &mut SqliteConnection, outgoing: Outgoing) -> Result<PublishedEvent> {
    let published = publish_batch(conn, std::slice::from_ref(&outgoing)).await?;
    Ok(published.of_one(outgoing.id()))
}

/// Inserts the events of `?1`, a JSON array of `[id (32 hex digits), type, version, routing key,
/// payload text, metadata text, delay seconds, due time (epoch seconds)]`, in the array's order,
/// skipping ids that exist; returns the new positions. Positions are handed out under the write
/// lock, in order.
///
/// An event's due time (`deliver_at`: see [`Due`](osa_events_core::Due); null for one due at once)
/// is computed with the database's clock, `unixepoch('subsec')` plus the delay, or the time asked
/// for.
pub const INSERT_EVENTS_SQL: &str = r#"
insert into events (id, event_type, event_version, routing_key, payload, metadata, deliver_at, ordering_key)
select unhex(value ->> 0), value ->> 1, value ->> 2, value ->> 3, value ->> 4,
       coalesce(value ->> 5, '{}'),
       coalesce(unixepoch('subsec') + (value ->> 6), value ->> 7), value ->> 8
from json_each(?1)
where true
order by key
on conflict (id) do nothing
returning position
"#;

/// One delivery per (new event of `?1`, a JSON array of positions; matching subscription): the
/// subscriptions of the event's type whose routing key is the event's or unset, and not retired.
/// Each is due at its event's due time, or now when that is unset or past; `due` says which.
pub const FAN_OUT_SQL: &str = r#"
insert into deliveries (subscription_id, event_position, run_at, ordering_key)
select s.id, e.position, max(coalesce(e.deliver_at, 0), unixepoch('subsec')),
       case when s.ordered is not null then e.ordering_key end
from events e
join subscriptions s
  on s.event_type = e.event_type
 and (s.routing_key is null or s.routing_key = e.routing_key)
 and s.retired_at is null
where e.position in (select value from json_each(?1))
returning subscription_id, run_at <= unixepoch('subsec') as due
"#;

/// The event types among the new events (`?1`) that no subscription receives, for the DEBUG line.
const UNROUTED_SQL: &str = r#"
select distinct e.event_type
from events e
where e.position in (select value from json_each(?1))
  and not exists (select 1 from subscriptions s
                  where s.event_type = e.event_type
                    and (s.routing_key is null or s.routing_key = e.routing_key)
                    and s.retired_at is null)
order by 1
"#;

/// Publishes many events in the caller's transaction; returns how many were new (events whose id
/// already exists are skipped, not duplicated) and how many deliveries they got.
///
/// An event that matches no subscription is still logged (projections read it), and is reported
/// at DEBUG level under the target `osa_events::publish`.
///
/// # Examples
///
/// ```no_run
/// # use osa_events::{Event, Outgoing};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize)]
/// # #[event(name = "record.published")]
/// # struct RecordPublished { srn: String }
/// # async fn example(store: osa_events::SqliteStore) -> Result<(), osa_events::Error> {
/// let batch = (0..100)
///     .map(|i| Outgoing::new(&RecordPublished { srn: format!("srn:{i}") }))
///     .collect::<Result<Vec<_>, _>>()?;
/// let mut tx = store.begin().await?;
/// let published = osa_events::sqlite::publish_batch(&mut tx, &batch).await?;
/// tx.commit().await.map_err(osa_events::Error::from)?;
/// assert_eq!(published.events, 100);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Database`] if a statement fails.
pub async fn publish_batch(conn: &mut SqliteConnection, events: &[Outgoing]) -> Result<Published> {
    if events.is_empty() {
        return Ok(Published::new(0, 0));
    }
    let envelopes = Envelopes::stamp(events);
    let published = run_publish(conn, events, envelopes.metadata())
        .instrument(envelopes.span().clone())
        .await;
    envelopes.finish(&published);
    published
}

/// The events as the JSON array of [`INSERT_EVENTS_SQL`], payloads and metadata in `jsonb`'s
/// form (text that is not JSON, which no `Outgoing` holds, is kept as written).
pub(crate) fn events_json(events: &[Outgoing], metadata: &[Option<String>]) -> String {
    let rows: Vec<serde_json::Value> = events
        .iter()
        .zip(metadata)
        .map(|(event, metadata)| {
            let payload = event.payload_json();
            serde_json::json!([
                event.id().simple().to_string(),
                event.event_type(),
                event.event_version(),
                event.routing_key(),
                jsonb_text(payload).unwrap_or_else(|| payload.to_owned()),
                metadata
                    .as_deref()
                    .map(|metadata| jsonb_text(metadata).unwrap_or_else(|| metadata.to_owned())),
                event.due().delay_seconds(),
                event.due().at_epoch_seconds(),
                event.ordering_key(),
            ])
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// The publish, in a savepoint of its own: inside the caller's transaction it is undone alone when
/// it fails (the transaction goes on, without it), and outside one it is a transaction of its own,
/// so events are never visible without their deliveries.
async fn run_publish(
    conn: &mut SqliteConnection,
    events: &[Outgoing],
    metadata: &[Option<String>],
) -> Result<Published> {
    let events = events_json(events, metadata);
    sqlx::raw_sql("savepoint osa_events_publish")
        .execute(&mut *conn)
        .await?;
    match insert_and_fan_out(conn, &events).await {
        Ok(published) => {
            sqlx::raw_sql("release osa_events_publish")
                .execute(&mut *conn)
                .await?;
            Ok(published)
        }
        Err(error) => {
            // Best effort: the caller learns the publish's own error either way.
            let _ = sqlx::raw_sql("rollback to osa_events_publish; release osa_events_publish")
                .execute(&mut *conn)
                .await;
            Err(error)
        }
    }
}

/// The statements of a publish of `events` (the JSON of [`INSERT_EVENTS_SQL`]); notes the
/// subscriptions that got deliveries, so the commit wakes their workers.
pub(crate) async fn insert_and_fan_out(
    conn: &mut SqliteConnection,
    events: &str,
) -> Result<Published> {
    let positions: Vec<(i64,)> = sqlx::query_as(INSERT_EVENTS_SQL)
        .bind(events)
        .fetch_all(&mut *conn)
        .await?;
    if positions.is_empty() {
        return Ok(Published::new(0, 0));
    }
    let new = u64::try_from(positions.len()).unwrap_or(u64::MAX);
    let positions = serde_json::to_string(
        &positions
            .iter()
            .map(|(position,)| *position)
            .collect::<Vec<_>>(),
    )
    .expect("positions serialize");
    let delivered: Vec<(i32, bool)> = sqlx::query_as(FAN_OUT_SQL)
        .bind(&positions)
        .fetch_all(&mut *conn)
        .await?;
    let deliveries = u64::try_from(delivered.len()).unwrap_or(u64::MAX);
    // A delayed delivery wakes no one: a worker's poll finds it when it is due.
    let due = delivered.into_iter().filter(|(_, due)| *due);
    note_published(&mut *conn, due.map(|(id, _)| id)).await?;
    if tracing::enabled!(target: "osa_events::publish", tracing::Level::DEBUG) {
        let event_types: Vec<(String,)> = sqlx::query_as(UNROUTED_SQL)
            .bind(&positions)
            .fetch_all(&mut *conn)
            .await?;
        if !event_types.is_empty() {
            let event_types: Vec<String> = event_types.into_iter().map(|(t,)| t).collect();
            tracing::debug!(
                target: "osa_events::publish",
                ?event_types,
                "published events that reach no handler: no subscription of their type (and \
                 routing key) exists yet; handlers see only events published after their runtime \
                 first started"
            );
        }
    }
    Ok(Published::new(new, deliveries))
}
