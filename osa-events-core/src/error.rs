//! The crate's error type for start-up, publishing and store operations.
//!
//! Handler code returns [`HandlerError`](crate::HandlerError) instead; this type is what the library
//! itself reports to the application.

use std::borrow::Cow;

/// A specialized `Result` for osa-events operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A backend's own error, boxed: for PostgreSQL an `sqlx::Error`, reachable with
/// [`downcast_ref`](https://doc.rust-lang.org/std/error/trait.Error.html#method.downcast_ref).
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong outside of a handler: configuration found at start-up, publishing,
/// and talking to the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store's database returned an error, or could not be reached. The source is the
    /// backend's own error: `error.downcast_ref::<sqlx::Error>()` on PostgreSQL.
    #[error("database error: {0}")]
    Database(#[source] BackendError),

    /// No database connection became free within the pool's acquire timeout: the pool is too
    /// small for the load, or connections are held elsewhere. Nothing was written.
    #[error("no database connection became free in time: {0}")]
    PoolTimedOut(#[source] BackendError),

    /// The store's database stayed locked by another writer for longer than the store waits (an
    /// embedded store's busy timeout): another process or connection held its write lock all that
    /// time, in a long transaction or under a heavy load. Nothing was written; the operation can be
    /// tried again. The source is the backend's own error.
    #[error(
        "the database stayed locked by another writer for over {waited:?}, the store's busy timeout \
         (a long transaction elsewhere, a disk slow to sync, or more write load than the file takes); \
         nothing was written: {source}"
    )]
    Busy {
        /// How long the store waited for the lock.
        waited: std::time::Duration,
        /// The backend's error.
        #[source]
        source: BackendError,
    },

    /// A message broker (NATS JetStream, for the JetStream store) returned an error, or could not
    /// be reached. The source is the client's own error.
    #[error("message broker error: {0}")]
    Broker(#[source] BackendError),

    /// Running the store's migrations failed (the source is the backend's migration error).
    #[error("migration failed: {0}")]
    Migrate(#[source] BackendError),

    /// An event could not be serialized to JSON for publishing.
    #[error("cannot serialize event `{event_type}`: {source}")]
    Serialize {
        /// The event's registered name.
        event_type: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// An event's serialized payload is larger than the publish limit; nothing was written.
    #[error(
        "cannot publish `{event_type}`: its payload is {size} bytes, over the limit of {limit} bytes \
         (raise it with `Outgoing::with_max_payload_bytes`, or store the data elsewhere and publish a reference)"
    )]
    PayloadTooLarge {
        /// The event's registered name.
        event_type: &'static str,
        /// The serialized payload's size in bytes.
        size: usize,
        /// The limit in force.
        limit: usize,
    },

    /// A string in an event's payload or metadata (a value or an object key) holds a NUL
    /// character (`'\0'`), which PostgreSQL's `jsonb` cannot store; nothing was written. Found
    /// when the [`Outgoing`](crate::Outgoing) is built, so the caller's transaction is not aborted
    /// by the server's error.
    #[error(
        "cannot publish `{event_type}`: its {part} holds a NUL character (\\u0000) at `{path}`, \
         which PostgreSQL cannot store in jsonb (remove or replace it before publishing)"
    )]
    NulCharacter {
        /// The event's registered name.
        event_type: &'static str,
        /// `"payload"` or `"metadata"`.
        part: &'static str,
        /// Where the first NUL is, as a JSON path from the root `$`: `$.items[2].name`, or
        /// `$.tags["a\u0000b"]` for a key.
        path: String,
    },

    /// An event's ordering key is empty, longer than
    /// [`MAX_ORDERING_KEY_BYTES`](crate::MAX_ORDERING_KEY_BYTES) or holds a NUL
    /// character; nothing was written. Found when the [`Outgoing`](crate::Outgoing) is built.
    #[error("cannot publish `{event_type}`: its ordering key {reason}")]
    InvalidOrderingKey {
        /// The event's registered name.
        event_type: &'static str,
        /// What is wrong with the key.
        reason: String,
    },

    /// An event's delivery delay ([`Outgoing::deliver_after`](crate::Outgoing::deliver_after),
    /// [`Outgoing::deliver_at`](crate::Outgoing::deliver_at)) is over
    /// [`MAX_DELIVERY_DELAY`](crate::MAX_DELIVERY_DELAY); found when the `Outgoing` is
    /// built, so nothing was written.
    #[error(
        "cannot publish `{event_type}`: its delivery delay of {} is over the limit of {} \
         (a time in milliseconds passed as seconds, or an overflowing computation?)",
        in_days(*delay), in_days(*limit)
    )]
    DeliveryDelayTooLong {
        /// The event's registered name.
        event_type: &'static str,
        /// The delay asked for (for a time, its distance from this process's clock).
        delay: std::time::Duration,
        /// The limit in force.
        limit: std::time::Duration,
    },

    /// Two registered handlers share one name. Names identify subscriptions in the database, so
    /// they must be unique.
    #[error(
        "two handlers are named `{name}` (`{first}` and `{second}`): give one of them another `name = \"...\"`"
    )]
    DuplicateHandlerName {
        /// The shared name.
        name: String,
        /// Where the first handler is defined (its Rust path; with ` (handler_instance)` for an
        /// instance of [`RuntimeBuilder::handler_instance`](crate::RuntimeBuilder::handler_instance)).
        first: &'static str,
        /// Where the second handler is defined (as `first`).
        second: &'static str,
    },

    /// A handler takes `State<T>`, but no `T` was registered in [`Resources`](crate::Resources).
    #[error(
        "handler `{handler}` needs `State<{type_name}>`, but `Resources` has no `{type_name}`: add it with `Resources::new().with(..)`"
    )]
    MissingResource {
        /// The handler's name.
        handler: String,
        /// The Rust type that is missing.
        type_name: &'static str,
    },

    /// The runtime was asked to select or exclude a handler name that no handler has.
    #[error("no handler is named `{name}` (known handlers: {known})")]
    UnknownHandler {
        /// The name that was asked for.
        name: String,
        /// The names of every registered handler, comma-separated.
        known: String,
    },

    /// The runtime was started with no handler to run (none registered, or all excluded).
    #[error(
        "no handler to run: register one with #[event_handler] or relax the builder's selection"
    )]
    NoHandlers,

    /// A handler's subscription is stored with another event type or routing key than this
    /// process declares for it, at a revision this process may not overwrite (registration changes
    /// nothing then, for any handler). The details, both sides and the fix are in the
    /// [`SubscriptionConflict`].
    ///
    /// Two causes: an older version of the application restarting after a newer one re-pointed
    /// the subscription (a rolling deploy), or two applications sharing the database with
    /// handlers of the same name (give each its own [`namespace`](crate::RuntimeBuilder::namespace)).
    /// A deliberate change is made with [`RuntimeBuilder::repoint`](crate::RuntimeBuilder::repoint)
    /// and a higher revision, or under a new handler name; the handler guide ("Changing what a
    /// handler subscribes to") gives the deploy procedure.
    #[error("{0}")]
    SubscriptionConflict(Box<SubscriptionConflict>),

    /// A configuration value is out of its allowed range.
    #[error("invalid configuration: {0}")]
    Config(Cow<'static, str>),

    /// A projection's leadership was lost (its session ended, or the store deposed it): the
    /// batch wrote nothing, and the runner follows until it can lead again.
    #[error("this process no longer leads projection `{projection}`")]
    NotLeader {
        /// The projection's name.
        projection: String,
    },

    /// A projection's event types changed since its checkpoint was built: events of an added
    /// type before the checkpoint were never applied, and would never be.
    #[error(
        "projection `{projection}` now reads {now:?}, but its checkpoint was built reading \
         {stored:?}: the events of the added types before the checkpoint were never applied. \
         Rebuild it (`reset_projection(.., ResetTo::Beginning)` with the read model cleared), or \
         accept that it applies them only from here (`ProjectionStore::acknowledge_event_types`)"
    )]
    ProjectionEventTypesChanged {
        /// The projection's (stored) name.
        projection: String,
        /// The event types its checkpoint was built from.
        stored: Vec<String>,
        /// The event types it reads now.
        now: Vec<String>,
    },

    /// The process could not install its signal handlers.
    #[error("cannot listen for shutdown signals: {0}")]
    Signal(#[source] std::io::Error),

    /// A handler returned [`HandlerError::fatal`](crate::HandlerError::fatal), so the runtime
    /// stopped: what [`Runtime::run`](crate::Runtime::run) returns after its graceful shutdown.
    /// The deliveries of the call were given back unfailed (due at once, the attempt not counted,
    /// the error kept as their last error); `source` is the handler's own error, reachable with
    /// `downcast_ref`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(store: osa_events::PgStore) -> Result<(), osa_events::Error> {
    /// match osa_events::run_all_handlers(store, osa_events::Resources::new()).await {
    ///     Err(osa_events::Error::Fatal { handler, .. }) => {
    ///         eprintln!("handler `{handler}` stopped the runtime; fix it before restarting");
    ///         std::process::exit(2);
    ///     }
    ///     other => other,
    /// }
    /// # }
    /// ```
    #[error(
        "handler `{handler}` stopped the runtime with a fatal error at `{event_type}` event \
         {event_id} (position {position}); its deliveries were given back, not failed: {source}"
    )]
    Fatal {
        /// The handler's name.
        handler: String,
        /// The event's type name.
        event_type: String,
        /// The event's id: for a batch handler, of the first event of the call.
        event_id: uuid::Uuid,
        /// The event's position in the log: for a batch handler, of the first event of the call.
        position: i64,
        /// The error the handler gave [`HandlerError::fatal`](crate::HandlerError::fatal).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// The backend's own error behind [`Database`](Self::Database),
    /// [`PoolTimedOut`](Self::PoolTimedOut), [`Busy`](Self::Busy), [`Broker`](Self::Broker) or
    /// [`Migrate`](Self::Migrate), if it is an `E`: for
    /// example `error.backend::<sqlx::Error>()` to look at PostgreSQL's error code.
    pub fn backend<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            Error::Database(source)
            | Error::PoolTimedOut(source)
            | Error::Migrate(source)
            | Error::Broker(source)
            | Error::Busy { source, .. } => source.downcast_ref::<E>(),
            _ => None,
        }
    }

    /// The variant's name in snake case: a low-cardinality error type for spans (`error.type`)
    /// and metrics.
    pub(crate) fn kind_name(&self) -> &'static str {
        match self {
            Error::Database(_) => "database",
            Error::PoolTimedOut(_) => "pool_timed_out",
            Error::Migrate(_) => "migrate",
            Error::Busy { .. } => "busy",
            Error::Broker(_) => "broker",
            Error::Serialize { .. } => "serialize",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::NulCharacter { .. } => "nul_character",
            Error::InvalidOrderingKey { .. } => "invalid_ordering_key",
            Error::DeliveryDelayTooLong { .. } => "delivery_delay_too_long",
            Error::DuplicateHandlerName { .. } => "duplicate_handler_name",
            Error::MissingResource { .. } => "missing_resource",
            Error::UnknownHandler { .. } => "unknown_handler",
            Error::NoHandlers => "no_handlers",
            Error::SubscriptionConflict(_) => "subscription_conflict",
            Error::Config(_) => "config",
            Error::NotLeader { .. } => "not_leader",
            Error::ProjectionEventTypesChanged { .. } => "projection_event_types_changed",
            Error::Signal(_) => "signal",
            Error::Fatal { .. } => "fatal",
        }
    }
}

