//! Values of flags: times (`--since`), durations (`--older-than`, `--watch`) and reset targets.
//!
//! Each parser's error says what was expected; clap adds the flag and the value.

use std::time::{Duration, SystemTime};

use osa_events::ResetTo;

/// What a TIME flag expects, for error messages.
const TIME_FORM: &str = "expected an RFC 3339 time (2026-12-01T10:00:00Z, \
                         2026-12-01T11:00:00+01:00) or a duration ago (90s, 30m, 2h, 7days)";

/// A TIME: an RFC 3339 time, or a duration meaning that long ago (`1h`: an hour ago).
pub(crate) fn parse_time(text: &str) -> Result<SystemTime, String> {
    time_at(text, SystemTime::now())
}

/// [`parse_time`] with "now" given.
fn time_at(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let text = text.trim();
    if let Ok(ago) = humantime::parse_duration(text) {
        return now
            .checked_sub(ago)
            .filter(|at| *at >= SystemTime::UNIX_EPOCH)
            .ok_or_else(|| format!("{text} ago is before 1970 ({TIME_FORM})"));
    }
    rfc3339(text).ok_or_else(|| TIME_FORM.to_owned())
}

/// An RFC 3339 time with `Z` or a numeric offset (`+01:00`), seconds fractions allowed.
fn rfc3339(text: &str) -> Option<SystemTime> {
    // humantime reads UTC (`Z`) only: take a numeric offset off, read the rest as UTC, and
    // shift by the offset.
    let (utc, offset) = match text
        .len()
        .checked_sub(6)
        .filter(|&at| text.is_char_boundary(at))
        .map(|at| text.split_at(at))
    {
        Some((rest, offset))
            if (offset.starts_with('+') || offset.starts_with('-'))
                && offset.as_bytes()[3] == b':'
                && rest.contains('T') =>
        {
            let hours: u64 = offset[1..3].parse().ok()?;
            let minutes: u64 = offset[4..6].parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = Duration::from_secs(hours * 3600 + minutes * 60);
            (format!("{rest}Z"), Some((offset.starts_with('+'), seconds)))
        }
        _ => (text.replace('z', "Z"), None),
    };
    if !utc.ends_with('Z') {
        return None;
    }
    let time = humantime::parse_rfc3339(&utc).ok()?;
    match offset {
        // 11:00+01:00 is 10:00Z.
        Some((true, by)) => time.checked_sub(by),
        Some((false, by)) => time.checked_add(by),
        None => Some(time),
    }
}

/// A DURATION: `90s`, `30m`, `12h`, `30days`, `1h 30m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("{error} (expected e.g. 90s, 30m, 12h, 30days)"))
}

/// `beginning`, `end` or a position.
pub(crate) fn parse_reset_to(text: &str) -> Result<ResetTo, String> {
    match text.trim() {
        "beginning" => Ok(ResetTo::Beginning),
        "end" => Ok(ResetTo::End),
        other => match other.parse::<i64>() {
            Ok(position) if position >= 0 => Ok(ResetTo::AfterPosition(position)),
            _ => Err("expected `beginning`, `end` or a position (a number ≥ 0)".to_owned()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn a_duration_means_that_long_ago() {
        assert_eq!(time_at("1h", at(10_000)), Ok(at(10_000 - 3600)));
        assert_eq!(time_at("90s", at(10_000)), Ok(at(10_000 - 90)));
    }

    #[test]
    fn rfc3339_with_z_or_an_offset() {
        let ten = humantime::parse_rfc3339("2026-12-01T10:00:00Z").unwrap();
        assert_eq!(time_at("2026-12-01T10:00:00Z", at(0)), Ok(ten));
        assert_eq!(time_at("2026-12-01T11:00:00+01:00", at(0)), Ok(ten));
        assert_eq!(time_at("2026-12-01T08:30:00-01:30", at(0)), Ok(ten));
        assert!(time_at("2026-12-01T10:00:00.250Z", at(0)).is_ok());
    }

    #[test]
    fn anything_else_says_what_is_expected() {
        for bad in [
            "yesterday",
            "2026-12-01",
            "2026-12-01T10:00:00",
            "10:00",
            "",
        ] {
            let error = time_at(bad, at(1_000_000)).unwrap_err();
            assert!(error.contains("RFC 3339"), "{bad}: {error}");
        }
        assert!(
            time_at("100years", at(1_000))
                .unwrap_err()
                .contains("before 1970")
        );
    }

    #[test]
    fn durations_and_reset_targets() {
        assert_eq!(
            parse_duration("30days"),
            Ok(Duration::from_secs(30 * 86_400))
        );
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("expected e.g.")
        );
        assert_eq!(parse_reset_to("beginning"), Ok(ResetTo::Beginning));
        assert_eq!(parse_reset_to("end"), Ok(ResetTo::End));
        assert_eq!(parse_reset_to("42"), Ok(ResetTo::AfterPosition(42)));
        assert!(parse_reset_to("-1").is_err());
        assert!(parse_reset_to("start").is_err());
    }
}
