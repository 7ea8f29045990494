//! The crate's error type for start-up, publishing and store operations.
//!
//! Handler code returns [`HandlerError`](crate::HandlerError) instead; this type is what the library
//! itself reports to the application.

use std::borrow::Cow;

/// A specialized `Result` for osa-events operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong outside of a handler: configuration found at start-up, publishing,
/// and talking to the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database returned an error, or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// Running the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

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

    /// Two registered handlers share one name. Names identify subscriptions in the database, so
    /// they must be unique.
    #[error(
        "two handlers are named `{name}` (`{first}` and `{second}`): give one of them another `name = \"...\"`"
    )]
    DuplicateHandlerName {
        /// The shared name.
        name: String,
        /// Where the first handler is defined (its Rust path).
        first: &'static str,
        /// Where the second handler is defined (its Rust path).
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

    /// The process could not install its signal handlers.
    #[error("cannot listen for shutdown signals: {0}")]
    Signal(#[source] std::io::Error),
}
