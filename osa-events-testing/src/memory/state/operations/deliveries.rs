//! Deliveries as operators list, show, retry, purge and cancel them.

use std::collections::BTreeSet;

use osa_events::Result;
use osa_events::operations::{DeliveryDetail, DeliveryPage, DeliveryQuery, Selector};
use osa_events::store::SubscriptionId;

use super::state_of;
use crate::memory::DeliveryStatus;
use crate::memory::state::{Tables, reschedule};
use crate::memory::time::Now;

impl Tables {
    /// A page of the rows `query` selects, in key order after `query.after`.
    pub(in crate::memory) fn delivery_page(
        &self,
        query: &DeliveryQuery,
        now: Now,
    ) -> Result<DeliveryPage> {
        query.checked_page_size()?;
        let page_size = usize::try_from(query.page_size).unwrap_or(usize::MAX);
        let deliveries: Vec<_> = self
            .rows_selected(&query.selector, query.after, now)?
            .filter(|(_, row)| {
                query
                    .state
                    .is_none_or(|state| state_of(row.status) == state)
            })
            .take(page_size)
            .map(|(key, row)| self.summary(key, row, now))
            .collect();
        let next = (deliveries.len() == page_size)
            .then(|| deliveries.last().map(|summary| summary.key))
            .flatten();
        Ok(DeliveryPage { deliveries, next })
    }

    /// The delivery of the event at `position` to `handler`, with its event.
    pub(in crate::memory) fn delivery_detail(
        &self,
        handler: &str,
        position: i64,
        now: Now,
    ) -> Result<Option<DeliveryDetail>> {
        let subscription = self.resolve(handler)?;
        let key = (subscription, position);
        Ok(self.deliveries.get(&key).map(|row| {
            let logged = &self.events[&position];
            DeliveryDetail {
                summary: self.summary(key, row, now),
                event_version: logged.raw.event_version,
                position,
                payload: logged.raw.payload.clone(),
                metadata: logged
                    .raw
                    .metadata
                    .clone()
                    .unwrap_or_else(|| "{}".to_owned()),
            }
        }))
    }

    /// The selected dead letters pending again, due now, attempts 0, last error kept. Returns
    /// how many, and the subscriptions to wake.
    pub(in crate::memory) fn retry_dead(
        &mut self,
        selector: &Selector,
        now: Now,
    ) -> Result<(u64, BTreeSet<SubscriptionId>)> {
        let keys = self.selected(selector, &[DeliveryStatus::Dead], now)?;
        let mut woken = BTreeSet::new();
        for key in &keys {
            let row = self.deliveries.get_mut(key).expect("a row just selected");
            reschedule(
                &mut self.claimable,
                *key,
                row,
                DeliveryStatus::Pending,
                now.instant,
            );
            row.attempts = 0;
            row.unclaim(now.instant);
            self.revived(*key);
            woken.insert(key.0);
        }
        Ok((keys.len() as u64, woken))
    }

    /// Deletes the selected dead letters; how many.
    pub(in crate::memory) fn purge_dead(&mut self, selector: &Selector, now: Now) -> Result<u64> {
        self.delete_selected(selector, &[DeliveryStatus::Dead], now)
    }

    /// Deletes the selected pending rows, waiting ones included (never a claimed one); how many.
    pub(in crate::memory) fn cancel_pending(
        &mut self,
        selector: &Selector,
        now: Now,
    ) -> Result<u64> {
        self.delete_selected(
            selector,
            &[DeliveryStatus::Pending, DeliveryStatus::Waiting],
            now,
        )
    }

    fn delete_selected(
        &mut self,
        selector: &Selector,
        statuses: &[DeliveryStatus],
        now: Now,
    ) -> Result<u64> {
        let keys = self.selected(selector, statuses, now)?;
        for key in &keys {
            self.remove_delivery(*key, now.instant);
        }
        Ok(keys.len() as u64)
    }
}