/// `duration` in whole days and the rest (`3650 days`, `3650 days 1s`): humantime's years and
/// months are of 365.25 and 30.44 days, which would make the limit read `9years 11months ...`.
fn in_days(duration: std::time::Duration) -> String {
    const DAY: u64 = 24 * 60 * 60;
    let days = duration.as_secs() / DAY;
    let rest = duration - std::time::Duration::from_secs(days * DAY);
    match (days, rest.is_zero()) {
        (0, _) => humantime::format_duration(rest).to_string(),
        (days, true) => format!("{days} days"),
        (days, false) => format!("{days} days {}", humantime::format_duration(rest)),
    }
}

/// sqlx's errors, for the sqlx-based stores and for applications that use sqlx themselves (so
/// `?` on an sqlx result works in a function returning [`Result`]): a pool that timed out is
/// [`Error::PoolTimedOut`], everything else [`Error::Database`].
#[cfg(feature = "sqlx")]
impl From<sqlx_core::Error> for Error {
    fn from(error: sqlx_core::Error) -> Self {
        match error {
            sqlx_core::Error::PoolTimedOut => Error::PoolTimedOut(Box::new(error)),
            error => Error::Database(Box::new(error)),
        }
    }
}

/// A failed migration of an sqlx-based store is [`Error::Migrate`].
#[cfg(feature = "sqlx")]
impl From<sqlx_core::migrate::MigrateError> for Error {
    fn from(error: sqlx_core::migrate::MigrateError) -> Self {
        Error::Migrate(Box::new(error))
    }
}

