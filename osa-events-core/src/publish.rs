//! What a publish takes and reports, for every store: [`Outgoing`] events, and the
//! [`Published`] / [`PublishedEvent`] counts.
//!
//! Publishing itself is the store's: in the caller's own database transaction for PostgreSQL
//! (`osa_events::publish`), and through a handler's [`Tx`](crate::store::Transaction) on every store
//! that offers transactions.

use std::time::{Duration, SystemTime};

use serde_json::value::RawValue;
use uuid::Uuid;

use crate::{Error, Event, Metadata, Result};

mod nul;

/// The default largest serialized payload [`Outgoing`] accepts: 1 MiB. Events are rows read on
/// every claim; large documents belong in a table or object store, referenced by the event.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The longest ordering key [`Outgoing`] accepts, in bytes of UTF-8: keys name entities (an
/// order id, a tenant and an account), and every ordered delivery carries one in an index.
pub const MAX_ORDERING_KEY_BYTES: usize = 256;

/// The longest delivery delay [`Outgoing::deliver_after`] and [`Outgoing::deliver_at`] accept:
/// 3,650 days (about ten years).
///
/// A longer one is far more likely a mistake (milliseconds passed as seconds, an overflowing
/// computation) than a reminder, and the bound keeps every store's time arithmetic in range.
pub const MAX_DELIVERY_DELAY: Duration = Duration::from_secs(3650 * 24 * 60 * 60);

/// When a published event's deliveries become due: what [`Outgoing::due`] reports, and what a
/// store applies when it creates the deliveries.
///
/// The due time is the store's: a delay is added to the database's clock when the publish's
/// statement runs (PostgreSQL's `now()`, SQLite's `unixepoch('subsec')`, an in-memory store's
/// clock), and a time is compared with that clock, so publishers whose clocks disagree still
/// agree with the workers on when a delivery is due. A delivery is claimed at its first poll at
/// or after its due time (a worker sleeps at most its `poll` between claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Due {
    /// As soon as the publish commits: the default.
    #[default]
    Now,
    /// This long after the publish, by the store's clock.
    After(Duration),
    /// At this wall-clock time, by the store's clock; a time already past is due at once.
    At(SystemTime),
}

/// One event ready to publish: its payload serialized, with an id, optional routing key and metadata.
///
/// Build one when you need more than `osa_events::publish` offers: a chosen id (for idempotent retries of your
/// own publishing code), metadata such as a correlation id, or a batch for `publish_batch`.
///
/// # Examples
///
/// ```
/// use osa_events::{Event, Metadata, Outgoing};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize)]
/// #[event(name = "record.published")]
/// struct RecordPublished { srn: String }
///
/// let outgoing = Outgoing::new(&RecordPublished { srn: "srn:1".into() })?
///     .with_routing_key("vector")
///     .with_metadata(Metadata::new().with_correlation_id("req-42"))?;
/// assert_eq!(outgoing.event_type(), "record.published");
/// # Ok::<(), osa_events::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Outgoing {
    id: Uuid,
    event_type: &'static str,
    event_version: i32,
    routing_key: Option<String>,
    ordering_key: Option<String>,
    payload: Box<RawValue>,
    metadata: Metadata,
    due: Due,
}

