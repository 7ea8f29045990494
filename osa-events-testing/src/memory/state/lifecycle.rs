//! The life of a subscription: its registration, when it was created, whether it is paused or
//! retired, the history it still has to receive, and its latest error. The counterparts of the
//! `paused_at`, `retired_at`, `backfill_*` and `last_error` columns of `subscriptions`.

use osa_events::Result;
use osa_events::operations::{Retired, StartFrom};
use osa_events::store::{Reconcile, Subscription, SubscriptionId};
use tokio::time::Instant;

use super::{DeliveryStatus, Tables};

/// One subscription's life.
#[derive(Debug, Clone)]
pub(in crate::memory) struct Lifecycle {
    /// When it was created (or revived after retirement): its history is due from then.
    pub(in crate::memory) created_at: Instant,
    pub(in crate::memory) paused_at: Option<Instant>,
    pub(in crate::memory) retired_at: Option<Instant>,
    /// The history still to copy, while a backfill is pending.
    pub(in crate::memory) backfill: Option<Backfill>,
    /// The error of its latest failed attempt, and when.
    pub(in crate::memory) last_error: Option<(String, Instant)>,
}

/// A pending backfill: copied through `after`, up to `head`, the last position handed out when
/// the subscription was created (every later event was published with the subscription in place,
/// so it has its delivery already: there is no window of publishes straddling the creation to
/// copy, as `PgStore` has, and the claims are never held for one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::memory) struct Backfill {
    pub(in crate::memory) after: i64,
    pub(in crate::memory) head: i64,
}

impl Lifecycle {
    /// A subscription created at `now`, when `head` was the last position handed out, with its
    /// history pending unless it starts from now.
    pub(super) fn created(now: Instant, head: i64, start_from: StartFrom) -> Self {
        Self {
            created_at: now,
            paused_at: None,
            retired_at: None,
            backfill: start_from
                .after_position()
                .map(|after| Backfill { after, head }),
            last_error: None,
        }
    }

    /// Whether its claims are held back: it is paused or retired.
    pub(super) fn holds_claims(&self) -> bool {
        self.paused_at.is_some() || self.retired_at.is_some()
    }
}

impl Tables {
    /// Registers by name, by the rule of [`Subscription::reconcile`]: a known name keeps its id,
    /// and is re-pointed only at a higher revision. All or nothing: on a conflict, nothing changes.
    ///
    /// A subscription it creates starts its life at `now`, with a pending backfill unless it
    /// starts from [`StartFrom::Now`]. A retired one registered again
    /// is created afresh under its id: its new definition stored as given, no longer paused or
    /// retired, and its `start_from` applies again.
    pub(in crate::memory) fn register(
        &mut self,
        subscriptions: &[Subscription],
        now: Instant,
    ) -> Result<Vec<SubscriptionId>> {
        let mut staged = self.subscriptions.clone();
        let mut ids = Vec::with_capacity(subscriptions.len());
        let mut created = Vec::new();
        for subscription in subscriptions {
            let known = staged
                .iter()
                .find(|(_, stored)| stored.name == subscription.name)
                .map(|(id, stored)| (*id, stored.clone()));
            let id = match known {
                None => {
                    let last = staged.keys().next_back().map_or(0, |id| id.0);
                    let id = SubscriptionId(last + 1);
                    staged.insert(id, subscription.clone());
                    created.push((id, subscription.start_from));
                    id
                }
                Some((id, _)) if self.is_retired(id) => {
                    staged.insert(id, subscription.clone());
                    created.push((id, subscription.start_from));
                    id
                }
                Some((id, stored)) => {
                    match subscription.reconcile(&stored)? {
                        Reconcile::Keep => {}
                        Reconcile::Update => {
                            staged.insert(
                                id,
                                Subscription {
                                    config: subscription.config.clone(),
                                    revision: subscription.revision,
                                    start_from: Default::default(),
                                    ordered: subscription.ordered,
                                    ..stored
                                },
                            );
                        }
                        Reconcile::Repoint => {
                            staged.insert(id, subscription.clone());
                        }
                    }
                    id
                }
            };
            ids.push(id);
        }
        self.subscriptions = staged;
        for (id, start_from) in created {
            let mut lifecycle = Lifecycle::created(now, self.last_position, start_from);
            // A revived subscription keeps its latest error, as `PgStore`'s column does.
            if let Some(retired) = self.lifecycles.get_mut(&id) {
                lifecycle.last_error = retired.last_error.take();
            }
            self.lifecycles.insert(id, lifecycle);
        }
        Ok(ids)
    }

    /// The life of subscription `id` (every stored subscription has one).
    pub(in crate::memory) fn lifecycle(&self, id: SubscriptionId) -> &Lifecycle {
        self.lifecycles
            .get(&id)
            .expect("every subscription gets its lifecycle when registered")
    }

    fn lifecycle_mut(&mut self, id: SubscriptionId) -> &mut Lifecycle {
        self.lifecycles
            .get_mut(&id)
            .expect("every subscription gets its lifecycle when registered")
    }

    /// Pauses `id` at `now`; whether it was running.
    pub(in crate::memory) fn pause(&mut self, id: SubscriptionId, now: Instant) -> bool {
        let lifecycle = self.lifecycle_mut(id);
        let running = lifecycle.paused_at.is_none();
        if running {
            lifecycle.paused_at = Some(now);
        }
        running
    }

    /// Resumes `id`; whether it was paused.
    pub(in crate::memory) fn resume(&mut self, id: SubscriptionId) -> bool {
        self.lifecycle_mut(id).paused_at.take().is_some()
    }

    /// Retires `id` at `now` (a retired one stays retired since it first was): every row deleted,
    /// the backfill dropped. Returns what was deleted.
    pub(in crate::memory) fn retire(&mut self, id: SubscriptionId, now: Instant) -> Retired {
        let positions: Vec<i64> = self.rows_of(id).map(|(position, _)| position).collect();
        let mut retired = Retired { open: 0, dead: 0 };
        for position in positions {
            if let Some(row) = self.remove_delivery((id, position), now) {
                if row.status == DeliveryStatus::Dead {
                    retired.dead += 1;
                } else {
                    retired.open += 1;
                }
            }
        }
        self.claimable.remove(&id);
        let lifecycle = self.lifecycle_mut(id);
        lifecycle.retired_at.get_or_insert(now);
        lifecycle.backfill = None;
        retired
    }
}