/// A registration refused by the store, in [`Error::SubscriptionConflict`]: what is stored under a
/// handler's name, and what this process declared for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionConflict {
    /// The subscription's stored name: the handler's name, as `namespace@name` in a
    /// [namespace](crate::RuntimeBuilder::namespace).
    pub handler: String,
    /// The event type the subscription is stored with.
    pub stored_event_type: String,
    /// The routing-key filter it is stored with (`None`: every key).
    pub stored_routing_key: Option<String>,
    /// The revision it is stored with.
    pub stored_revision: u32,
    /// The event type this process declares.
    pub event_type: String,
    /// The routing-key filter this process declares.
    pub routing_key: Option<String>,
    /// The revision this process declares (1 unless re-pointed).
    pub revision: u32,
}

/// Both sides, and the fix that fits the case.
impl std::fmt::Display for SubscriptionConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let filter = |key: Option<&str>| match key {
            Some(key) => format!("routing key `{key}`"),
            None => "any routing key".to_owned(),
        };
        // `@` is in neither a namespace nor a handler name, so the split is unambiguous.
        let (namespace, name) = match self.handler.split_once('@') {
            Some((namespace, name)) => (format!(" in namespace `{namespace}`"), name),
            None => (String::new(), self.handler.as_str()),
        };
        let stored_revision = self.stored_revision;
        write!(
            f,
            "handler `{name}`{namespace} is subscribed to `{}` with {} (revision {stored_revision}) \
             in the database, but this process subscribes it to `{}` with {} (revision {}): ",
            self.stored_event_type,
            filter(self.stored_routing_key.as_deref()),
            self.event_type,
            filter(self.routing_key.as_deref()),
            self.revision,
        )?;
        let next = stored_revision.saturating_add(1);
        if self.revision < stored_revision {
            write!(
                f,
                "a newer deployment re-pointed it at revision {stored_revision}, and this process \
                 runs an older version of the handler: finish the deploy instead of restarting old \
                 processes (to go back on purpose, re-point with \
                 `RuntimeBuilder::repoint(\"{name}\", {next})`)"
            )
        } else {
            write!(
                f,
                "to change it on purpose, re-point it with `RuntimeBuilder::repoint(\"{name}\", \
                 {next})` or deploy the change under a new handler `name`; if another application \
                 with a handler of this name shares the database, give each application its own \
                 `RuntimeBuilder::namespace`"
            )
        }
    }
}