impl Outgoing {
    /// Serializes `event` with a fresh id (a time-ordered UUIDv7), no routing key and empty
    /// metadata.
    ///
    /// # Errors
    ///
    /// [`Error::Serialize`] when serde cannot serialize the event (e.g. a map with non-string keys),
    /// [`Error::PayloadTooLarge`] when the JSON is over [`DEFAULT_MAX_PAYLOAD_BYTES`],
    /// [`Error::NulCharacter`] when a string in it holds a NUL character (`'\0'`), which
    /// PostgreSQL's `jsonb` cannot store, [`Error::InvalidOrderingKey`] when the ordering key the
    /// event derives (`#[event(ordering_key = "...")]`) is empty, too long or holds a NUL.
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
        if let Some(path) = nul::find(payload.get()) {
            return Err(Error::NulCharacter {
                event_type: E::NAME,
                part: "payload",
                path,
            });
        }
        let ordering_key = event
            .ordering_key()
            .map(|key| checked_ordering_key(E::NAME, key))
            .transpose()?;
        Ok(Self {
            // Time-ordered (UUIDv7): a log's unique index on ids then grows at its right edge,
            // as the position index does, instead of touching a random page per event.
            id: Uuid::now_v7(),
            event_type: E::NAME,
            event_version: i32::try_from(E::VERSION).unwrap_or(i32::MAX),
            routing_key: None,
            ordering_key,
            payload,
            metadata: Metadata::new(),
            due: Due::Now,
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

    /// Sets the ordering key: handlers declared `ordered` take the events of one key one at a
    /// time, in publish order, and the keys in parallel. It replaces a key the event derives
    /// (`#[event(ordering_key = "...")]`); handlers that are not ordered ignore it. See
    /// the ordering guide (`osa_events::ordering`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOrderingKey`] when the key is empty, longer than
    /// [`MAX_ORDERING_KEY_BYTES`], or holds a NUL character.
    ///
    /// # Examples
    ///
    /// ```
    /// use osa_events::{Event, Outgoing};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Event, Serialize, Deserialize)]
    /// #[event(name = "order.shipped")]
    /// struct OrderShipped { order_id: u64 }
    ///
    /// let outgoing = Outgoing::new(&OrderShipped { order_id: 42 })?.with_ordering_key("order-42")?;
    /// assert_eq!(outgoing.ordering_key(), Some("order-42"));
    /// assert!(Outgoing::new(&OrderShipped { order_id: 42 })?.with_ordering_key("").is_err());
    /// # Ok::<(), osa_events::Error>(())
    /// ```
    pub fn with_ordering_key(mut self, ordering_key: impl Into<String>) -> Result<Self> {
        self.ordering_key = Some(checked_ordering_key(self.event_type, ordering_key.into())?);
        Ok(self)
    }

    /// Sets the metadata stored beside the payload (correlation id, causation id, trace context,
    /// extra fields). Handlers see it through [`Ctx::metadata`](crate::Ctx::metadata). A publish
    /// made while an event is handled fills in the causation and correlation ids this leaves
    /// unset (see [`Metadata`]).
    ///
    /// # Errors
    ///
    /// [`Error::NulCharacter`] when a string in `metadata` holds a NUL character (`'\0'`), which
    /// PostgreSQL's `jsonb` cannot store.
    pub fn with_metadata(mut self, metadata: Metadata) -> Result<Self> {
        let json = serde_json::to_string(&metadata).unwrap_or_default();
        if let Some(path) = nul::find(&json) {
            return Err(Error::NulCharacter {
                event_type: self.event_type,
                part: "metadata",
                path,
            });
        }
        self.metadata = metadata;
        Ok(self)
    }

    /// Delays the event's deliveries by `delay`: each becomes due `delay` after the publish, by the
    /// store's clock (PostgreSQL's `now() + delay`, not this process's clock), for reminders,
    /// timeouts and the steps of a saga. A zero delay is due at once.
    ///
    /// The event itself is logged at once, as any event: projections read the log and see it
    /// when its transaction commits; only the handlers' deliveries wait. A replay or backfill that
    /// delivers the event again keeps its due time while it is in the future. A JetStream relay,
    /// which cannot hold a message until it is due, stops before it rather than relay it early
    /// (see the `osa_events::delayed_publish` docs).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use osa_events::{Due, Event, Outgoing};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Event, Serialize, Deserialize)]
    /// # #[event(name = "order.payment_timeout")]
    /// # struct PaymentTimeout { order: u64 }
    ///
    /// let timeout = Outgoing::new(&PaymentTimeout { order: 42 })?
    ///     .deliver_after(Duration::from_secs(15 * 60))?;
    /// assert_eq!(timeout.due(), Due::After(Duration::from_secs(900)));
    /// # Ok::<(), osa_events::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::DeliveryDelayTooLong`] when `delay` is over [`MAX_DELIVERY_DELAY`]; the
    /// `Outgoing` is consumed, and nothing is published.
    pub fn deliver_after(mut self, delay: Duration) -> Result<Self> {
        self.check_delay(delay)?;
        self.due = Due::After(delay);
        Ok(self)
    }

    /// Makes the event's deliveries due at `time`, compared with the store's clock (PostgreSQL's
    /// `now()`): a time already past is due at once. The event itself is logged at once, as
    /// with [`deliver_after`](Self::deliver_after).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use osa_events::{Due, Event, Outgoing};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Event, Serialize, Deserialize)]
    /// # #[event(name = "subscription.renewal_reminder")]
    /// # struct RenewalReminder { account: u64 }
    ///
    /// let renews_at = SystemTime::now() + Duration::from_secs(30 * 24 * 60 * 60);
    /// let reminder = Outgoing::new(&RenewalReminder { account: 7 })?
    ///     .deliver_at(renews_at - Duration::from_secs(7 * 24 * 60 * 60))?;
    /// assert!(matches!(reminder.due(), Due::At(_)));
    /// # Ok::<(), osa_events::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::DeliveryDelayTooLong`] when `time` is more than [`MAX_DELIVERY_DELAY`] after
    /// this process's clock (the one check made with it: the due time itself is the store's).
    pub fn deliver_at(mut self, time: SystemTime) -> Result<Self> {
        if let Ok(delay) = time.duration_since(SystemTime::now()) {
            self.check_delay(delay)?;
        }
        self.due = Due::At(time);
        Ok(self)
    }

    fn check_delay(&self, delay: Duration) -> Result<()> {
        if delay > MAX_DELIVERY_DELAY {
            return Err(Error::DeliveryDelayTooLong {
                event_type: self.event_type,
                delay,
                limit: MAX_DELIVERY_DELAY,
            });
        }
        Ok(())
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

    /// The ordering key, if any: set with [`with_ordering_key`](Self::with_ordering_key) or
    /// derived by the event.
    pub fn ordering_key(&self) -> Option<&str> {
        self.ordering_key.as_deref()
    }

    /// The event type's version.
    pub fn event_version(&self) -> i32 {
        self.event_version
    }

    /// The serialized payload (JSON).
    pub fn payload_json(&self) -> &str {
        self.payload.get()
    }

    /// The metadata set with [`with_metadata`](Self::with_metadata), before a publish stamps
    /// its defaults (see [`Envelopes`](crate::store::Envelopes)).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// When the event's deliveries become due: [`Due::Now`] unless set with
    /// [`deliver_after`](Self::deliver_after) or [`deliver_at`](Self::deliver_at).
    pub fn due(&self) -> Due {
        self.due
    }
}

impl Due {
    /// The delay of [`Due::After`] in seconds, for a store's `now() + delay`; `None` otherwise.
    pub fn delay_seconds(self) -> Option<f64> {
        match self {
            Self::After(delay) => Some(delay.as_secs_f64()),
            Self::Now | Self::At(_) => None,
        }
    }

    /// The time of [`Due::At`] in seconds since the Unix epoch, for a store's timestamp (a time
    /// before 1970, long past, as the epoch); `None` otherwise.
    pub fn at_epoch_seconds(self) -> Option<f64> {
        match self {
            Self::At(time) => Some(
                time.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
            ),
            Self::Now | Self::After(_) => None,
        }
    }
}

/// `key` if it can be stored as an ordering key: not empty, at most [`MAX_ORDERING_KEY_BYTES`],
/// no NUL character (which neither PostgreSQL's `text` nor the keys' index can hold).
fn checked_ordering_key(event_type: &'static str, key: String) -> Result<String> {
    let reason = if key.is_empty() {
        "is empty (an event without a key has none: leave it unset)".to_owned()
    } else if key.len() > MAX_ORDERING_KEY_BYTES {
        format!(
            "is {} bytes long, over the limit of {MAX_ORDERING_KEY_BYTES}",
            key.len()
        )
    } else if key.contains('\0') {
        "holds a NUL character (\\u0000)".to_owned()
    } else {
        return Ok(key);
    };
    Err(Error::InvalidOrderingKey { event_type, reason })
}

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
    /// The counts of a publish, for a store to report.
    pub fn new(events: u64, deliveries: u64) -> Self {
        Self { events, deliveries }
    }

    /// What these counts, of a publish of the one event `id`, say about that event.
    pub fn of_one(self, id: Uuid) -> PublishedEvent {
        PublishedEvent::new(id, self.events == 1, self.deliveries)
    }

    /// Whether new events were written but no handler's subscription matched any of them.
    pub fn reached_no_handler(&self) -> bool {
        self.events > 0 && self.deliveries == 0
    }
}

/// What `publish` or `publish_routed` created: the event's id, whether it was new, and its
/// deliveries (see [`Published`] for when an event gets none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishedEvent {
    /// The event's id (a fresh UUIDv7 unless chosen with [`Outgoing::with_id`]).
    pub id: Uuid,
    /// Whether the event was written; `false` when an event with this id existed already.
    pub is_new: bool,
    /// The deliveries created for it: one per matching subscription.
    pub deliveries: u64,
}

impl PublishedEvent {
    /// The outcome of publishing one event, for a store to report.
    pub fn new(id: Uuid, is_new: bool, deliveries: u64) -> Self {
        Self {
            id,
            is_new,
            deliveries,
        }
    }

    /// Whether the event was written but no handler's subscription matched it.
    pub fn reached_no_handler(&self) -> bool {
        self.is_new && self.deliveries == 0
    }
}
