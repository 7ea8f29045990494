//! What status reports per subscription, and the subscriptions as listed.

use std::collections::BTreeSet;
use std::time::Duration;

use osa_events::operations::{Count, HandlerStatus, Liveness, NodeStatus, SubscriptionInfo};
use osa_events::store::SubscriptionId;

use crate::memory::DeliveryStatus;
use crate::memory::state::{Row, Tables, claimable};
use crate::memory::time::Now;

/// How many workers [`HandlerStatus::claimed_by`] names at most.
const CLAIMED_BY: usize = 20;

/// How many of `rows` there are, reading at most [`HandlerStatus::EXACT_UP_TO`] of them.
fn capped<'a>(rows: impl Iterator<Item = &'a Row>) -> Count {
    let cap = HandlerStatus::EXACT_UP_TO;
    let counted = rows
        .take(usize::try_from(cap).unwrap_or(usize::MAX))
        .count();
    Count::capped(counted as u64, cap)
}

impl Tables {
    /// Every subscription's figures, by name, given the nodes seen.
    pub(in crate::memory) fn handler_statuses(
        &self,
        nodes: &[NodeStatus],
        now: Now,
    ) -> Vec<HandlerStatus> {
        let mut statuses: Vec<HandlerStatus> = self
            .subscriptions
            .keys()
            .map(|id| self.handler_status(*id, nodes, now))
            .collect();
        statuses.sort_by(|a, b| a.name.cmp(&b.name));
        statuses
    }

    fn handler_status(&self, id: SubscriptionId, nodes: &[NodeStatus], now: Now) -> HandlerStatus {
        let subscription = &self.subscriptions[&id];
        let lifecycle = self.lifecycle(id);
        let mut status = HandlerStatus::idle(
            id,
            &subscription.name,
            &subscription.event_type,
            subscription.routing_key.as_deref(),
        );
        status.config = subscription.config.clone();
        let rows = || self.rows_of(id).map(|(_, row)| row);
        let due = || rows().filter(|row| claimable(row.status) && row.run_at <= now.instant);
        let live_claims = || {
            rows().filter(|row| row.status == DeliveryStatus::Claimed && row.run_at > now.instant)
        };
        status.due = capped(due());
        status.scheduled = capped(
            rows().filter(|row| row.status == DeliveryStatus::Pending && row.run_at > now.instant),
        );
        status.claimed = capped(live_claims());
        status.dead = capped(rows().filter(|row| row.status == DeliveryStatus::Dead));
        status.waiting = capped(rows().filter(|row| row.status == DeliveryStatus::Waiting));
        status.oldest_due = due()
            .map(|row| row.run_at)
            .min()
            .map(|run_at| now.instant.saturating_duration_since(run_at));
        status.oldest_claim = live_claims()
            .filter_map(|row| row.claimed_at)
            .min()
            .map(|claimed_at| now.instant.saturating_duration_since(claimed_at));
        status.claimed_by = live_claims()
            .filter_map(|row| row.claimed_by.clone())
            .collect::<BTreeSet<String>>()
            .into_iter()
            .take(CLAIMED_BY)
            .collect();
        let next = self
            .claimable
            .get(&id)
            .and_then(|index| index.first())
            .map(|(_, position)| *position);
        if let Some(position) = next {
            status.lag_events = u64::try_from(self.head() - position).unwrap_or(0);
            status.lag = self.events.get(&position).map_or(Duration::ZERO, |logged| {
                now.wall()
                    .duration_since(logged.published_at)
                    .unwrap_or(Duration::ZERO)
            });
        }
        status.paused_at = lifecycle.paused_at.map(|at| now.wall_of(at));
        status.retired_at = lifecycle.retired_at.map(|at| now.wall_of(at));
        status.last_error = lifecycle
            .last_error
            .as_ref()
            .map(|(error, at)| (error.clone(), now.wall_of(*at)));
        status.liveness = Liveness::of(&subscription.name, nodes);
        status.backfill = lifecycle
            .backfill
            .map(|backfill| (backfill.after, Some(backfill.head)));
        status
    }

    /// Every subscription, by name, with its liveness and exact counts.
    pub(in crate::memory) fn subscription_infos(
        &self,
        nodes: &[NodeStatus],
        now: Now,
    ) -> Vec<SubscriptionInfo> {
        let mut infos: Vec<SubscriptionInfo> = self
            .subscriptions
            .iter()
            .map(|(id, subscription)| {
                let lifecycle = self.lifecycle(*id);
                let dead = self
                    .rows_of(*id)
                    .filter(|(_, row)| row.status == DeliveryStatus::Dead)
                    .count() as u64;
                let all = self.rows_of(*id).count() as u64;
                SubscriptionInfo {
                    id: *id,
                    name: subscription.name.clone(),
                    event_type: subscription.event_type.clone(),
                    routing_key: subscription.routing_key.clone(),
                    created_at: now.wall_of(lifecycle.created_at),
                    paused_at: lifecycle.paused_at.map(|at| now.wall_of(at)),
                    retired_at: lifecycle.retired_at.map(|at| now.wall_of(at)),
                    liveness: Liveness::of(&subscription.name, nodes),
                    open: all - dead,
                    dead,
                }
            })
            .collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    /// The liveness of `id`, given the nodes seen.
    pub(in crate::memory) fn liveness(&self, id: SubscriptionId, nodes: &[NodeStatus]) -> Liveness {
        Liveness::of(&self.subscriptions[&id].name, nodes)
    }
}
