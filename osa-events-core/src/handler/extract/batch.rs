//! [`Batch<E>`]: the events of one claimed batch, for batch handlers.

use std::ops::Deref;

use super::Ctx;
use crate::HandlerError;

/// The events of one claimed batch, in claim order, each with its [`Ctx`].
///
/// A batch handler (`async fn(events: Batch<E>, ..)`) is called once per claimed batch, so it can
/// write to a backend in bulk. Dereferences to `[E]`. Events whose payload could not be decoded
/// are not in it: each has already failed on its own.
#[derive(Debug)]
pub struct Batch<E> {
    events: Vec<E>,
    contexts: Vec<Ctx>,
}

impl<E> Batch<E> {
    /// A batch of events with their contexts (same length, same order). Useful in unit tests that
    /// call a batch handler directly; see also [`Batch::from_events`].
    ///
    /// # Panics
    ///
    /// When the two vectors differ in length.
    pub(crate) fn new(events: Vec<E>, contexts: Vec<Ctx>) -> Self {
        assert_eq!(
            events.len(),
            contexts.len(),
            "a batch has one context per event"
        );
        Self { events, contexts }
    }

    /// A batch of events with default contexts (attempt 1, no routing key, empty metadata), for
    /// calling a batch handler directly in a unit test.
    pub fn from_events(events: Vec<E>) -> Self {
        let contexts = (0..events.len())
            .map(|index| Ctx::for_test(i64::try_from(index).unwrap_or(i64::MAX) + 1))
            .collect();
        Self { events, contexts }
    }

    /// The events with their contexts.
    pub fn iter_with_ctx(&self) -> impl Iterator<Item = (&Ctx, &E)> {
        self.contexts.iter().zip(&self.events)
    }

    /// The events, dropping their contexts.
    pub fn into_events(self) -> Vec<E> {
        self.events
    }
}

impl<E> Deref for Batch<E> {
    type Target = [E];

    fn deref(&self) -> &[E] {
        &self.events
    }
}

impl<E> IntoIterator for Batch<E> {
    type Item = E;
    type IntoIter = std::vec::IntoIter<E>;

    fn into_iter(self) -> Self::IntoIter {
        self.events.into_iter()
    }
}

impl<'a, E> IntoIterator for &'a Batch<E> {
    type Item = &'a E;
    type IntoIter = std::slice::Iter<'a, E>;

    fn into_iter(self) -> Self::IntoIter {
        self.events.iter()
    }
}

/// What a batch handler returns when some events of its batch failed and others succeeded.
///
/// Return `Ok(outcome)` instead of `Ok(())`: the events marked failed are retried (or
/// dead-lettered) on their own, the others are completed. Returning `Err(..)` fails the whole batch.
/// Indexes are positions in the [`Batch`] as the handler received it; an index outside the batch
/// fails the whole batch (retryable, "`BatchOutcome::fail` named index 5, but the batch has 5
/// event(s) ..."), since an outcome that miscounts cannot say which events succeeded.
///
/// A handler that also takes `Tx` has one transaction for the whole batch: what it
/// wrote, also for the events it marks failed, commits with the completions of the others (unless
/// the whole batch fails, which rolls everything back). A retried event runs again, so write nothing
/// for an event you fail, or make those writes idempotent.
///
/// # Examples
///
/// ```
/// use osa_events::prelude::*;
/// use osa_events::BatchOutcome;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize)]
/// # #[event(name = "record.published")]
/// # struct RecordPublished { srn: String }
///
/// #[event_handler(name = "index.keyword", batch = 100)]
/// async fn index(records: Batch<RecordPublished>) -> Result<BatchOutcome, HandlerError> {
///     let mut outcome = BatchOutcome::new();
///     for (index, record) in records.iter().enumerate() {
///         if record.srn.is_empty() {
///             outcome.fail(index, HandlerError::permanent("record without an srn"));
///         }
///     }
///     Ok(outcome)
/// }
/// ```
#[derive(Debug, Default)]
pub struct BatchOutcome {
    failed: Vec<(usize, HandlerError)>,
}

impl BatchOutcome {
    /// Every event succeeded (until [`fail`](Self::fail) says otherwise).
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the event at `index` of the batch as failed with `error`. An `index` outside the
    /// batch fails the whole batch when the outcome is returned.
    pub fn fail(&mut self, index: usize, error: impl Into<HandlerError>) -> &mut Self {
        self.failed.push((index, error.into()));
        self
    }

    /// How many events were marked failed.
    pub fn failed_count(&self) -> usize {
        self.failed.len()
    }

    pub(crate) fn into_failures(self) -> Vec<(usize, HandlerError)> {
        self.failed
    }
}
