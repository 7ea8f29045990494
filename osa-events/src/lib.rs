//! Typed, durable event handlers, on an embedded SQLite file ([`SqliteStore`]) or on PostgreSQL
//! ([`PgStore`]).
//!
//! Annotate an async fn with [`#[event_handler]`](macro@event_handler), publish events inside your
//! own database transaction with [`publish`], and call [`run_all_handlers`]: workers claim the
//! events in batches with `FOR UPDATE SKIP LOCKED`, retry failures with backoff, keep long claims
//! alive with heartbeats, and dead-letter what cannot be handled.
//!
//! ```no_run
//! use osa_events::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Event, Serialize, Deserialize, Debug)]
//! #[event(name = "record.published")]
//! pub struct RecordPublished {
//!     pub srn: String,
//! }
//!
//! #[event_handler(name = "index.vector", routing_key = "vector", batch = 64, poll = "500ms", retries = 5)]
//! async fn index_vectors(events: Batch<RecordPublished>) -> Result<(), HandlerError> {
//!     println!("indexing {} records", events.len());
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let store = PgStore::connect(&std::env::var("DATABASE_URL")?).await?;
//!     store.migrate().await?;
//!     let runtime = osa_events::Runtime::builder(store.clone()).build()?;
//!     // Handlers receive the events published after their subscriptions exist: register them
//!     // first (`run_all_handlers` and `Runtime::run` do it too, but only once they start).
//!     runtime.register().await?;
//!
//!     let mut tx = store.pool().begin().await?;
//!     let published =
//!         osa_events::publish_routed(&mut *tx, "vector", &RecordPublished { srn: "srn:1".into() })
//!             .await?;
//!     tx.commit().await?; // delivered if and only if this commits
//!     assert_eq!(published.deliveries, 1, "one handler subscribed");
//!
//!     runtime.run().await?; // until SIGINT/SIGTERM
//!     Ok(())
//! }
//! ```
//!
//! A handler sees the events published after its subscription was first registered, that is after
//! the first start of a runtime that runs it (or its [`Runtime::register`]); events published
//! before then get no delivery for it ([`PublishedEvent::deliveries`] says how many they got, and
//! a DEBUG line under `osa_events::publish` names event types that reached no handler). A
//! projection reads the log itself and sees every event, whenever it starts.
//!
//! # Crates and features
//!
//! This crate is the one to depend on; it re-exports the others:
//!
//! | crate | what | here as |
//! | --- | --- | --- |
//! | `osa-events-core` | runtime, workers, extractors, projection runner, store traits; no database driver | the crate root, [`store`], [`extract`] |
//! | `osa-events-postgres` | [`PgStore`], [`publish`], transactions, projections, migrations | the crate root (feature `postgres`, on by default) |
//! | `osa-events-sqlite` | [`SqliteStore`], [`sqlite::publish`], transactions, projections, migrations; SQLite compiled in | [`SqliteStore`] and [`sqlite`] (feature `sqlite`, on by default) |
//! | `osa-events-nats` | the relay from a store's log into NATS JetStream, and [`nats::JetStreamStore`] for handlers on JetStream | [`nats`] (feature `nats`) |
//! | `osa-events-dashboard` | the web dashboard, an axum router over the operations API | [`dashboard`] (feature `dashboard`) |
//! | `osa-events-macros` | [`#[event_handler]`](macro@event_handler), [`#[projection]`](macro@projection), the derives | the crate root |
//! | `osa-events-testing` | `Harness`, `InMemoryStore`, `FakeClock`, the simulator, the store contract suite | a dev-dependency of your own |
//!
//! Features: `postgres` (default) brings the PostgreSQL store, `sqlite` (default) the embedded
//! SQLite store; [`AnyStore`] picks one of them from a URL (`DATABASE_URL`). Without both the
//! crate has no database driver. `nats` brings NATS JetStream: the relay and the JetStream
//! store ([`nats`]). `dashboard` brings the web dashboard ([`dashboard`]). `opentelemetry` carries the W3C trace context from publisher to handler
//! through the events' envelope (see [`observability`]). `test-util` exposes the runtime's step-by-step hooks that `osa-events-testing`
//! drives (it turns it on itself). A new backend implements the traits of [`store`] and passes
//! the contract suite, as the module documentation describes.
//!
//! # Guarantees
//!
//! - **Transactional publish.** An event and its deliveries are written by the caller's
//!   transaction: a rollback publishes nothing, a commit publishes exactly once (ids are idempotency
//!   keys).
//! - **At-least-once handling.** A delivery is removed only when its handler succeeded, by a write
//!   fenced with the claim's token: a worker whose claim expired and was taken over cannot complete
//!   it. A crashed worker's claims expire after `claim_timeout` and are claimed again.
//! - **Bounded retries.** Attempts are counted when claimed, so even a handler that crashes its
//!   process ends as a dead letter after its retries, keeping the last error for a human.
//! - **Isolation.** Each handler has its own copy of each event (its delivery), its own retries
//!   and dead letters: one failing backend never holds another back.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod any_store;
pub mod prelude;
mod tx;

