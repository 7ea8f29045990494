//! The operations API over the in-memory tables, each the counterpart of one statement of
//! `PgStore`'s operations: plain synchronous code under the store's lock, given the store's now.

use osa_events::operations::{DeliveryKey, DeliveryState, DeliverySummary, Selector};
use osa_events::store::SubscriptionId;
use osa_events::{Error, Result};

use super::{DeliveryStatus, Row, Tables};
use crate::memory::time::Now;

mod activity;
mod deliveries;
mod history;
mod nodes;
mod prune;
mod status;

/// The state operators see for a stored status.
fn state_of(status: DeliveryStatus) -> DeliveryState {
    match status {
        DeliveryStatus::Pending => DeliveryState::Pending,
        DeliveryStatus::Claimed => DeliveryState::Claimed,
        DeliveryStatus::Dead => DeliveryState::Dead,
        DeliveryStatus::Waiting => DeliveryState::Waiting,
    }
}

impl Tables {
    /// The id of the subscription stored as `name`, or [`Error::UnknownHandler`] naming every
    /// stored name, sorted (`none` when there is none).
    pub(in crate::memory) fn resolve(&self, name: &str) -> Result<SubscriptionId> {
        self.subscription_id(name).ok_or_else(|| {
            let mut known: Vec<&str> = self
                .subscriptions
                .values()
                .map(|subscription| subscription.name.as_str())
                .collect();
            known.sort_unstable();
            Error::UnknownHandler {
                name: name.to_owned(),
                known: if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                },
            }
        })
    }

    /// The head of the log: the highest position still logged, 0 when none is.
    pub(in crate::memory) fn head(&self) -> i64 {
        self.events.keys().next_back().copied().unwrap_or(0)
    }

    /// The keys of the rows `selector` selects whose status is `status` (any for `None`), in key
    /// order, at most `selector.limit` of them.
    fn selected(
        &self,
        selector: &Selector,
        statuses: &[DeliveryStatus],
        now: Now,
    ) -> Result<Vec<(SubscriptionId, i64)>> {
        let limit = selector.limit.map_or(usize::MAX, |limit| {
            usize::try_from(limit).unwrap_or(usize::MAX)
        });
        Ok(self
            .rows_selected(selector, None, now)?
            .filter(|(_, row)| statuses.contains(&row.status))
            .take(limit)
            .map(|(key, _)| key)
            .collect())
    }

    /// The rows `selector` selects after `after` (exclusive), in key order; its `limit` is not
    /// applied.
    fn rows_selected<'a>(
        &'a self,
        selector: &'a Selector,
        after: Option<DeliveryKey>,
        now: Now,
    ) -> Result<impl Iterator<Item = ((SubscriptionId, i64), &'a Row)> + 'a> {
        use std::ops::Bound::{Excluded, Unbounded};
        let handler = selector
            .handler
            .as_deref()
            .map(|name| self.resolve(name))
            .transpose()?;
        let start = after.map_or(Unbounded, |key| Excluded((key.subscription, key.position)));
        Ok(self
            .deliveries
            .range((start, Unbounded))
            // A handler's rows are one stretch of the key order: stop past it.
            .take_while(move |((subscription, _), _)| {
                handler.is_none_or(|handler| *subscription <= handler)
            })
            .filter(move |((subscription, position), row)| {
                handler.is_none_or(|handler| *subscription == handler)
                    && self.matches(selector, (*subscription, *position), row, now)
            })
            .map(|(key, row)| (*key, row)))
    }

    /// Whether the row of `subscription` at `position` passes `selector`'s filters other than
    /// the handler. The event type is the subscription's, as `PgStore` filters it.
    fn matches(
        &self,
        selector: &Selector,
        (subscription, position): (SubscriptionId, i64),
        row: &Row,
        now: Now,
    ) -> bool {
        let updated_at = now.wall_of(row.updated_at);
        selector.position.is_none_or(|wanted| wanted == position)
            && selector.event_type.as_deref().is_none_or(|wanted| {
                self.subscriptions
                    .get(&subscription)
                    .is_some_and(|stored| stored.event_type == wanted)
            })
            && selector.error_contains.as_deref().is_none_or(|text| {
                row.last_error
                    .as_deref()
                    .is_some_and(|error| error.contains(text))
            })
            && selector
                .changed_after
                .is_none_or(|after| updated_at >= after)
            && selector
                .changed_before
                .is_none_or(|before| updated_at < before)
    }

    /// The row at `key` as listed.
    fn summary(
        &self,
        (subscription, position): (SubscriptionId, i64),
        row: &Row,
        now: Now,
    ) -> DeliverySummary {
        let logged = &self.events[&position];
        DeliverySummary {
            key: DeliveryKey {
                subscription,
                position,
            },
            handler: self.subscriptions[&subscription].name.clone(),
            state: state_of(row.status),
            attempts: row.attempts,
            last_error: row.last_error.clone(),
            claimed_by: row.claimed_by.clone(),
            run_at: now.wall_of(row.run_at),
            updated_at: now.wall_of(row.updated_at),
            event_id: logged.raw.id,
            event_type: logged.raw.event_type.clone(),
            routing_key: logged.raw.routing_key.clone(),
            published_at: logged.published_at,
        }
    }
}
