use std::time::Duration;

use super::{HandlerOptions, KEYS, Setting};
use crate::handler::{HandlerSpec, Shape};

fn parse(key: &str, text: &str) -> Result<Setting, String> {
    Setting::parse(key, text).expect("an overridable option")
}

#[test]
fn every_key_parses_and_names_its_setting() {
    let samples = [
        ("batch", "128"),
        ("linger", "50ms"),
        ("poll", "500ms"),
        ("retries", "0"),
        ("claim_timeout", "5m"),
        ("concurrency", "4"),
        ("timeout", "30s"),
        ("backoff", "2s"),
        ("max_backoff", "1h"),
    ];
    assert_eq!(
        samples.iter().map(|(key, _)| *key).collect::<Vec<_>>(),
        KEYS,
        "one sample per key, in the table's order"
    );
    for (key, text) in samples {
        let setting = parse(key, text).unwrap_or_else(|error| panic!("{key}: {error}"));
        assert_eq!(setting.key(), key);
    }
    assert_eq!(
        parse("poll", " 1m 30s "),
        Ok(Setting::Poll(Duration::from_secs(90)))
    );
    assert!(Setting::parse("routing_key", "x").is_none());
    assert!(Setting::parse("name", "x").is_none());
    assert!(
        Setting::parse("BATCH", "1").is_none(),
        "keys are lower-case"
    );
}

#[test]
fn unparsable_values_name_the_option_and_its_range() {
    assert_eq!(
        parse("batch", "lots").unwrap_err(),
        "invalid integer \"lots\" for `batch` (expected an integer in 1..=1000)"
    );
    assert_eq!(
        parse("retries", "-1").unwrap_err(),
        "invalid integer \"-1\" for `retries` (expected an integer in 0..=100)"
    );
    // humantime's own message sits in the middle (its list of units varies by version).
    let parsecs = parse("poll", "5 parsecs").unwrap_err();
    assert!(
        parsecs.starts_with(
            "invalid duration \"5 parsecs\" for `poll`: unknown time unit \"parsecs\""
        ),
        "{parsecs}"
    );
    assert!(
        parsecs.ends_with("(expected a duration of at least 1ms, e.g. \"500ms\", \"30s\", \"2m\")"),
        "{parsecs}"
    );
    assert_eq!(
        parse("claim_timeout", "500").unwrap_err(),
        "invalid duration \"500\" for `claim_timeout`: time unit needed, for example 500sec or \
         500ms (expected a duration in 1s..=1day, e.g. \"500ms\", \"30s\", \"2m\")"
    );
}

#[test]
fn out_of_range_values_get_the_macros_messages() {
    assert_eq!(
        parse("batch", "0").unwrap_err(),
        "`batch` must be in 1..=1000, found 0"
    );
    assert_eq!(
        parse("batch", "1001").unwrap_err(),
        "`batch` must be in 1..=1000, found 1001"
    );
    assert_eq!(
        parse("retries", "101").unwrap_err(),
        "`retries` must be in 0..=100, found 101"
    );
    assert_eq!(
        parse("concurrency", "257").unwrap_err(),
        "`concurrency` must be in 1..=256, found 257"
    );
    assert_eq!(
        parse("claim_timeout", "2days").unwrap_err(),
        "`claim_timeout` must be in 1s..=1day, found 2days"
    );
    assert_eq!(
        parse("claim_timeout", "999ms").unwrap_err(),
        "`claim_timeout` must be in 1s..=1day, found 999ms"
    );
    assert_eq!(
        parse("poll", "0s").unwrap_err(),
        "`poll` must be at least 1ms, found 0s"
    );
    assert_eq!(
        parse("timeout", "0ms").unwrap_err(),
        "`timeout` must be at least 1ms, found 0s"
    );
    assert_eq!(parse("linger", "0s"), Ok(Setting::Linger(Duration::ZERO)));
}

#[test]
fn builder_values_are_checked_like_parsed_ones() {
    assert_eq!(HandlerOptions::new().batch(64).retries(3).check(), Ok(()));
    assert_eq!(
        HandlerOptions::new().batch(64).concurrency(0).check(),
        Err("`concurrency` must be in 1..=256, found 0".to_owned())
    );
    assert_eq!(
        HandlerOptions::new()
            .backoff(Duration::from_micros(10))
            .check(),
        Err("`backoff` must be at least 1ms, found 10us".to_owned())
    );
}

#[test]
fn a_later_value_replaces_an_earlier_one() {
    let options = HandlerOptions::new()
        .batch(1)
        .poll(Duration::from_secs(2))
        .batch(7);
    assert_eq!(
        options.settings,
        [Setting::Poll(Duration::from_secs(2)), Setting::Batch(7)]
    );
    let spec = options.apply(HandlerSpec::new("h", "p::h", "e", 1, Shape::Batch));
    assert_eq!(spec.batch(), 7);
    assert_eq!(spec.poll(), Duration::from_secs(2));
    assert_eq!(
        spec.retries(),
        HandlerSpec::DEFAULT_RETRIES,
        "unset options are kept"
    );
}

#[test]
fn every_setting_changes_its_option_of_the_spec() {
    let base = HandlerSpec::new("h", "p::h", "e", 1, Shape::Batch);
    let second = Duration::from_secs(7);
    let options = HandlerOptions::new()
        .batch(9)
        .linger(Duration::from_millis(9))
        .poll(second)
        .retries(9)
        .claim_timeout(Duration::from_secs(90))
        .concurrency(9)
        .timeout(second)
        .backoff(second)
        .max_backoff(Duration::from_secs(70));
    assert_eq!(options.settings.len(), KEYS.len());
    let spec = options.apply(base);
    assert_eq!(
        Setting::all_of(&spec).collect::<Vec<_>>(),
        options.settings,
        "all_of reads back what apply wrote, in the same order"
    );
}
