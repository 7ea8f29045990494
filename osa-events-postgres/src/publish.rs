//! Publishing events inside the caller's transaction (transactional outbox).
//!
//! [`publish`] and its siblings take any sqlx PostgreSQL executor: pass `&mut *tx` and the event,
//! its deliveries and the wake-up notification commit or roll back with the caller's transaction.
//! One statement does it all, so a publish is one round trip whatever the batch size.

use osa_events_core::store::Envelopes;
#[cfg(doc)]
use osa_events_core::{DEFAULT_MAX_PAYLOAD_BYTES, Error};
use osa_events_core::{Event, Outgoing, Published, PublishedEvent, Result};
use sqlx::{Executor, Postgres};
use tracing::Instrument;

/// The channel publishers `NOTIFY` and workers `LISTEN` on; the payload is a subscription id.
pub(crate) const NOTIFY_CHANNEL: &str = "osa_events";

/// Publishes `event` with no routing key, in the caller's transaction; returns its id and the
/// deliveries it got ([`PublishedEvent`]).
///
/// Every subscription of the event's type with no routing-key filter gets a delivery, created in the
/// same statement. Nothing is visible to workers until the transaction commits; a rollback publishes
/// nothing.
///
/// # Examples
///
/// ```no_run
/// # use osa_events::Event;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize)]
/// # #[event(name = "record.published")]
/// # struct RecordPublished { srn: String }
/// # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let mut tx = pool.begin().await?;
/// sqlx::query("insert into records (srn) values ($1)").bind("srn:1").execute(&mut *tx).await?;
/// osa_events::publish(&mut *tx, &RecordPublished { srn: "srn:1".into() }).await?;
/// tx.commit().await?; // the event is delivered if and only if this commits
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Serialize`] if the event cannot be serialized, [`Error::PayloadTooLarge`] if it is over
/// [`DEFAULT_MAX_PAYLOAD_BYTES`], [`Error::NulCharacter`] if a string in it holds a NUL (nothing is
/// written in these cases, and the caller's transaction goes on), [`Error::Database`] if the
/// statement fails (for example when the migrations have not run).
pub async fn publish<'c, X, E>(executor: X, event: &E) -> Result<PublishedEvent>
where
    X: Executor<'c, Database = Postgres>,
    E: Event,
{
    publish_one(executor, Outgoing::new(event)?).await
}

/// Publishes `event` with a routing key, in the caller's transaction; returns its id and the
/// deliveries it got ([`PublishedEvent`]).
///
/// Subscriptions of the event's type whose `routing_key` is this key, or unset, receive it.
///
/// # Errors
///
/// As for [`publish`].
pub async fn publish_routed<'c, X, E>(
    executor: X,
    routing_key: &str,
    event: &E,
) -> Result<PublishedEvent>
where
    X: Executor<'c, Database = Postgres>,
    E: Event,
{
    publish_one(
        executor,
        Outgoing::new(event)?.with_routing_key(routing_key),
    )
    .await
}

async fn publish_one<'c, X>(executor: X, outgoing: Outgoing) -> Result<PublishedEvent>
where
    X: Executor<'c, Database = Postgres>,
{
    let published = publish_batch(executor, std::slice::from_ref(&outgoing)).await?;
    Ok(published.of_one(outgoing.id()))
}

/// Inserts the events, fans them out into one delivery per matching subscription, and notifies
/// idle workers once per subscription, all in one statement. Rows are bound as arrays, so the
/// statement stays the same (and prepared) whatever the batch size, and never nears the 65,535
/// bind-parameter limit.
///
/// An event's due time (`$7` delay in seconds, or `$8` a time in epoch seconds; both null: at once,
/// see [`Due`](osa_events_core::Due)) is computed with the database's `now()`, stored on the event
/// (`deliver_at`) and given to each of its deliveries as `run_at`; a time already past is due now.
/// A publish whose events are all delayed notifies no one (nothing is due; a worker's poll finds
/// the deliveries when they are); one with any event due now notifies every subscription it gave
/// work, as before. (Publishers may select only `subscription_id` of `deliveries`, see
/// `docs/privileges.md`, so the statement cannot read the new rows' `run_at`.)
///
/// Every event is stamped with its transaction's commit row (`osa_events.current_commit()`, created
/// by the transaction's first publish and numbered when it commits), which gives projections the
/// log's commit order; see the `commit_order` migration.
pub const PUBLISH_SQL: &str = r#"
with new_events as (
    insert into osa_events.events
        (id, event_type, event_version, routing_key, payload, metadata, deliver_at, commit_id, ordering_key)
    select id, event_type, event_version, routing_key, payload::jsonb, coalesce(metadata::jsonb, '{}'::jsonb),
           coalesce(now() + make_interval(secs => delay_secs), to_timestamp(at_epoch)),
           (select osa_events.current_commit()), ordering_key
    from unnest($1::uuid[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::text[], $7::float8[],
                $8::float8[], $9::text[])
        as input (id, event_type, event_version, routing_key, payload, metadata, delay_secs, at_epoch,
                  ordering_key)
    on conflict (id) do nothing
    returning position, event_type, routing_key, deliver_at, ordering_key
), fanned_out as (
    -- An ordered subscription's deliveries carry the event's key, and join it in key order
    -- (`deliveries_join_key`): the order the fenced writes lock keys in, so that neither waits for
    -- the other in a cycle. Within a key, in the order the events were given.
    insert into osa_events.deliveries (subscription_id, event_position, run_at, ordering_key)
    select s.id, e.position, greatest(e.deliver_at, now()),
           case when s.ordered is not null then e.ordering_key end
    from new_events e
    join osa_events.subscriptions s
      on s.event_type = e.event_type
     and (s.routing_key is null or s.routing_key = e.routing_key)
     and s.retired_at is null
    order by s.id, e.ordering_key, e.position
    returning subscription_id
), notified as (
    select pg_notify('osa_events', subscription_id::text)
    from (select distinct subscription_id from fanned_out) as woken
    where exists (select 1 from new_events where deliver_at is null or deliver_at <= now())
)
select (select count(*) from new_events) as published,
       (select count(*) from fanned_out) as deliveries,
       (select count(*) from notified) as woken,
       (select array_agg(distinct e.event_type)
          from (select distinct event_type, routing_key from new_events) as e
         where not exists (
             select 1 from osa_events.subscriptions s
             where s.event_type = e.event_type
               and (s.routing_key is null or s.routing_key = e.routing_key)
               and s.retired_at is null)) as unrouted
"#;

/// Publishes many events in one round trip, in the caller's transaction; returns how many were new
/// (events whose id already exists are skipped, not duplicated) and how many deliveries they got.
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
/// # async fn example(pool: sqlx::PgPool) -> Result<(), osa_events::Error> {
/// let batch = (0..100)
///     .map(|i| Outgoing::new(&RecordPublished { srn: format!("srn:{i}") }))
///     .collect::<Result<Vec<_>, _>>()?;
/// let mut tx = pool.begin().await?;
/// let published = osa_events::publish_batch(&mut *tx, &batch).await?;
/// tx.commit().await?;
/// assert_eq!(published.events, 100);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Database`] if the statement fails.
pub async fn publish_batch<'c, X>(executor: X, events: &[Outgoing]) -> Result<Published>
where
    X: Executor<'c, Database = Postgres>,
{
    if events.is_empty() {
        return Ok(Published::new(0, 0));
    }
    let envelopes = Envelopes::stamp(events);
    let published = run_publish(executor, events, envelopes.metadata())
        .instrument(envelopes.span().clone())
        .await;
    envelopes.finish(&published);
    published
}

