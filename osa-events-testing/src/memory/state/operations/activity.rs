//! The activity history: the counterpart of the `activity` table, on the store's clock.

use std::time::{Duration, SystemTime};

use osa_events::operations::{ACTIVITY_BUCKET, ACTIVITY_KEPT, ActivityBucket, ActivityDelta};

use crate::memory::state::Tables;
use crate::memory::time::Now;

impl Tables {
    /// Adds each delta with a count to its bucket of the minute of `now`, and forgets the
    /// buckets older than [`ACTIVITY_KEPT`], as `PgStore`'s statement does.
    pub(in crate::memory) fn record_activity(&mut self, deltas: &[ActivityDelta], now: Now) {
        let now = now.wall();
        let minute = minute_of(now);
        for delta in deltas {
            if delta.is_empty() {
                continue;
            }
            let key = (delta.kind.as_str(), delta.name.clone(), minute);
            let bucket = self.activity.entry(key).or_insert_with(|| ActivityBucket {
                kind: delta.kind,
                name: delta.name.clone(),
                minute,
                handled: 0,
                failed: 0,
                dead: 0,
            });
            bucket.handled = bucket.handled.saturating_add(delta.handled);
            bucket.failed = bucket.failed.saturating_add(delta.failed);
            bucket.dead = bucket.dead.saturating_add(delta.dead);
        }
        let cutoff = now
            .checked_sub(ACTIVITY_KEPT)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.activity.retain(|(_, _, minute), _| *minute >= cutoff);
    }

    /// The buckets from the minute of `since` on, by kind, name and minute.
    pub(in crate::memory) fn activity(&self, since: SystemTime) -> Vec<ActivityBucket> {
        let since = minute_of(since);
        self.activity
            .values()
            .filter(|bucket| bucket.minute >= since)
            .cloned()
            .collect()
    }
}

/// The start of the minute of `time`: `date_trunc('minute', ..)` (a time before the Unix epoch as
/// the epoch).
fn minute_of(time: SystemTime) -> SystemTime {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let width = ACTIVITY_BUCKET.as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(since - since % width)
}
