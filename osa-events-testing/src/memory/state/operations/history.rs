//! Handing a handler events of the log again (replay) or for the first time (backfill): both
//! read the log a chunk at a time and add a pending delivery of each matching event the handler
//! has no row of.

use osa_events::operations::{BackfillStep, Replay, ReplayStep};
use osa_events::store::SubscriptionId;
use osa_events::{Error, Result};
use tokio::time::Instant;

use crate::memory::DeliveryStatus;
use crate::memory::state::lifecycle::Backfill;
use crate::memory::state::{LoggedEvent, Row, Tables, receives};
use crate::memory::time::Now;

/// What one chunk of the log gave a subscription.
struct Copied {
    delivered: u64,
    skipped: u64,
    /// The last position read, if any was.
    last_read: Option<i64>,
}

impl Tables {
    /// One step of `replay` after `after`, up to `end` (resolved now on the first step).
    pub(in crate::memory) fn replay(
        &mut self,
        replay: &Replay,
        after: i64,
        end: Option<i64>,
        now: Now,
    ) -> Result<(ReplayStep, Option<SubscriptionId>)> {
        replay.checked_chunk()?;
        let id = self.resolve(&replay.handler)?;
        let subscription = &self.subscriptions[&id];
        let name = &subscription.name;
        if self.lifecycle(id).retired_at.is_some() {
            return Err(Error::Config(
                format!("handler `{name}` is retired: nothing is delivered to it").into(),
            ));
        }
        if let Some(asked) = &replay.event_type
            && *asked != subscription.event_type
        {
            return Err(Error::Config(
                format!(
                    "handler `{name}` receives `{}` events, not `{asked}`",
                    subscription.event_type
                )
                .into(),
            ));
        }
        if let (Some(own), Some(asked)) = (&subscription.routing_key, &replay.routing_key)
            && own != asked
        {
            return Err(Error::Config(
                format!("handler `{name}` receives routing key `{own}` only, not `{asked}`").into(),
            ));
        }
        let end = end
            .or(replay.through_position)
            .unwrap_or_else(|| self.head());
        let routing_key = replay
            .routing_key
            .clone()
            .or_else(|| subscription.routing_key.clone());
        let event_type = subscription.event_type.clone();
        let wanted = |logged: &LoggedEvent| {
            logged.raw.event_type == event_type
                && routing_key
                    .as_ref()
                    .is_none_or(|key| logged.raw.routing_key.as_ref() == Some(key))
                && replay
                    .published_after
                    .is_none_or(|after| logged.published_at >= after)
                && replay
                    .published_before
                    .is_none_or(|before| logged.published_at < before)
        };
        let copied = self.copy(id, (after, end), replay.chunk, wanted, now.instant, now);
        let through = copied.last_read.unwrap_or(end).max(after);
        let step = ReplayStep {
            delivered: copied.delivered,
            skipped: copied.skipped,
            through,
            end,
            done: through >= end || copied.last_read.is_none(),
        };
        Ok((step, (copied.delivered > 0).then_some(id)))
    }

    /// One step of the backfill of `handler`: copies the next `chunk` events of the log up to
    /// the head when it was created, due when it was created, unless more than two chunks of its
    /// history are open (dead letters aside); the step that reaches the head ends the backfill,
    /// and the next one reports it done.
    pub(in crate::memory) fn backfill(
        &mut self,
        handler: &str,
        chunk: u32,
        now: Now,
    ) -> Result<(BackfillStep, Option<SubscriptionId>)> {
        osa_events::operations::checked_backfill_chunk(chunk)?;
        let id = self.resolve(handler)?;
        let lifecycle = self.lifecycle(id);
        let (Some(Backfill { after, head }), created_at) =
            (lifecycle.backfill, lifecycle.created_at)
        else {
            return Ok((BackfillStep::Done, None));
        };
        if after >= head {
            self.lifecycles
                .get_mut(&id)
                .expect("every subscription gets its lifecycle when registered")
                .backfill = None;
            return Ok((BackfillStep::Done, None));
        }
        let open = self
            .rows_of(id)
            .take_while(|(position, _)| *position <= head)
            .filter(|(_, row)| row.status != DeliveryStatus::Dead)
            .count();
        if open > 2 * usize::try_from(chunk).unwrap_or(usize::MAX / 2) {
            return Ok((BackfillStep::Waiting, None));
        }
        let subscription = self.subscriptions[&id].clone();
        let wanted = |logged: &LoggedEvent| receives(&subscription, &logged.raw);
        let copied = self.copy(id, (after, head), chunk, wanted, created_at, now);
        let through = copied.last_read.unwrap_or(head).max(after);
        self.lifecycles
            .get_mut(&id)
            .expect("every subscription gets its lifecycle when registered")
            .backfill = (through < head).then_some(Backfill {
            after: through,
            head,
        });
        let step = BackfillStep::Copied {
            delivered: copied.delivered,
            through,
            end: head,
        };
        Ok((step, (copied.delivered > 0).then_some(id)))
    }

    /// Reads the next `chunk` events of the log in `(after, end]` and adds a pending delivery,
    /// due at `run_at` (or a delayed event's own due time, when later), of each `wanted` one `id`
    /// has no row of.
    fn copy(
        &mut self,
        id: SubscriptionId,
        (after, end): (i64, i64),
        chunk: u32,
        wanted: impl Fn(&LoggedEvent) -> bool,
        run_at: Instant,
        now: Now,
    ) -> Copied {
        let mut copied = Copied {
            delivered: 0,
            skipped: 0,
            last_read: None,
        };
        if after >= end {
            return copied;
        }
        let chunk = usize::try_from(chunk).unwrap_or(usize::MAX);
        let read: Vec<(i64, bool, Option<Instant>)> = self
            .events
            .range(after + 1..=end)
            .take(chunk)
            .map(|(&position, logged)| (position, wanted(logged), logged.deliver_at))
            .collect();
        for (position, wanted, deliver_at) in read {
            copied.last_read = Some(position);
            if !wanted {
                continue;
            }
            if self.deliveries.contains_key(&(id, position)) {
                copied.skipped += 1;
                continue;
            }
            // A delayed event is never copied due before its own time.
            let run_at = deliver_at.map_or(run_at, |deliver_at| deliver_at.max(run_at));
            let ordering_key = self.events[&position]
                .raw
                .ordering_key
                .clone()
                .filter(|_| self.subscriptions[&id].ordered.is_some());
            self.insert_delivery(
                (id, position),
                Row::pending(run_at, now.instant, ordering_key),
            );
            copied.delivered += 1;
        }
        copied
    }
}
