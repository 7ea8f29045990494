//! The cause of a publish: which event was being handled when it was made.
//!
//! The worker runs each handler call inside [`scope`] with the [`Cause`] of what it handles, in
//! a tokio task-local, so every publish of that call (through its `Tx`, or any other publish the
//! call makes in its own task) can default its causation and correlation ids. A task the handler
//! spawns does not inherit it: set [`Metadata::caused_by`] there.

use std::future::Future;

use uuid::Uuid;

use super::{CORRELATION_ID, Metadata};
use crate::store::Delivery;

tokio::task_local! {
    static HANDLING: Cause;
}

/// What a publish inherits from the event (or batch) being handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cause {
    /// The handled event, when the call handles exactly one.
    event: Option<Uuid>,
    /// The chain's correlation id; `None` with an `event` means that event's own id (it began
    /// the chain).
    correlation: Option<String>,
}

impl Cause {
    /// The cause of handling event `event`, whose correlation id is `correlation`.
    pub(crate) fn of_one(event: Uuid, correlation: Option<&str>) -> Self {
        Self {
            event: Some(event),
            correlation: correlation.map(str::to_owned),
        }
    }

    /// The cause of handling one claimed delivery.
    pub(crate) fn of_delivery(delivery: &Delivery) -> Self {
        Self::of_one(
            delivery.event_id,
            stored_correlation(&delivery.metadata).as_deref(),
        )
    }

    /// The cause of handling a batch: its event's when it holds one; else no causation, and the
    /// correlation id only when every event of the batch shares it.
    pub(crate) fn of_batch<'a>(mut deliveries: impl Iterator<Item = &'a Delivery>) -> Option<Self> {
        let first = deliveries.next()?;
        let Some(second) = deliveries.next() else {
            return Some(Self::of_delivery(first));
        };
        let chain = Self::of_delivery(first).chain();
        let shared = [second]
            .into_iter()
            .chain(deliveries)
            .all(|delivery| Self::of_delivery(delivery).chain() == chain);
        shared.then_some(Self {
            event: None,
            correlation: Some(chain),
        })
    }

    /// The correlation id of the chain: the stored one, or the event's id.
    fn chain(&self) -> String {
        match (&self.correlation, self.event) {
            (Some(correlation), _) => correlation.clone(),
            (None, Some(event)) => event.to_string(),
            (None, None) => String::new(),
        }
    }

    /// `metadata` with what it leaves unset taken from this cause.
    pub(crate) fn fill(&self, metadata: Metadata) -> Metadata {
        let mut defaults = Metadata::new();
        if let Some(event) = self.event {
            defaults.causation_id = Some(event.to_string());
        }
        if self.correlation.is_some() || self.event.is_some() {
            defaults.correlation_id = Some(self.chain());
        }
        metadata.or(&defaults)
    }
}

/// The correlation id in stored metadata, read only when the text mentions one.
fn stored_correlation(json: &str) -> Option<String> {
    if !json.contains(CORRELATION_ID) {
        return None;
    }
    Metadata::from_stored(json).correlation_id
}

/// Runs `future` with `cause` as the cause of its publishes (none: as it is).
pub(crate) async fn scope<F: Future>(cause: Option<Cause>, future: F) -> F::Output {
    match cause {
        Some(cause) => HANDLING.scope(cause, future).await,
        None => future.await,
    }
}

/// The cause of publishes made here, if an event is being handled.
pub(crate) fn current() -> Option<Cause> {
    HANDLING.try_with(Cause::clone).ok()
}