/// A guide to writing handlers: events, per-event and batch handlers, errors, `Tx`, resources, tests.
pub mod guide {
    #![doc = include_str!("../docs/handlers.md")]
}

/// Delayed publish: events whose deliveries become due later, for reminders, timeouts and sagas.
pub mod delayed_publish {
    #![doc = include_str!("../docs/delayed_publish.md")]
}

/// A guide to seeing it run: the envelope (correlation, causation, trace context), the spans,
/// Per-key order: `ordered` handlers and ordering keys.
pub mod ordering {
    #![doc = include_str!("../docs/ordering.md")]
}

/// OpenTelemetry across the publish → handle hop, and the logs.
pub mod observability {
    #![doc = include_str!("../docs/observability.md")]
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use any_store::AnyStore;
pub use osa_events_core::{
    BackendError, Batch, BatchOutcome, CancellationToken, Clock, Ctx, DEFAULT_MAX_PAYLOAD_BYTES,
    Due, Error, Event, EventSet, HandlerError, HandlerOptions, HandlerSpec, MAX_DELIVERY_DELAY,
    MAX_ORDERING_KEY_BYTES, Metadata, Ordered, Outgoing, PayloadError, ProjectionSpec,
    ProjectionStatus, Published, PublishedEvent, ResetTo, Resources, Result, ResultExt, Runtime,
    RuntimeBuilder, State, SubscriptionConflict, SystemClock, run_all_handlers,
};
pub use osa_events_core::{envelope, extract, health, operations, store};
#[cfg(feature = "postgres")]
pub use osa_events_postgres::{
    ConnectRetry, PgStore, PgTransaction, PgUnnamed, publish, publish_batch, publish_routed,
    reset_projection,
};
#[cfg(feature = "sqlite")]
pub use osa_events_sqlite::{SqliteSettings, SqliteStore};
pub use tx::Tx;

/// The SQLite store's publishing functions and transactions (feature `sqlite`, on by default):
/// `osa_events::sqlite::publish(&mut tx, &event)` in a transaction of
/// [`SqliteStore::begin`](crate::SqliteStore::begin).
#[cfg(feature = "sqlite")]
pub mod sqlite {
    pub use osa_events_sqlite::{
        SqliteSettings, SqliteStore, SqliteTransaction, connection, publish, publish_batch,
        publish_routed, reset_projection,
    };
}

/// NATS JetStream (feature `nats`): the ordered outbox relay from a store's log into JetStream,
/// and the JetStream store that runs the same handlers on a durable pull consumer. See the
/// JetStream guide (`docs/jetstream.md`) and the `jetstream` example.
#[cfg(feature = "nats")]
pub mod nats {
    pub use osa_events_nats::*;
}

/// The web dashboard (feature `dashboard`): handlers, dead letters, projections and nodes, as an
/// axum router to mount in your own service or to [`serve`](dashboard::serve) alone. The
/// `osa-events dashboard` command serves it too. See the dashboard guide (`docs/dashboard.md`).
#[cfg(feature = "dashboard")]
pub mod dashboard {
    pub use osa_events_dashboard::*;
}

#[doc = include_str!("../docs/derive_event.md")]
#[doc(inline)]
pub use osa_events_macros::Event;
/// Derives [`EventSet`](trait@EventSet) for an enum with one newtype variant per event type.
#[doc(inline)]
pub use osa_events_macros::EventSet;
#[doc = include_str!("../docs/event_handler.md")]
#[doc(inline)]
pub use osa_events_macros::event_handler;
#[doc = include_str!("../docs/projection.md")]
#[doc(inline)]
pub use osa_events_macros::projection;

/// Not public API: what the macros' generated code and the test kit refer to. It may change in
/// any release.
#[doc(hidden)]
pub mod __private {
    pub use osa_events_core::__private::*;
    #[cfg(all(feature = "postgres", feature = "test-util"))]
    pub use osa_events_postgres::__private::sql;
    #[cfg(all(feature = "sqlite", feature = "test-util"))]
    pub use osa_events_sqlite::__private::sql as sqlite_sql;
}
