//! Run-time overrides of handler options: [`HandlerOptions`], and the [`Setting`]s it holds.
//!
//! The overridable options are the operational knobs of `#[event_handler]` (never what a handler
//! receives: its event type, shape or routing key). Each is one [`Setting`] variant; its key, its
//! range (from the macro's table, `limits`), how it is read from text and how it changes a
//! [`HandlerSpec`] are exhaustive matches on that enum, so a new option is one variant and the
//! compiler points at every place it needs.
//!
//! To make another option overridable: a `Setting` variant; its arm in `key`, `bounded` (with a
//! `Bounded` kind for a new value type, say a flag), `parse` (and a `Reader` kind), `apply` and
//! `all_of`; its key in [`KEYS`] (the environment's `<OPTION>` list follows); a setter on
//! [`HandlerOptions`]; the docs' lists of overridable options.

use std::time::Duration;

use super::{HandlerSpec, limits};

/// Run-time values of a handler's options, overriding what its `#[event_handler]` declares.
///
/// Built in the closure of [`RuntimeBuilder::configure`](crate::RuntimeBuilder::configure) or
/// [`RuntimeBuilder::handler_instance`](crate::RuntimeBuilder::handler_instance); operators set the
/// same options from the environment (`OSA_EVENTS_HANDLER_<NAME>_<OPTION>`, see
/// [`RuntimeBuilder::environment`](crate::RuntimeBuilder::environment)). Options left unset keep
/// the handler's own values. A setter called twice keeps the last value.
///
/// Values are checked by [`RuntimeBuilder::build`](crate::RuntimeBuilder::build) against the
/// ranges the macro checks at compile time (`batch` in 1..=1000, `claim_timeout` in 1s..=24h, …;
/// see the options table of `#[event_handler]`): the setters cannot fail, `build` does.
///
/// # Examples
///
/// ```no_run
/// # async fn example(store: osa_events::PgStore) -> Result<(), osa_events::Error> {
/// use std::time::Duration;
///
/// let runtime = osa_events::Runtime::builder(store)
///     .configure("index.vector", |o| o.batch(128).poll(Duration::from_millis(250)))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct HandlerOptions {
    /// Only for instances: `configure` and the environment refuse it.
    pub(crate) routing_key: Option<String>,
    /// At most one per option, in the order they were set.
    pub(crate) settings: Vec<Setting>,
}

impl HandlerOptions {
    /// No option set: the handler's own values.
    ///
    /// # Examples
    ///
    /// ```
    /// let options = osa_events::HandlerOptions::new().batch(64);
    /// assert_ne!(options, osa_events::HandlerOptions::new());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Claims up to `batch` deliveries at once (the `batch` option, 1..=1000).
    ///
    /// # Examples
    ///
    /// ```
    /// let options = osa_events::HandlerOptions::new().batch(128);
    /// ```
    pub fn batch(self, batch: u32) -> Self {
        self.set(Setting::Batch(batch))
    }

    /// After a short claim, waits up to `linger` for a fuller batch (the `linger` option: batch
    /// handlers only, at most a third of `claim_timeout`).
    ///
    /// # Examples
    ///
    /// ```
    /// let options = osa_events::HandlerOptions::new().linger(std::time::Duration::from_millis(50));
    /// ```
    pub fn linger(self, linger: Duration) -> Self {
        self.set(Setting::Linger(linger))
    }

    /// Sleeps `poll` when idle and no wake-up arrives (the `poll` option, at least 1 ms).
    ///
    /// # Examples
    ///
    /// ```
    /// let options = osa_events::HandlerOptions::new().poll(std::time::Duration::from_millis(500));
    /// ```
    pub fn poll(self, poll: Duration) -> Self {
        self.set(Setting::Poll(poll))
    }

    /// Retries a failed delivery `retries` times before it is dead (the `retries` option, 0..=100).
    ///
    /// # Examples
    ///
    /// ```
    /// let options = osa_events::HandlerOptions::new().retries(10);
    /// ```
    pub fn retries(self, retries: u32) -> Self {
        self.set(Setting::Retries(retries))
    }

    /// Holds a claim `claim_timeout` without a heartbeat (the `claim_timeout` option, 1s..=24h).
    ///
    /// # Examples
    ///
    /// ```
    /// let options = osa_events::HandlerOptions::new().claim_timeout(std::time::Duration::from_secs(300));
    /// ```
    pub fn claim_timeout(self, claim_timeout: Duration) -> Self {
        self.set(Setting::ClaimTimeout(claim_timeout))
    }

    /// Runs `concurrency` claim loops per process (the `concurrency` option, 1..=256).
    ///
    /// # Examples
    ///
    /// ```
    /// let options = osa_events::HandlerOptions::new().concurrency(4);
    /// ```
    pub fn concurrency(self, concurrency: u32) -> Self {
        self.set(Setting::Concurrency(concurrency))
    }

