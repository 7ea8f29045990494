//! The projection side of the in-memory tables: checkpoints and leaders, the counterparts of
//! `osa_events.checkpoints` and of the advisory lock each leader holds in PostgreSQL.
//!
//! A leadership is a token. It holds until it is resigned (or its handle dropped, like a session
//! that ends) or deposed ([`InMemoryStore::depose_projection_leader`](crate::InMemoryStore::depose_projection_leader),
//! like a session the database terminates); every later call with the token fails with
//! [`Error::NotLeader`] and changes nothing.

use std::time::SystemTime;

use osa_events::{Error, ProjectionStatus, ResetTo, Result};

use osa_events::store::{Advance, Checkpoint, Delivery, Fence, event_type_set};
use uuid::Uuid;

use super::Tables;

/// A projection's checkpoint, its leader, and its last error.
#[derive(Debug)]
pub(in crate::memory) struct ProjectionRow {
    checkpoint: Checkpoint,
    /// How many resets the checkpoint has seen: a batch read before a reset must not commit.
    resets: u64,
    leader: Option<Lease>,
    last_error: Option<String>,
    updated_at: SystemTime,
    /// The event types the checkpoint was built from, sorted (`None` until recorded, and after
    /// a reset or an acknowledgement).
    event_types: Option<Vec<String>>,
}

/// Who leads, and the token their calls must show.
#[derive(Debug)]
struct Lease {
    token: Uuid,
    holder: String,
}

impl ProjectionRow {
    fn at_beginning(now: SystemTime) -> Self {
        Self {
            checkpoint: Checkpoint::default(),
            resets: 0,
            leader: None,
            last_error: None,
            updated_at: now,
            event_types: None,
        }
    }

    fn led_by(&self, token: Uuid) -> bool {
        self.leader
            .as_ref()
            .is_some_and(|lease| lease.token == token)
    }
}

impl Tables {
    /// Makes `holder` the leader of `name` if nobody leads it, creating its checkpoint at the
    /// beginning; returns the leadership's token.
    pub(in crate::memory) fn try_lead(
        &mut self,
        name: &str,
        holder: &str,
        now: SystemTime,
    ) -> Option<Uuid> {
        let row = self
            .projections
            .entry(name.to_owned())
            .or_insert_with(|| ProjectionRow::at_beginning(now));
        if row.leader.is_some() {
            return None;
        }
        let token = Uuid::new_v4();
        row.leader = Some(Lease {
            token,
            holder: holder.to_owned(),
        });
        Some(token)
    }

    /// The leader's row of `name`, or [`Error::NotLeader`].
    fn led(&mut self, name: &str, token: Uuid) -> Result<&mut ProjectionRow> {
        self.projections
            .get_mut(name)
            .filter(|row| row.led_by(token))
            .ok_or_else(|| Error::NotLeader {
                projection: name.to_owned(),
            })
    }

    /// Up to `limit` events of `event_types` after the checkpoint of `name`, in order, and the
    /// number of resets the checkpoint had seen (for [`commit_projection`](Self::commit_projection)).
    pub(in crate::memory) fn projection_batch(
        &mut self,
        name: &str,
        token: Uuid,
        event_types: &[&str],
        limit: u32,
    ) -> Result<(Vec<Delivery>, Advance, u64)> {
        let row = self.led(name, token)?;
        let (from, resets) = (row.checkpoint, row.resets);
        let (events, to) = self
            .events_after(from, event_types)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .fold((Vec::new(), from), |(mut events, _), (position, logged)| {
                let fence = Fence {
                    position,
                    token: Uuid::nil(),
                };
                events.push(logged.delivery(fence, 1, None));
                let to = Checkpoint {
                    commit_seq: logged.commit,
                    position,
                };
                (events, to)
            });
        Ok((events, Advance { from, to }, resets))
    }

    /// Moves the checkpoint of `name` as `advance` says, unless it was reset since the batch was
    /// read, when it had seen `resets` resets (then the reset stands, as in PostgreSQL, where the
    /// reset waits for the batch and overwrites it).
    pub(in crate::memory) fn commit_projection(
        &mut self,
        name: &str,
        token: Uuid,
        advance: Advance,
        resets: u64,
        now: SystemTime,
    ) -> Result<()> {
        let row = self.led(name, token)?;
        if row.resets == resets && row.checkpoint == advance.from {
            row.checkpoint = advance.to;
            row.last_error = None;
            row.updated_at = now;
        }
        Ok(())
    }

    /// Records why the last batch of `name` failed.
    pub(in crate::memory) fn record_projection_failure(
        &mut self,
        name: &str,
        token: Uuid,
        error: &str,
    ) -> Result<()> {
        self.led(name, token)?.last_error = Some(error.to_owned());
        Ok(())
    }

