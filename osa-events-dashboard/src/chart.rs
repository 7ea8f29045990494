//! The last hour as a small chart: one bar per minute, handled below and failed on top, drawn
//! as inline SVG on the server, so it shows with JavaScript off too.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use osa_events_core::operations::{ActivityBucket, ActivityKind};

use crate::format::number;
use crate::html::Html;

/// How many minutes a chart covers.
pub(crate) const MINUTES: usize = 60;

/// One minute's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Minute {
    /// Deliveries handled (projection events applied).
    pub(crate) handled: u64,
    /// Attempts failed (into a retry or a dead letter).
    pub(crate) failed: u64,
}

/// The last hour of every handler and projection, from the activity the runtimes record.
#[derive(Debug, Default)]
pub(crate) struct History {
    by_name: HashMap<(ActivityKind, String), [Minute; MINUTES]>,
}

impl History {
    /// When the history starts, for a status taken at `now` (store time).
    pub(crate) fn since(now: SystemTime) -> SystemTime {
        now - Duration::from_secs(60 * MINUTES as u64)
    }

    /// The buckets of the hour before `now`, oldest minute first.
    pub(crate) fn new(buckets: Vec<ActivityBucket>, now: SystemTime) -> Self {
        let mut by_name: HashMap<(ActivityKind, String), [Minute; MINUTES]> = HashMap::new();
        for bucket in buckets {
            let Ok(age) = now.duration_since(bucket.minute) else {
                // A minute ahead of the status's clock: this minute.
                continue;
            };
            let minutes_ago = (age.as_secs() / 60) as usize;
            if minutes_ago >= MINUTES {
                continue;
            }
            let minutes = by_name
                .entry((bucket.kind, bucket.name))
                .or_insert([Minute::default(); MINUTES]);
            let slot = &mut minutes[MINUTES - 1 - minutes_ago];
            slot.handled += bucket.handled;
            slot.failed += bucket.failed + bucket.dead;
        }
        Self { by_name }
    }

    /// The minutes of `name`, oldest first (all zero when it did nothing).
    pub(crate) fn of(&self, kind: ActivityKind, name: &str) -> [Minute; MINUTES] {
        self.by_name
            .get(&(kind, name.to_owned()))
            .copied()
            .unwrap_or([Minute::default(); MINUTES])
    }
}

/// Totals of `minutes`: handled, failed.
pub(crate) fn totals(minutes: &[Minute]) -> (u64, u64) {
    minutes.iter().fold((0, 0), |(handled, failed), minute| {
        (handled + minute.handled, failed + minute.failed)
    })
}

/// The chart of `minutes`, `scale` pixels per minute wide and 24 high (`scale` 2 for a table
/// row, 6 for a handler's page).
pub(crate) fn sparkline(minutes: &[Minute; MINUTES], scale: u32) -> Html {
    let (handled, failed) = totals(minutes);
    let peak = minutes
        .iter()
        .map(|minute| minute.handled + minute.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let height = 24u64;
    let width = MINUTES as u32 * scale;
    let label = format!(
        "last hour: {} handled, {} failed",
        number(handled),
        number(failed)
    );
    let mut html = Html::new();
    html.raw("<svg class=\"chart\" role=\"img\" preserveAspectRatio=\"none\"")
        .attr("width", &width.to_string())
        .attr("height", &height.to_string())
        .attr("viewBox", &format!("0 0 {width} {height}"))
        .attr("aria-label", &label)
        .raw("><title>")
        .text(&label)
        .raw("</title><rect class=\"chart-base\" x=\"0\"")
        .attr("y", &(height - 1).to_string())
        .attr("width", &width.to_string())
        .raw(" height=\"1\"/>");
    for (i, minute) in minutes.iter().enumerate() {
        let total = minute.handled + minute.failed;
        if total == 0 {
            continue;
        }
        // At least a pixel for any minute with work, so a trickle shows.
        let bar = (total * height).div_ceil(peak).max(1);
        let failed_part = if minute.failed == 0 {
            0
        } else {
            (minute.failed * bar).div_ceil(total).max(1)
        };
        let x = (i as u32 * scale).to_string();
        let bar_width = scale
            .saturating_sub(u32::from(scale > 2))
            .max(1)
            .to_string();
        if bar > failed_part {
            html.raw("<rect class=\"chart-ok\"")
                .attr("x", &x)
                .attr("y", &(height - bar + failed_part).to_string())
                .attr("width", &bar_width)
                .attr("height", &(bar - failed_part).to_string())
                .raw("/>");
        }
        if failed_part > 0 {
            html.raw("<rect class=\"chart-failed\"")
                .attr("x", &x)
                .attr("y", &(height - bar).to_string())
                .attr("width", &bar_width)
                .attr("height", &failed_part.to_string())
                .raw("/>");
        }
    }
    html.raw("</svg>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(name: &str, minutes_ago: u64, handled: u64, failed: u64) -> ActivityBucket {
        ActivityBucket {
            kind: ActivityKind::Handler,
            name: name.to_owned(),
            minute: SystemTime::UNIX_EPOCH + Duration::from_secs(7_200 - 60 * minutes_ago),
            handled,
            failed,
            dead: 0,
        }
    }

    #[test]
    fn buckets_land_in_their_minute_and_old_ones_drop() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(7_200 + 30);
        let history = History::new(
            vec![
                bucket("a", 0, 5, 1),
                bucket("a", 59, 2, 0),
                bucket("a", 60, 100, 100),
                bucket("b", 3, 7, 0),
            ],
            now,
        );
        let a = history.of(ActivityKind::Handler, "a");
        assert_eq!(
            a[MINUTES - 1],
            Minute {
                handled: 5,
                failed: 1
            }
        );
        assert_eq!(
            a[0],
            Minute {
                handled: 2,
                failed: 0
            }
        );
        assert_eq!(totals(&a), (7, 1));
        assert_eq!(totals(&history.of(ActivityKind::Handler, "b")), (7, 0));
        assert_eq!(totals(&history.of(ActivityKind::Projection, "a")), (0, 0));
    }

    #[test]
    fn the_chart_says_its_totals_and_draws_failures() {
        let mut minutes = [Minute::default(); MINUTES];
        minutes[10] = Minute {
            handled: 90,
            failed: 10,
        };
        minutes[20] = Minute {
            handled: 1,
            failed: 0,
        };
        let svg = sparkline(&minutes, 2).into_string();
        assert!(svg.contains("last hour: 91 handled, 10 failed"), "{svg}");
        assert_eq!(svg.matches("chart-failed").count(), 1, "{svg}");
        assert_eq!(svg.matches("chart-ok").count(), 2, "{svg}");
    }
}