    /// Fails a call that runs longer than `timeout` (the `timeout` option, at least 1 ms).
    ///
    /// # Examples
    ///
    /// ```
    /// let options = osa_events::HandlerOptions::new().timeout(std::time::Duration::from_secs(30));
    /// ```
    pub fn timeout(self, timeout: Duration) -> Self {
        self.set(Setting::Timeout(timeout))
    }

    /// Waits `backoff` before the first retry, doubling per attempt (the `backoff` option, at
    /// least 1 ms).
    ///
    /// # Examples
    ///
    /// ```
    /// let options = osa_events::HandlerOptions::new().backoff(std::time::Duration::from_secs(2));
    /// ```
    pub fn backoff(self, backoff: Duration) -> Self {
        self.set(Setting::Backoff(backoff))
    }

    /// Caps the retry delay at `max_backoff` (the `max_backoff` option, at least `backoff`).
    ///
    /// # Examples
    ///
    /// ```
    /// let options = osa_events::HandlerOptions::new().max_backoff(std::time::Duration::from_secs(300));
    /// ```
    pub fn max_backoff(self, max_backoff: Duration) -> Self {
        self.set(Setting::MaxBackoff(max_backoff))
    }

    /// Receives only events published with `routing_key`: for
    /// [`handler_instance`](crate::RuntimeBuilder::handler_instance) only, where it replaces the
    /// template's `routing_key`. [`configure`](crate::RuntimeBuilder::configure) refuses it (a
    /// registered handler's routing key is part of its subscription: change it with
    /// [`repoint`](crate::RuntimeBuilder::repoint)).
    ///
    /// # Examples
    ///
    /// ```
    /// let options = osa_events::HandlerOptions::new().routing_key("s3");
    /// ```
    pub fn routing_key(mut self, routing_key: impl Into<String>) -> Self {
        self.routing_key = Some(routing_key.into());
        self
    }

    /// `self` with `setting`, replacing an earlier value of its option.
    pub(crate) fn set(mut self, setting: Setting) -> Self {
        self.settings.retain(|set| set.key() != setting.key());
        self.settings.push(setting);
        self
    }

    /// Whether no option is set.
    pub(crate) fn is_empty(&self) -> bool {
        self.routing_key.is_none() && self.settings.is_empty()
    }

    /// Checks every value against its option's range; `Err` is the first bad value's message.
    pub(crate) fn check(&self) -> Result<(), String> {
        self.settings.iter().try_for_each(|setting| setting.check())
    }

    /// `spec` with these options' values (the routing key aside).
    pub(crate) fn apply(&self, spec: HandlerSpec) -> HandlerSpec {
        self.settings
            .iter()
            .fold(spec, |spec, setting| setting.apply(spec))
    }
}

/// One overridable option with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setting {
    Batch(u32),
    Linger(Duration),
    Poll(Duration),
    Retries(u32),
    ClaimTimeout(Duration),
    Concurrency(u32),
    Timeout(Duration),
    Backoff(Duration),
    MaxBackoff(Duration),
}

/// The keys of the overridable options, in the order of the docs' table: the attribute's keys,
/// `HandlerSpec::config_json`'s, and (upper-cased) the environment variables' suffixes.
pub(crate) const KEYS: &[&str] = &[
    "batch",
    "linger",
    "poll",
    "retries",
    "claim_timeout",
    "concurrency",
    "timeout",
    "backoff",
    "max_backoff",
];

/// How the text of an option is read: the variant constructor it feeds.
enum Reader {
    Count(fn(u32) -> Setting),
    Duration(fn(Duration) -> Setting),
}

/// A value with its option's allowed range.
enum Bounded {
    Count {
        value: u32,
        min: u32,
        max: u32,
    },
    Duration {
        value: Duration,
        min: Duration,
        /// `None`: no upper bound.
        max: Option<Duration>,
    },
}

impl Bounded {
    /// "an integer in 1..=1000", "a duration in 1s..=1day", "a duration of at least 1ms".
    fn expected(&self) -> String {
        match self {
            Bounded::Count { min, max, .. } => format!("an integer in {min}..={max}"),
            Bounded::Duration {
                min,
                max: Some(max),
                ..
            } => format!("a duration in {}..={}", human(*min), human(*max)),
            Bounded::Duration { min, max: None, .. } => {
                format!("a duration of at least {}", human(*min))
            }
        }
    }

    /// The macro's messages: "`batch` must be in 1..=1000, found 0".
    fn check(&self, key: &str) -> Result<(), String> {
        match *self {
            Bounded::Count { value, min, max } if !(min..=max).contains(&value) => {
                Err(format!("`{key}` must be in {min}..={max}, found {value}"))
            }
            Bounded::Duration {
                value,
                min,
                max: Some(max),
            } if value < min || value > max => Err(format!(
                "`{key}` must be in {}..={}, found {}",
                human(min),
                human(max),
                human(value)
            )),
            Bounded::Duration {
                value,
                min,
                max: None,
            } if value < min => Err(format!(
                "`{key}` must be at least {}, found {}",
                human(min),
                human(value)
            )),
            _ => Ok(()),
        }
    }
}

