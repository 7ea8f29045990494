//! Per-key order: the counterpart of `PgStore`'s `ordering_keys` table and its triggers. Every
//! row is added with [`Tables::insert_delivery`] and removed with [`Tables::remove_delivery`],
//! and every death and retry of a dead letter goes through [`Tables::died`] and
//! [`Tables::revived`], so no path can leave a key without its next head.

use std::collections::BTreeMap;

use osa_events::Ordered;
use osa_events::store::SubscriptionId;
use tokio::time::Instant;

use super::{DeliveryStatus, Row, Tables, claimable, reschedule};

/// One ordering key of one subscription, while it has a head or waiting deliveries.
#[derive(Debug, Default)]
pub(super) struct KeyState {
    /// The `key_seq` of the delivery that may run (pending, claimed, or dead under `block`).
    head: Option<u64>,
    /// The last `key_seq` handed out.
    tail: u64,
    /// The waiting deliveries, by `key_seq`: their positions.
    waiting: BTreeMap<u64, i64>,
}

impl Tables {
    /// Adds a new row at `key`: with an ordering key it joins the key at its end, and waits
    /// unless the key had no head.
    pub(super) fn insert_delivery(&mut self, key: (SubscriptionId, i64), mut row: Row) {
        if row.ordering_key.is_some() {
            self.join_key(key, &mut row);
        }
        if claimable(row.status) {
            self.claimable
                .entry(key.0)
                .or_default()
                .insert((row.run_at, key.1));
        }
        self.deliveries.insert(key, row);
    }

    /// Removes the row at `key` (completed, purged, cancelled, pruned, retired); when it was the
    /// head of its key, the next one becomes due at `now`.
    pub(super) fn remove_delivery(
        &mut self,
        key: (SubscriptionId, i64),
        now: Instant,
    ) -> Option<Row> {
        let row = self.deliveries.remove(&key)?;
        if claimable(row.status)
            && let Some(index) = self.claimable.get_mut(&key.0)
        {
            index.remove(&(row.run_at, key.1));
        }
        if let (Some(ordering_key), Some(seq)) = (&row.ordering_key, row.key_seq) {
            self.leave_key(key.0, ordering_key, seq, now);
        }
        Some(row)
    }

    /// The row at `key` was just made dead: under `ordered = "skip"` (or for a subscription no
    /// longer ordered) it leaves its key, and the next one becomes due.
    pub(super) fn died(&mut self, key: (SubscriptionId, i64), now: Instant) {
        let blocks = self
            .subscriptions
            .get(&key.0)
            .is_some_and(|subscription| subscription.ordered == Some(Ordered::Block));
        let Some(row) = self.deliveries.get_mut(&key) else {
            return;
        };
        let (Some(ordering_key), Some(seq)) = (row.ordering_key.clone(), row.key_seq) else {
            return;
        };
        if blocks {
            return;
        }
        row.key_seq = None;
        self.leave_key(key.0, &ordering_key, seq, now);
    }

    /// The dead row at `key` was just made pending again: one that had left its key joins it
    /// again at the end (waiting, if the key has a head); a blocking head stays the head.
    pub(super) fn revived(&mut self, key: (SubscriptionId, i64)) {
        let left_its_key = self
            .deliveries
            .get(&key)
            .is_some_and(|row| row.ordering_key.is_some() && row.key_seq.is_none());
        if !left_its_key {
            return;
        }
        let row = self.deliveries.remove(&key).expect("a row just found");
        if claimable(row.status)
            && let Some(index) = self.claimable.get_mut(&key.0)
        {
            index.remove(&(row.run_at, key.1));
        }
        self.insert_delivery(key, row);
    }

    /// Gives `row` its place at the end of its key: the head if the key has none, else waiting.
    fn join_key(&mut self, (subscription, position): (SubscriptionId, i64), row: &mut Row) {
        let Some(ordering_key) = row.ordering_key.clone() else {
            return;
        };
        let state = self
            .ordering_keys
            .entry((subscription, ordering_key))
            .or_default();
        state.tail += 1;
        let seq = state.tail;
        row.key_seq = Some(seq);
        if state.head.is_none() {
            state.head = Some(seq);
        } else {
            row.status = DeliveryStatus::Waiting;
            state.waiting.insert(seq, position);
        }
    }

    /// The delivery at `seq` leaves `ordering_key`: a waiting one just goes; the head makes the
    /// first waiting one due at `now`, or at its event's due time if later (and its subscription
    /// is woken), or the key is forgotten.
    fn leave_key(
        &mut self,
        subscription: SubscriptionId,
        ordering_key: &str,
        seq: u64,
        now: Instant,
    ) {
        let id = (subscription, ordering_key.to_owned());
        let Some(state) = self.ordering_keys.get_mut(&id) else {
            return;
        };
        if state.head != Some(seq) {
            state.waiting.remove(&seq);
            return;
        }
        let Some((next, position)) = state.waiting.pop_first() else {
            self.ordering_keys.remove(&id);
            return;
        };
        state.head = Some(next);
        // Due now, or at its event's due time if that is later (a delayed publish).
        let run_at = self
            .events
            .get(&position)
            .and_then(|logged| logged.deliver_at)
            .map_or(now, |deliver_at| deliver_at.max(now));
        if let Some(row) = self.deliveries.get_mut(&(subscription, position)) {
            reschedule(
                &mut self.claimable,
                (subscription, position),
                row,
                DeliveryStatus::Pending,
                run_at,
            );
            row.updated_at = now;
            self.woken.insert(subscription);
        }
    }
}
