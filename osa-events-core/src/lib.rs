//! The backend-free core of [osa-events](https://docs.rs/osa-events): the runtime, the claim
//! loops, the extractors, the projection runner, and the store traits a backend implements.
//!
//! Applications depend on `osa-events`, which re-exports this crate together with the macros and
//! the PostgreSQL store; this crate is for backends (see [`store`]) and has no database driver.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
pub mod envelope;
mod error;
mod event;
mod handler;
mod metrics;
mod projection;
mod publish;
mod redact;
mod resources;
mod rng;
mod runtime;
mod spans;
mod upkeep;
mod worker;

pub mod health;
pub mod operations;
pub mod store;

/// The extractor traits: how a handler parameter is resolved at start-up and built per call.
/// Implement them to add a parameter type of your own.
pub mod extract {
    pub use crate::handler::extract::{Call, CallTx, FromBatchArg, FromEventArg};
}

pub use clock::{Clock, SystemClock};
pub use envelope::Metadata;
pub use error::{BackendError, Error, Result, SubscriptionConflict};
pub use event::{Event, PayloadError};
pub use handler::error::{HandlerError, ResultExt};
pub use handler::extract::{Batch, BatchOutcome, Ctx, State};
pub use handler::{HandlerOptions, HandlerSpec, Ordered};
pub use projection::{EventSet, ProjectionSpec, ProjectionStatus, ResetTo};
pub use publish::{
    DEFAULT_MAX_PAYLOAD_BYTES, Due, MAX_DELIVERY_DELAY, MAX_ORDERING_KEY_BYTES, Outgoing,
    Published, PublishedEvent,
};
pub use resources::Resources;
pub use runtime::{Runtime, RuntimeBuilder, default_instance_name, run_all_handlers};
/// The token of [`Runtime::shutdown_token`] and [`RuntimeBuilder::shutdown_token`]: tokio-util's
/// `CancellationToken`, re-exported so an application can store and cancel it without depending
/// on tokio-util itself (if it does, the types are the same).
pub use tokio_util::sync::CancellationToken;

/// Not public API: what the macros' generated code and the test kit refer to. It may change in
/// any release.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use tokio_util::sync::CancellationToken;

    pub use crate::event::{Previous, previous};
    pub use crate::extract::{Call, FromBatchArg, FromEventArg};
    pub use crate::handler::invoke::{IntoBatchResult, IntoHandlerResult};
    pub use crate::handler::{Handler, HandlerSpec, Invoker, Ordered, Registration, Shape};
    pub use crate::operations::StartFrom;
    pub use crate::projection::{
        EventSet, Projection, ProjectionRegistration, ProjectionSpec, decode_event,
    };
    pub use crate::rng::Rng;
    pub use crate::store::Delivery;
    #[cfg(feature = "test-util")]
    pub use crate::worker::step::{ProjectionStep, StepReport, Stepper};
    pub use crate::{Batch, Event, HandlerError, PayloadError, Resources, Result};
    pub use core::time::Duration;
}
