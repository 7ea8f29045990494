//! Publishing events inside the caller's transaction (transactional outbox).
//!
//! [`publish`] and its siblings take any sqlx PostgreSQL executor: pass `&mut *tx` and the event,
//! its deliveries and the wake-up notification commit or roll back with the caller's transaction.
//! One statement does it all, so a publish is one round trip whatever the batch size.

use serde_json::value::RawValue;
use sqlx::{Executor, Postgres};
use uuid::Uuid;

use crate::{Error, Event, Result};

/// The channel publishers `NOTIFY` and workers `LISTEN` on; the payload is a subscription id.
pub(crate) const NOTIFY_CHANNEL: &str = "osa_events";

/// The default largest serialized payload [`Outgoing`] accepts: 1 MiB. Events are rows read on
/// every claim; large documents belong in a table or object store, referenced by the event.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// One event ready to publish: its payload serialized, with an id, optional routing key and metadata.
///
/// Build one when you need more than [`publish`] offers: a chosen id (for idempotent retries of your
/// own publishing code), metadata such as a correlation id, or a batch for [`publish_batch`].
///
/// # Examples
///
/// ```
/// use osa_events::{Event, Outgoing};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize)]
/// #[event(name = "record.published")]
/// struct RecordPublished { srn: String }
///
/// let outgoing = Outgoing::new(&RecordPublished { srn: "srn:1".into() })?
///     .with_routing_key("vector")
///     .with_metadata(serde_json::json!({ "correlation_id": "req-42" }));
/// assert_eq!(outgoing.event_type(), "record.published");
/// # Ok::<(), osa_events::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Outgoing {
    id: Uuid,
    event_type: &'static str,
    event_version: i32,
    routing_key: Option<String>,
    payload: Box<RawValue>,
    metadata: Option<Box<RawValue>>,
}

impl Outgoing {
    /// Serializes `event` with a fresh random id, no routing key and empty metadata.
    ///
    /// # Errors
    ///
    /// [`Error::Serialize`] when serde cannot serialize the event (e.g. a map with non-string keys),
    /// [`Error::PayloadTooLarge`] when the JSON is over [`DEFAULT_MAX_PAYLOAD_BYTES`].
    pub fn new<E: Event>(event: &E) -> Result<Self> {
        Self::with_max_payload_bytes(event, DEFAULT_MAX_PAYLOAD_BYTES)
    }

    /// Serializes `event` like [`new`](Self::new), with another payload size limit.
    ///
    /// # Errors
    ///
    /// As for [`new`](Self::new), with `max_payload_bytes` as the limit.
    pub fn with_max_payload_bytes<E: Event>(event: &E, max_payload_bytes: usize) -> Result<Self> {
        let payload =
            serde_json::value::to_raw_value(event).map_err(|source| Error::Serialize {
                event_type: E::NAME,
                source,
            })?;
        if payload.get().len() > max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                event_type: E::NAME,
                size: payload.get().len(),
                limit: max_payload_bytes,
            });
        }
        Ok(Self {
            id: Uuid::new_v4(),
            event_type: E::NAME,
            event_version: i32::try_from(E::VERSION).unwrap_or(i32::MAX),
            routing_key: None,
            payload,
            metadata: None,
        })
    }

    /// Sets the event id. Publishing an id that already exists is a no-op, so a caller that retries
    /// its own publish with the same id cannot create a duplicate.
    #[must_use]
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Sets the routing key: only handlers with this `routing_key` (or none) receive the event.
    #[must_use]
    pub fn with_routing_key(mut self, routing_key: impl Into<String>) -> Self {
        self.routing_key = Some(routing_key.into());
        self
    }

    /// Sets the metadata stored beside the payload (correlation id, causation id, trace context).
    /// Handlers see it through [`Ctx::metadata`](crate::Ctx::metadata).
    #[must_use]
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        // A `Value` always serializes.
        self.metadata = serde_json::value::to_raw_value(&metadata).ok();
        self
    }

    /// The event id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The event type's registered name.
    pub fn event_type(&self) -> &'static str {
        self.event_type
    }

    /// The routing key, if any.
    pub fn routing_key(&self) -> Option<&str> {
        self.routing_key.as_deref()
    }

    /// The event type's version.
    pub fn event_version(&self) -> i32 {
        self.event_version
    }

    /// The serialized payload (JSON).
    pub fn payload_json(&self) -> &str {
        self.payload.get()
    }

    /// The serialized metadata (JSON), if any was set.
    pub fn metadata_json(&self) -> Option<&str> {
        self.metadata.as_deref().map(RawValue::get)
    }
}

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
/// [`DEFAULT_MAX_PAYLOAD_BYTES`] (nothing is written then), [`Error::Database`] if the statement
/// fails (for example when the migrations have not run).
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
    Ok(PublishedEvent {
        id: outgoing.id,
        is_new: published.events == 1,
        deliveries: published.deliveries,
    })
}