    /// Records that `name` reads `event_types`, refusing another set than its checkpoint was
    /// built from (as `osa_events.checkpoints.event_types` does).
    pub(in crate::memory) fn record_event_types(
        &mut self,
        name: &str,
        event_types: &[&str],
        now: SystemTime,
    ) -> Result<()> {
        let set = event_type_set(event_types);
        let row = self
            .projections
            .entry(name.to_owned())
            .or_insert_with(|| ProjectionRow::at_beginning(now));
        match &row.event_types {
            Some(stored) if *stored != set && row.checkpoint != Checkpoint::default() => {
                Err(Error::ProjectionEventTypesChanged {
                    projection: name.to_owned(),
                    stored: stored.clone(),
                    now: set,
                })
            }
            _ => {
                row.event_types = Some(set);
                Ok(())
            }
        }
    }

    /// Forgets the event types recorded for `name`, so the next record takes the new set.
    pub(in crate::memory) fn acknowledge_event_types(&mut self, name: &str) {
        if let Some(row) = self.projections.get_mut(name) {
            row.event_types = None;
        }
    }

    /// Ends the leadership `token` of `name`, if it still holds.
    pub(in crate::memory) fn resign_projection(&mut self, name: &str, token: Uuid) {
        if let Some(row) = self.projections.get_mut(name)
            && row.led_by(token)
        {
            row.leader = None;
        }
    }

    /// Ends whatever leadership of `name` holds; whether one did.
    pub(in crate::memory) fn depose_projection_leader(&mut self, name: &str) -> bool {
        self.projections
            .get_mut(name)
            .and_then(|row| row.leader.take())
            .is_some()
    }

    /// Where `name` stands, how far behind (at `now`), who leads it.
    pub(in crate::memory) fn projection_status(
        &self,
        name: &str,
        event_types: &[&str],
        now: SystemTime,
    ) -> ProjectionStatus {
        let from = self
            .projections
            .get(name)
            .map_or_else(Checkpoint::default, |row| row.checkpoint);
        let lag = i64::try_from(self.events_after(from, event_types).count()).unwrap_or(i64::MAX);
        let mut status = ProjectionStatus::never_ran(name, lag);
        status.oldest_unapplied = self
            .events_after(from, event_types)
            .map(|(_, logged)| logged.published_at)
            .min()
            .map(|published_at| now.duration_since(published_at).unwrap_or_default());
        if let Some(row) = self.projections.get(name) {
            status.position = row.checkpoint.position;
            status.commit_seq = row.checkpoint.commit_seq;
            status.leader = row.leader.as_ref().map(|lease| lease.holder.clone());
            status.last_error.clone_from(&row.last_error);
            status.updated_at = row.updated_at;
        }
        status
    }

    /// The state of every projection with a checkpoint, by name, each read with the event
    /// types it recorded (none: no lag to count), as `PgStore` lists them.
    pub(in crate::memory) fn stored_projection_statuses(
        &self,
        now: SystemTime,
    ) -> Vec<ProjectionStatus> {
        self.projections
            .iter()
            .map(|(name, row)| {
                let event_types: Vec<&str> = row
                    .event_types
                    .iter()
                    .flatten()
                    .map(String::as_str)
                    .collect();
                self.projection_status(name, &event_types, now)
            })
            .collect()
    }

    /// Rewinds `name` to `to`, creating its checkpoint if it has none.
    pub(in crate::memory) fn reset_projection(
        &mut self,
        name: &str,
        to: ResetTo,
        now: SystemTime,
    ) -> Result<()> {
        let checkpoint = match to {
            ResetTo::Beginning => Checkpoint::default(),
            ResetTo::End => self.events.last_key_value().map_or_else(
                Checkpoint::default,
                |(&position, logged)| Checkpoint {
                    commit_seq: logged.commit,
                    position,
                },
            ),
            ResetTo::AfterPosition(position) => {
                let logged = self.events.get(&position).ok_or_else(|| {
                    Error::Config(
                        format!("cannot reset projection `{name}`: no event at {to:?}").into(),
                    )
                })?;
                Checkpoint {
                    commit_seq: logged.commit,
                    position,
                }
            }
        };
        let row = self
            .projections
            .entry(name.to_owned())
            .or_insert_with(|| ProjectionRow::at_beginning(now));
        row.checkpoint = checkpoint;
        row.resets += 1;
        row.event_types = None;
        row.last_error = None;
        row.updated_at = now;
        Ok(())
    }

    /// The events of `event_types` after `from`, with their positions. Publishes are atomic and
    /// in order here, so `(commit, position)` order is position order.
    fn events_after<'a>(
        &'a self,
        from: Checkpoint,
        event_types: &'a [&'a str],
    ) -> impl Iterator<Item = (i64, &'a super::LoggedEvent)> + 'a {
        self.events
            .range(from.position.saturating_add(1).max(1)..)
            .filter(|(_, logged)| event_types.contains(&logged.raw.event_type.as_str()))
            .map(|(&position, logged)| (position, logged))
    }

    /// Every projection's checkpoint: an event no checkpoint has passed is still to be read.
    pub(in crate::memory) fn checkpoints(&self) -> impl Iterator<Item = Checkpoint> + '_ {
        self.projections.values().map(|row| row.checkpoint)
    }
}
