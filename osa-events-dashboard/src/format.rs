//! How times, durations and counts read on the pages.

use std::time::{Duration, SystemTime};

/// A point in time, UTC, to the second: `2026-12-02 16:30:05`.
pub(crate) fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

/// A duration in its two largest units: `45s`, `4m 3s`, `2h 5m`, `3d 4h`.
pub(crate) fn duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs == 0 {
        return if duration.is_zero() {
            "0s".to_owned()
        } else {
            format!("{}ms", duration.as_millis())
        };
    }
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// How long before `now` `at` was: `4m 3s ago` (`just now` for a time ahead of `now`).
pub(crate) fn ago(at: SystemTime, now: SystemTime) -> String {
    match now.duration_since(at) {
        Ok(past) if past >= Duration::from_secs(1) => format!("{} ago", duration(past)),
        _ => "just now".to_owned(),
    }
}

/// `n` with thousands separated: `1,000,000`.
pub(crate) fn number(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The first line of `text`, at most `max` characters, with `…` when cut.
pub(crate) fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    let mut cut: String = line.chars().take(max).collect();
    if cut.len() < line.len() || text.lines().nth(1).is_some() {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_two_units() {
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_secs(45)), "45s");
        assert_eq!(duration(Duration::from_secs(243)), "4m 3s");
        assert_eq!(duration(Duration::from_secs(7_500)), "2h 5m");
        assert_eq!(duration(Duration::from_secs(273_600)), "3d 4h");
    }

    #[test]
    fn times_and_numbers() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_693_005);
        assert_eq!(time(at), "2025-12-02 16:30:05");
        assert_eq!(number(0), "0");
        assert_eq!(number(999), "999");
        assert_eq!(number(1_000_000), "1,000,000");
        assert_eq!(ago(at, at + Duration::from_secs(61)), "1m 1s ago");
        assert_eq!(ago(at + Duration::from_secs(5), at), "just now");
    }

    #[test]
    fn first_lines_are_cut_with_a_mark() {
        assert_eq!(first_line("short", 10), "short");
        assert_eq!(first_line("two\nlines", 10), "two…");
        assert_eq!(first_line("abcdef", 3), "abc…");
    }
}