/// Inserts the events, fans them out into one delivery per matching subscription, and notifies
/// idle workers once per subscription, all in one statement. Rows are bound as arrays, so the
/// statement stays the same (and prepared) whatever the batch size, and never nears the 65,535
/// bind-parameter limit.
///
/// Every event is stamped with its transaction's commit row (`osa_events.current_commit()`, created
/// by the transaction's first publish and numbered when it commits), which gives projections the
/// log's commit order; see the `commit_order` migration.
pub const PUBLISH_SQL: &str = r#"
with new_events as (
    insert into osa_events.events (id, event_type, event_version, routing_key, payload, metadata, commit_id)
    select id, event_type, event_version, routing_key, payload::jsonb, coalesce(metadata::jsonb, '{}'::jsonb),
           (select osa_events.current_commit())
    from unnest($1::uuid[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::text[])
        as input (id, event_type, event_version, routing_key, payload, metadata)
    on conflict (id) do nothing
    returning position, event_type, routing_key
), fanned_out as (
    insert into osa_events.deliveries (subscription_id, event_position)
    select s.id, e.position
    from new_events e
    join osa_events.subscriptions s
      on s.event_type = e.event_type
     and (s.routing_key is null or s.routing_key = e.routing_key)
    returning subscription_id
), notified as (
    select pg_notify('osa_events', subscription_id::text)
    from (select distinct subscription_id from fanned_out) as woken
)
select (select count(*) from new_events) as published,
       (select count(*) from fanned_out) as deliveries,
       (select count(*) from notified) as woken,
       (select array_agg(distinct e.event_type) from new_events e
         where not exists (
             select 1 from osa_events.subscriptions s
             where s.event_type = e.event_type
               and (s.routing_key is null or s.routing_key = e.routing_key))) as unrouted
"#;

/// What a publish created: how many events were new, and how many deliveries they got.
///
/// An event reaches only the subscriptions that exist when it is published: a handler registers
/// its subscription when a runtime that runs it starts (`run_all_handlers`), and sees only events
/// published after that. `deliveries == 0` for a new event therefore usually means "published
/// before any handler of its type started" (a projection reads the log itself and still sees it).
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
/// let published = osa_events::publish_batch(&pool, &[Outgoing::new(&RecordPublished { srn: "srn:1".into() })?]).await?;
/// if published.reached_no_handler() {
///     eprintln!("no handler of record.published has started yet");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The events written: those whose id did not exist yet (a repeated id is skipped).
    pub events: u64,
    /// The deliveries created for them: one per (event, matching subscription).
    pub deliveries: u64,
}

impl Published {
    /// Whether new events were written but no handler's subscription matched any of them.
    pub fn reached_no_handler(&self) -> bool {
        self.events > 0 && self.deliveries == 0
    }
}

/// What [`publish`] or [`publish_routed`] created: the event's id, whether it was new, and its
/// deliveries (see [`Published`] for when an event gets none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishedEvent {
    /// The event's id (fresh and random for [`publish`]).
    pub id: Uuid,
    /// Whether the event was written; `false` when an event with this id existed already.
    pub is_new: bool,
    /// The deliveries created for it: one per matching subscription.
    pub deliveries: u64,
}

impl PublishedEvent {
    /// Whether the event was written but no handler's subscription matched it.
    pub fn reached_no_handler(&self) -> bool {
        self.is_new && self.deliveries == 0
    }
}

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
        return Ok(Published {
            events: 0,
            deliveries: 0,
        });
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut versions = Vec::with_capacity(events.len());
    let mut keys = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    let mut metadata = Vec::with_capacity(events.len());
    for event in events {
        ids.push(event.id);
        types.push(event.event_type);
        versions.push(event.event_version);
        keys.push(event.routing_key.as_deref());
        payloads.push(event.payload.get());
        metadata.push(event.metadata.as_deref().map(RawValue::get));
    }
    let (published, deliveries, _woken, unrouted): (i64, i64, i64, Option<Vec<String>>) =
        sqlx::query_as(PUBLISH_SQL)
            .bind(ids)
            .bind(types)
            .bind(versions)
            .bind(keys)
            .bind(payloads)
            .bind(metadata)
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
    Ok(Published {
        events: u64::try_from(published).unwrap_or(0),
        deliveries: u64::try_from(deliveries).unwrap_or(0),
    })
}