/// The publish statement for `events`, with their stamped `metadata`.
async fn run_publish<'c, X>(
    executor: X,
    events: &[Outgoing],
    metadata: &[Option<String>],
) -> Result<Published>
where
    X: Executor<'c, Database = Postgres>,
{
    let mut ids = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut versions = Vec::with_capacity(events.len());
    let mut keys = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    let mut ordering_keys = Vec::with_capacity(events.len());
    let mut delays = Vec::with_capacity(events.len());
    let mut times = Vec::with_capacity(events.len());
    for event in events {
        ids.push(event.id());
        types.push(event.event_type());
        versions.push(event.event_version());
        keys.push(event.routing_key());
        payloads.push(event.payload_json());
        ordering_keys.push(event.ordering_key());
        delays.push(event.due().delay_seconds());
        times.push(event.due().at_epoch_seconds());
    }
    let (published, deliveries, _woken, unrouted): (i64, i64, i64, Option<Vec<String>>) =
        sqlx::query_as(PUBLISH_SQL)
            .bind(ids)
            .bind(types)
            .bind(versions)
            .bind(keys)
            .bind(payloads)
            .bind(metadata)
            .bind(delays)
            .bind(times)
            .bind(ordering_keys)
            .fetch_one(executor)
            .await?;
    if let Some(event_types) = unrouted {
        tracing::debug!(
            target: "osa_events::publish",
            ?event_types,
            "published events that reach no handler: no subscription of their type (and routing \
             key) exists yet; handlers see only events published after their runtime first started"
        );
    }
    Ok(Published::new(
        u64::try_from(published).unwrap_or(0),
        u64::try_from(deliveries).unwrap_or(0),
    ))
}
