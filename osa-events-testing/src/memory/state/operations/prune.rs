//! Retention: deleting old events nothing needs any more.

use std::time::SystemTime;

use osa_events::Result;
use osa_events::operations::{Prune, PruneStep};

use crate::memory::DeliveryStatus;
use crate::memory::state::Tables;
use crate::memory::time::Now;

impl Tables {
    /// One step of `prune` after `after`: examines the next `prune.batch` events, stopping at
    /// the first one not older than the cutoff, and deletes each that no row refers to and every
    /// projection has passed (with `include_dead`, after deleting its rows when all are dead).
    /// Nothing else holds the retention lock here, so a step is never busy.
    pub(in crate::memory) fn prune(
        &mut self,
        prune: &Prune,
        after: i64,
        now: Now,
    ) -> Result<PruneStep> {
        prune.checked_batch()?;
        let cutoff = now
            .wall()
            .checked_sub(prune.older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let batch = usize::try_from(prune.batch).unwrap_or(usize::MAX);
        let examined: Vec<i64> = self
            .events
            .range(after.saturating_add(1)..)
            .take(batch)
            .map(|(&position, _)| position)
            .collect();
        let examined_count = examined.len();
        let mut step = PruneStep {
            through: after,
            ..PruneStep::default()
        };
        for position in examined {
            let logged = &self.events[&position];
            if logged.published_at >= cutoff {
                step.done = true;
                break;
            }
            step.through = position;
            let passed = self.checkpoints().all(|checkpoint| {
                (logged.commit, position) <= (checkpoint.commit_seq, checkpoint.position)
            });
            let rows: Vec<_> = self
                .subscriptions
                .keys()
                .filter_map(|id| {
                    self.deliveries
                        .get(&(*id, position))
                        .map(|row| (*id, row.status))
                })
                .collect();
            let only_dead = rows
                .iter()
                .all(|(_, status)| *status == DeliveryStatus::Dead);
            if !passed || !(rows.is_empty() || prune.include_dead && only_dead) {
                step.kept += 1;
                continue;
            }
            for (id, _) in &rows {
                self.remove_delivery((*id, position), now.instant);
            }
            step.dead += rows.len() as u64;
            if let Some(logged) = self.events.remove(&position) {
                self.event_ids.remove(&logged.raw.id);
            }
            step.events += 1;
        }
        // Fewer events than a batch: the log has no more (as `PgStore` judges it).
        step.done |= examined_count < batch;
        Ok(step)
    }
}
