//! The report: one row per scenario, each side's median, and osa-events' ratio to each baseline.

use std::fmt;
use std::time::Duration;

/// The table's header; [`Row`]'s `Display` writes its lines.
pub(crate) const HEADER: &str = "\
| scenario | minimal queue | own statements | osa-events | osa / minimal | osa / own |
| --- | ---: | ---: | ---: | ---: | ---: |";

/// One line of the report.
pub(crate) struct Row {
    pub(crate) scenario: String,
    /// The minimal single-table queue's figure (`minimal_queue.rs`), where the scenario has one.
    pub(crate) minimal: Option<f64>,
    /// The figure of the raw-SQL loop issuing osa-events' own statements (`baseline.rs`), where
    /// the scenario has one.
    pub(crate) own: Option<f64>,
    pub(crate) osa: f64,
    pub(crate) unit: &'static str,
}

/// The unit of a row whose figures are themselves ratios: dividing them again says nothing, so
/// such a row leaves its ratio columns empty.
pub(crate) const RATIO: &str = "x";

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = self.unit;
        let digits = if unit == "ev/s" { 0 } else { 2 };
        let figure = |value: Option<f64>| {
            value.map_or_else(
                || "—".to_owned(),
                |value| format!("{value:.digits$} {unit}"),
            )
        };
        let ratio = |baseline: Option<f64>| match baseline {
            Some(baseline) if unit != RATIO => format!("{:.2}", self.osa / baseline),
            _ => "—".to_owned(),
        };
        write!(
            f,
            "| {} | {} | {} | {} | {} | {} |",
            self.scenario,
            figure(self.minimal),
            figure(self.own),
            figure(Some(self.osa)),
            ratio(self.minimal),
            ratio(self.own),
        )
    }
}

/// Each side's figures over the repetitions of one scenario.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    pub(crate) minimal: Vec<f64>,
    pub(crate) own: Vec<f64>,
    pub(crate) osa: Vec<f64>,
}

impl Samples {
    /// The row of medians; a side with no samples did not run.
    pub(crate) fn row(&self, scenario: String, unit: &'static str) -> Row {
        let of = |values: &[f64]| (!values.is_empty()).then(|| median(values.to_vec()));
        Row {
            scenario,
            minimal: of(&self.minimal),
            own: of(&self.own),
            osa: median(self.osa.clone()),
            unit,
        }
    }
}

/// The median; of an even count, the upper of the two middle values.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Events per second.
pub(crate) fn rate(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64()
}

/// The `fraction` percentile of one run's latencies, in milliseconds (nearest rank).
pub(crate) fn percentile(run: &[Duration], fraction: f64) -> f64 {
    let mut sorted = run.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}
