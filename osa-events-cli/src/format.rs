//! How times, ages and long texts are printed.

use std::time::{Duration, SystemTime};

/// A time as RFC 3339 UTC, to the second (`2026-12-01T10:00:00Z`).
pub(crate) fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A time as RFC 3339 UTC with milliseconds, for JSON.
pub(crate) fn time_millis(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// A duration in its two largest units: `45s`, `3m12s`, `2h05m`, `3d04h`.
pub(crate) fn age(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        3600..86_400 => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d{:02}h", seconds / 86_400, seconds % 86_400 / 3600),
    }
}

/// How long before `now` `at` was (zero when it is later).
pub(crate) fn since(at: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(at).unwrap_or_default()
}

/// `at` as an age before `now`: `3m12s ago`.
pub(crate) fn ago(at: SystemTime, now: SystemTime) -> String {
    format!("{} ago", age(since(at, now)))
}

/// `text` on one line, cut to `max` characters with an ellipsis.
pub(crate) fn cut(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let mut kept: String = flat.chars().take(max.saturating_sub(1)).collect();
        kept.push('…');
        kept
    }
}

/// `-` for nothing.
pub(crate) fn or_dash(text: Option<String>) -> String {
    text.unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_in_two_units() {
        assert_eq!(age(Duration::from_secs(45)), "45s");
        assert_eq!(age(Duration::from_secs(192)), "3m12s");
        assert_eq!(age(Duration::from_secs(2 * 3600 + 300)), "2h05m");
        assert_eq!(age(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d04h");
    }

    #[test]
    fn long_texts_are_cut_on_one_line() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("a\nb", 10), "a b");
        assert_eq!(cut("abcdefghijkl", 5), "abcd…");
    }
}
