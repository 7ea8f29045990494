//! What a file of handlers needs: `use osa_events::prelude::*;`.
//!
//! Everything here is also reachable at its own path in the crate root.

#[cfg(feature = "postgres")]
pub use crate::PgStore;
pub use crate::{
    Batch, BatchOutcome, Ctx, Event, EventSet, HandlerError, Resources, ResultExt, State, Tx,
    event_handler, projection,
};
