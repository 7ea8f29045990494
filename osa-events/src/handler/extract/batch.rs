//! [`Batch<E>`]: the events of one claimed batch, for batch handlers.

use std::ops::Deref;

use super::Ctx;

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
