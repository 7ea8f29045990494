//! Store time as wall-clock time. The store's clock reads [`Instant`]s; what it reports
//! (`published_at`, `updated_at`, `last_seen`, ...) are [`SystemTime`]s, all mapped through one
//! reading of both clocks taken when the store was made, so they agree with each other and move
//! only as the store's clock does.

use std::time::SystemTime;

use tokio::time::Instant;

/// One reading of both clocks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Epoch {
    instant: Instant,
    wall: SystemTime,
}

impl Epoch {
    /// The store clock's `instant`, paired with the wall clock's now.
    pub(super) fn at(instant: Instant) -> Self {
        Self {
            instant,
            wall: SystemTime::now(),
        }
    }

    /// The wall-clock time of the store clock's `instant`.
    pub(super) fn wall(self, instant: Instant) -> SystemTime {
        if instant >= self.instant {
            self.wall + (instant - self.instant)
        } else {
            self.wall
                .checked_sub(self.instant - instant)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }
    }
}

impl Epoch {
    /// The store clock's instant of the wall-clock time `wall` (the inverse of
    /// [`wall`](Self::wall)): a time before this epoch that the clock cannot represent as the
    /// epoch's instant, a time too far ahead a hundred years ahead (no test gets there).
    pub(super) fn instant(self, wall: SystemTime) -> Instant {
        match wall.duration_since(self.wall) {
            Ok(ahead) => super::state::later(self.instant, ahead),
            Err(behind) => self
                .instant
                .checked_sub(behind.duration())
                .unwrap_or(self.instant),
        }
    }
}

/// The store's now, for the operations that report times.
#[derive(Debug, Clone, Copy)]
pub(super) struct Now {
    /// The store clock's reading.
    pub(super) instant: Instant,
    epoch: Epoch,
}

impl Now {
    /// `instant`, reported through `epoch`.
    pub(super) fn new(instant: Instant, epoch: Epoch) -> Self {
        Self { instant, epoch }
    }

    /// Now, as wall-clock time.
    pub(super) fn wall(self) -> SystemTime {
        self.epoch.wall(self.instant)
    }

    /// The store clock's `instant`, as wall-clock time.
    pub(super) fn wall_of(self, instant: Instant) -> SystemTime {
        self.epoch.wall(instant)
    }

    /// The store clock's instant of the wall-clock time `wall`.
    pub(super) fn instant_of(self, wall: SystemTime) -> Instant {
        self.epoch.instant(wall)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn instants_map_to_wall_times_at_the_same_distance() {
        let start = Instant::now();
        let epoch = Epoch::at(start);
        let later = epoch.wall(start + Duration::from_secs(3));
        assert_eq!(
            later.duration_since(epoch.wall(start)).ok(),
            Some(Duration::from_secs(3))
        );
        let now = Now::new(start + Duration::from_secs(5), epoch);
        assert_eq!(
            now.wall().duration_since(later).ok(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(now.wall_of(start), epoch.wall(start));
    }

    #[test]
    fn wall_times_map_back_to_their_instants() {
        let start = Instant::now() + Duration::from_secs(10);
        let epoch = Epoch::at(start);
        for instant in [
            start,
            start + Duration::from_secs(90),
            start - Duration::from_secs(4),
        ] {
            assert_eq!(epoch.instant(epoch.wall(instant)), instant);
        }
    }

    #[test]
    fn an_instant_before_the_epoch_maps_earlier() {
        let start = Instant::now() + Duration::from_secs(10);
        let epoch = Epoch::at(start);
        let earlier = epoch.wall(start - Duration::from_secs(4));
        assert_eq!(
            epoch.wall(start).duration_since(earlier).ok(),
            Some(Duration::from_secs(4))
        );
    }
}
