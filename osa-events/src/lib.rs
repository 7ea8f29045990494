//! Typed, durable event handlers on PostgreSQL.
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

mod clock;
mod error;
mod event;
mod handler;
mod projection;
mod publish;
mod redact;
mod resources;
mod runtime;
mod store;
mod worker;

pub mod prelude;

/// A guide to writing handlers: events, per-event and batch handlers, errors, `Tx`, resources, tests.
pub mod guide {
    #![doc = include_str!("../docs/handlers.md")]
}

pub use clock::{Clock, SystemClock};
pub use error::{Error, Result, SubscriptionConflict};
pub use event::{Event, PayloadError};
pub use handler::error::{HandlerError, ResultExt};
pub use handler::extract::{Batch, BatchOutcome, Call, Ctx, FromBatchArg, FromEventArg, State, Tx};
pub use handler::invoke::{IntoBatchResult, IntoHandlerResult};
pub use handler::{Handler, HandlerSpec, Invoker, Registration, Shape};
pub use projection::pg::ops::reset_projection;
pub use projection::{
    Advance, Checkpoint, EventSet, Leadership, OpenBatch, PgTransaction, Projection,
    ProjectionRegistration, ProjectionSpec, ProjectionStatus, ProjectionStore, ResetTo,
    decode_event,
};
pub use publish::{
    DEFAULT_MAX_PAYLOAD_BYTES, Outgoing, Published, PublishedEvent, publish, publish_batch,
    publish_routed,
};
pub use resources::Resources;
pub use runtime::{Runtime, RuntimeBuilder, run_all_handlers};
pub use store::postgres::{ConnectRetry, PgStore, PgUnnamed};
pub use store::{
    ClaimRequest, Delivery, Failure, Fence, Reconcile, Store, Subscription, SubscriptionId,
    WakeSource, WakeUps,
};
/// The token of [`Runtime::shutdown_token`] and [`RuntimeBuilder::shutdown_token`]: tokio-util's
/// `CancellationToken`, re-exported so an application can store and cancel it without depending
/// on tokio-util itself (if it does, the types are the same).
pub use tokio_util::sync::CancellationToken;

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

/// Not public API: what the macros' generated code refers to. It may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use tokio_util::sync::CancellationToken;

    pub use crate::HandlerError;
    pub use crate::event::{Previous, previous};
    pub use crate::handler::invoke::{IntoBatchResult, IntoHandlerResult};
    pub use crate::handler::{Handler, HandlerSpec, Invoker, Registration, Shape};
    pub use crate::projection::{
        EventSet, Projection, ProjectionRegistration, ProjectionSpec, decode_event,
    };
    pub use crate::worker::step::{ProjectionStep, StepReport, Stepper};
    pub use crate::{
        Batch, Call, Delivery, Event, FromBatchArg, FromEventArg, PayloadError, Resources, Result,
    };
    pub use core::time::Duration;

    /// The store's statements, for the benchmark's raw-SQL baseline (which must issue exactly
    /// what the store issues).
    pub mod sql {
        pub use crate::publish::PUBLISH_SQL;
        pub use crate::store::postgres::claim::CLAIM_SQL;
        pub use crate::store::postgres::fenced::COMPLETE_SQL;
    }
}