fn human(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

impl Setting {
    /// The option's key, as in the attribute.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Setting::Batch(_) => "batch",
            Setting::Linger(_) => "linger",
            Setting::Poll(_) => "poll",
            Setting::Retries(_) => "retries",
            Setting::ClaimTimeout(_) => "claim_timeout",
            Setting::Concurrency(_) => "concurrency",
            Setting::Timeout(_) => "timeout",
            Setting::Backoff(_) => "backoff",
            Setting::MaxBackoff(_) => "max_backoff",
        }
    }

    /// The value with the option's range: the macro's (`linger`'s upper bound, a third of
    /// `claim_timeout`, and `max_backoff >= backoff` involve two options and are checked by
    /// `HandlerSpec::validate`).
    fn bounded(self) -> Bounded {
        let count = |value, min, max| Bounded::Count { value, min, max };
        let at_least = |value, min| Bounded::Duration {
            value,
            min,
            max: None,
        };
        match self {
            Setting::Batch(n) => count(n, 1, limits::MAX_BATCH),
            Setting::Retries(n) => count(n, 0, limits::MAX_RETRIES),
            Setting::Concurrency(n) => count(n, 1, limits::MAX_CONCURRENCY),
            Setting::Linger(d) => at_least(d, Duration::ZERO),
            Setting::ClaimTimeout(d) => Bounded::Duration {
                value: d,
                min: limits::MIN_CLAIM_TIMEOUT,
                max: Some(limits::MAX_CLAIM_TIMEOUT),
            },
            Setting::Poll(d)
            | Setting::Timeout(d)
            | Setting::Backoff(d)
            | Setting::MaxBackoff(d) => at_least(d, limits::MIN_DURATION),
        }
    }

    /// Checks the value against the option's range.
    pub(crate) fn check(self) -> Result<(), String> {
        self.bounded().check(self.key())
    }

    /// Reads option `key` from `text` (an integer, or a humantime duration such as `"500ms"`)
    /// and checks its range; `None` if no overridable option has that key.
    pub(crate) fn parse(key: &str, text: &str) -> Option<Result<Setting, String>> {
        let reader = match key {
            "batch" => Reader::Count(Setting::Batch),
            "linger" => Reader::Duration(Setting::Linger),
            "poll" => Reader::Duration(Setting::Poll),
            "retries" => Reader::Count(Setting::Retries),
            "claim_timeout" => Reader::Duration(Setting::ClaimTimeout),
            "concurrency" => Reader::Count(Setting::Concurrency),
            "timeout" => Reader::Duration(Setting::Timeout),
            "backoff" => Reader::Duration(Setting::Backoff),
            "max_backoff" => Reader::Duration(Setting::MaxBackoff),
            _ => return None,
        };
        let trimmed = text.trim();
        let setting = match reader {
            Reader::Count(make) => trimmed.parse::<u32>().map(make).map_err(|_| {
                format!(
                    "invalid integer {text:?} for `{key}` (expected {})",
                    make(0).bounded().expected()
                )
            }),
            Reader::Duration(make) => humantime::parse_duration(trimmed).map(make).map_err(|error| {
                format!(
                    "invalid duration {text:?} for `{key}`: {error} (expected {}, e.g. \"500ms\", \"30s\", \"2m\")",
                    make(Duration::ZERO).bounded().expected()
                )
            }),
        };
        Some(setting.and_then(|setting| setting.check().map(|()| setting)))
    }

    /// `spec` with this value.
    pub(crate) fn apply(self, spec: HandlerSpec) -> HandlerSpec {
        match self {
            Setting::Batch(batch) => spec.with_batch(batch),
            Setting::Linger(linger) => spec.with_linger(linger),
            Setting::Poll(poll) => spec.with_poll(poll),
            Setting::Retries(retries) => spec.with_retries(retries),
            Setting::ClaimTimeout(claim_timeout) => spec.with_claim_timeout(claim_timeout),
            Setting::Concurrency(concurrency) => spec.with_concurrency(concurrency),
            Setting::Timeout(timeout) => spec.with_timeout(timeout),
            Setting::Backoff(backoff) => spec.with_backoff(backoff),
            Setting::MaxBackoff(max_backoff) => spec.with_max_backoff(max_backoff),
        }
    }

    /// The spec's own value of this option: for `HandlerSpec::validate`, which checks every
    /// option's range through this table.
    pub(crate) fn all_of(spec: &HandlerSpec) -> impl Iterator<Item = Setting> {
        [
            Some(Setting::Batch(spec.batch())),
            Some(Setting::Linger(spec.linger())),
            Some(Setting::Poll(spec.poll())),
            Some(Setting::Retries(spec.retries())),
            Some(Setting::ClaimTimeout(spec.claim_timeout())),
            Some(Setting::Concurrency(spec.concurrency())),
            spec.timeout().map(Setting::Timeout),
            Some(Setting::Backoff(spec.backoff())),
            Some(Setting::MaxBackoff(spec.max_backoff())),
        ]
        .into_iter()
        .flatten()
    }
}

#[cfg(test)]
mod tests;
