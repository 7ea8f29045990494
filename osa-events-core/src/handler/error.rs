//! [`HandlerError`]: what a handler returns when an event could not be handled.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The error a handler returns: the cause, and whether a retry could help.
///
/// Any error converts into a retryable `HandlerError` with `?` (anything that converts into
/// `Box<dyn Error + Send + Sync>`: `std::io::Error`, `sqlx::Error`, `anyhow::Error`, `String`, ...).
/// Say explicitly what should happen with one of the constructors, or with the [`ResultExt`]
/// methods on any `Result`:
///
/// | constructor | the delivery | the attempt |
/// | --- | --- | --- |
/// | [`retry`](Self::retry) (and `?`) | due again after the handler's backoff; dead once `retries` are used up | counted |
/// | [`permanent`](Self::permanent) | dead-lettered at once: a retry cannot help (a malformed record, a rejected request) | counted |
/// | [`retry_after`](Self::retry_after) | due again after the delay the handler chose (a rate limit's `Retry-After`), never dead-lettered by it | **not** counted |
/// | [`fatal`](Self::fatal) | given back, due at once; the whole runtime stops and [`Runtime::run`](crate::Runtime::run) returns [`Error::Fatal`](crate::Error::Fatal) | **not** counted |
///
/// (On the JetStream store the attempt is JetStream's delivery count, which every redelivery uses
/// up, so there `retry_after` and `fatal` count too.) A panic in the handler is a retryable
/// failure of its event, never fatal.
///
/// `HandlerError` does not implement [`std::error::Error`], so that the blanket conversion from every
/// error type can exist (the same choice as `anyhow::Error`). It implements `Display` and `Debug`.
///
/// # Examples
///
/// ```
/// use osa_events::{HandlerError, ResultExt};
///
/// fn parse(input: &str) -> Result<u32, HandlerError> {
///     let n: u32 = input.parse().permanent()?; // bad input: retrying cannot fix it
///     Ok(n)
/// }
///
/// assert!(parse("x").unwrap_err().is_permanent());
/// let err: HandlerError = std::io::Error::other("backend down").into();
/// assert!(!err.is_permanent());
/// ```
pub struct HandlerError {
    kind: Kind,
    origin: Origin,
    source: BoxError,
}

/// Where a failure came from, for `error.type` on spans: a low-cardinality class, never the
/// message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The handler returned it.
    Handler,
    /// The handler panicked.
    Panic,
    /// The handler ran past its `timeout`.
    Timeout,
    /// The payload did not decode, or its version is unknown.
    Payload,
    /// The handler's transaction could not complete or commit.
    Transaction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Retry,
    Permanent,
    /// This process cannot handle the event yet (a newer event version than its code knows):
    /// the delivery waits for a process that can, and the attempt is not counted.
    Deferred,
    /// The handler asked for the delivery to come back after this delay; the attempt is not
    /// counted.
    RetryAfter(Duration),
    /// Going on would do harm: the delivery is given back and the runtime stops.
    Fatal,
}

impl HandlerError {
    /// A failure that may succeed later: the delivery is retried with backoff.
    pub fn retry(error: impl Into<BoxError>) -> Self {
        Self {
            kind: Kind::Retry,
            origin: Origin::Handler,
            source: error.into(),
        }
    }

    /// A failure no retry can fix: the delivery is dead-lettered at once, keeping this error.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self {
            kind: Kind::Permanent,
            origin: Origin::Handler,
            source: error.into(),
        }
    }

    /// The longest delay [`retry_after`](Self::retry_after) waits: 24 hours, the longest
    /// `claim_timeout`. A longer delay is shortened to this, with a warning naming the handler, so
    /// that an absurd `Retry-After` from a downstream cannot park a delivery for years.
    pub const MAX_RETRY_AFTER: Duration = crate::handler::HandlerSpec::MAX_CLAIM_TIMEOUT;

    /// A failure that will pass after `delay`, as the handler knows (a rate-limited downstream's
    /// `Retry-After`, a maintenance window): the delivery is due again after `delay` (from the
    /// store's clock, when the failure is written), keeping this error as its last error, and
    /// **the attempt is not counted** (River calls this a snooze).
    ///
    /// Since no attempt is used up, a handler that returns `retry_after` every time never
    /// dead-letters its delivery: it comes back after each delay for as long as the handler asks,
    /// visible meanwhile as a pending delivery whose last error says "retry after …" (in
    /// `status` and the dashboard). Bound it yourself if the downstream may never recover, for
    /// example with a deadline on the event's [`Ctx::published_at`](crate::Ctx::published_at),
    /// and return [`retry`](Self::retry) or [`permanent`](Self::permanent) past it.
    ///
    /// A delay above [`MAX_RETRY_AFTER`](Self::MAX_RETRY_AFTER) (24 h) is shortened to it. A
    /// delay of zero makes the delivery due at once: the claim loop takes it again at its next
    /// claim. In a batch handler's `Err`, every event of the batch comes back after `delay`; in a
    /// [`BatchOutcome`](crate::BatchOutcome), only the events it names. Tracing and metrics
    /// record the outcome `deferred`. A projection treats it as any failed batch, retried after
    /// its own backoff. On the JetStream store the attempt is JetStream's delivery count, which a
    /// `nak` with a delay uses up like any other (see its docs).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use osa_events::HandlerError;
    ///
    /// /// What a rate-limited HTTP API answered: its status and `Retry-After` header.
    /// struct Response { status: u16, retry_after: Option<&'static str> }
    ///
    /// fn check(response: Response) -> Result<(), HandlerError> {
    ///     if response.status == 429 {
    ///         let seconds = response.retry_after.and_then(|v| v.parse().ok()).unwrap_or(60);
    ///         return Err(HandlerError::retry_after(
    ///             Duration::from_secs(seconds),
    ///             format!("rate limited (HTTP 429), retry after {seconds}s"),
    ///         ));
    ///     }
    ///     Ok(())
    /// }
    ///
    /// let error = check(Response { status: 429, retry_after: Some("30") }).unwrap_err();
    /// assert_eq!(error.retry_delay(), Some(Duration::from_secs(30)));
    /// assert!(!error.is_permanent() && !error.is_fatal());
    /// ```
    pub fn retry_after(delay: Duration, error: impl Into<BoxError>) -> Self {
        Self {
            kind: Kind::RetryAfter(delay),
            origin: Origin::Handler,
            source: error.into(),
        }
    }

    /// A failure that makes going on harmful (a schema that does not match what the code expects,
    /// corrupt data, a broken invariant): the delivery is given back unfailed, due at once, with
    /// **the attempt not counted** and this error kept as its last error, and the whole runtime
    /// stops: [`Runtime::run`](crate::Runtime::run) (and so
    /// [`run_all_handlers`](crate::run_all_handlers)) returns [`Error::Fatal`](crate::Error::Fatal)
    /// with this error as its source, so a `main` that returns it exits with a non-zero status
    /// and the fault is fixed before the event is handled again.
    ///
    /// The runtime stops as it does on SIGTERM: it claims nothing more, lets the calls that are
    /// running (of every handler) finish within its grace period, and gives back what is left.
    /// The handler's own call ends with the fatal error: in a per-event handler the events of the
    /// same claim that were not yet called are given back too; in a batch handler, whether the
    /// batch's `Err` or one event of a [`BatchOutcome`](crate::BatchOutcome) is fatal, every
    /// event of the call is given back (none completes), and a `Tx` handler's transaction is
    /// rolled back. Other nodes running the same handler are not stopped by it, but will likely
    /// meet the same event and stop the same way.
    ///
    /// A panic is not fatal: it fails its event's attempt like a retryable error. A projection
    /// treats a fatal error as any failed batch (retried after its backoff), and does not stop
    /// the runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// use osa_events::HandlerError;
    ///
    /// fn check_schema(columns: &[&str]) -> Result<(), HandlerError> {
    ///     if !columns.contains(&"title") {
    ///         // Every event would fail the same way, or worse, be written wrong: stop.
    ///         return Err(HandlerError::fatal("table `records` has no column `title`: run the migration"));
    ///     }
    ///     Ok(())
    /// }
    ///
    /// assert!(check_schema(&["srn"]).unwrap_err().is_fatal());
    /// ```
    pub fn fatal(error: impl Into<BoxError>) -> Self {
        Self {
            kind: Kind::Fatal,
            origin: Origin::Handler,
            source: error.into(),
        }
    }

    /// A failure of this process, not of the event: the delivery is given back with a delay and
    /// the attempt is not counted, so it waits (never dead-lettered) for a process that can take it.
    pub(crate) fn deferred(error: impl Into<BoxError>) -> Self {
        Self {
            kind: Kind::Deferred,
            origin: Origin::Handler,
            source: error.into(),
        }
    }

    /// Whether this error defers the delivery instead of failing an attempt.
    pub(crate) fn is_deferred(&self) -> bool {
        self.kind == Kind::Deferred
    }

    /// The same error, marked as coming from `origin`.
    pub(crate) fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    /// The class of the failure for `error.type`: `handler`, `panic`, `timeout`, `payload` or
    /// `transaction`.
    pub(crate) fn error_type(&self) -> &'static str {
        match self.origin {
            Origin::Handler => "handler",
            Origin::Panic => "panic",
            Origin::Timeout => "timeout",
            Origin::Payload => "payload",
            Origin::Transaction => "transaction",
        }
    }

    /// Whether this error dead-letters the delivery at once (from
    /// [`permanent`](Self::permanent)).
    pub fn is_permanent(&self) -> bool {
        self.kind == Kind::Permanent
    }

    /// Whether this error stops the runtime (from [`fatal`](Self::fatal)).
    pub fn is_fatal(&self) -> bool {
        self.kind == Kind::Fatal
    }

    /// The delay the handler asked for with [`retry_after`](Self::retry_after), as asked (the
    /// runtime waits at most [`MAX_RETRY_AFTER`](Self::MAX_RETRY_AFTER)); `None` for every other
    /// kind of error.
    pub fn retry_delay(&self) -> Option<Duration> {
        match self.kind {
            Kind::RetryAfter(delay) => Some(delay),
            _ => None,
        }
    }

    /// The same kind of error (and origin) with another source: one failure of a batch copied to
    /// each of its events.
    pub(crate) fn with_same_kind(&self, source: impl Into<BoxError>) -> Self {
        Self {
            kind: self.kind,
            origin: self.origin,
            source: source.into(),
        }
    }

    /// The underlying error.
    pub fn source(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.source
    }

    /// Consumes the error, returning the underlying error.
    pub fn into_source(self) -> BoxError {
        self.source
    }
}

impl<E> From<E> for HandlerError
where
    E: Into<BoxError>,
{
    fn from(error: E) -> Self {
        Self::retry(error)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)?;
        let mut cause = self.source.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("kind", &self.kind)
            .field("origin", &self.origin)
            .field("source", &self.source)
            .finish()
    }
}

/// Adds [`retry`](ResultExt::retry), [`permanent`](ResultExt::permanent),
/// [`retry_after`](ResultExt::retry_after) and [`fatal`](ResultExt::fatal) to any `Result`, to say
/// how a handler's failure should be treated at the point where it happens.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use osa_events::{HandlerError, ResultExt};
///
/// fn handle(quota_left: Result<u32, &str>, schema: Result<(), &str>) -> Result<u32, HandlerError> {
///     schema.fatal()?; // the database does not match the code: stop the runtime
///     quota_left.retry_after(Duration::from_secs(60)) // over quota: come back in a minute
/// }
///
/// assert!(handle(Ok(1), Err("no column `title`")).unwrap_err().is_fatal());
/// let error = handle(Err("quota exceeded"), Ok(())).unwrap_err();
/// assert_eq!(error.retry_delay(), Some(Duration::from_secs(60)));
/// ```
pub trait ResultExt<T> {
    /// Maps the error to a retryable [`HandlerError`].
    fn retry(self) -> Result<T, HandlerError>;
    /// Maps the error to a permanent [`HandlerError`]: the delivery is dead-lettered at once.
    fn permanent(self) -> Result<T, HandlerError>;
    /// Maps the error to [`HandlerError::retry_after`]: the delivery is due again after `delay`,
    /// and the attempt is not counted.
    fn retry_after(self, delay: Duration) -> Result<T, HandlerError>;
    /// Maps the error to [`HandlerError::fatal`]: the delivery is given back and the runtime
    /// stops with this error.
    fn fatal(self) -> Result<T, HandlerError>;
}

impl<T, E> ResultExt<T> for Result<T, E>
where
    E: Into<BoxError>,
{
    fn retry(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::retry)
    }

    fn permanent(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::permanent)
    }

    fn retry_after(self, delay: Duration) -> Result<T, HandlerError> {
        self.map_err(|error| HandlerError::retry_after(delay, error))
    }

    fn fatal(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::fatal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("index write failed")
        }
    }

    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn display_includes_the_cause_chain() {
        let error = HandlerError::from(Outer(std::io::Error::other("connection reset")));
        assert_eq!(error.to_string(), "index write failed: connection reset");
        assert!(!error.is_permanent());
    }

    #[test]
    fn result_ext_chooses_the_kind() {
        let failed: Result<(), &str> = Err("bad record");
        assert!(failed.permanent().unwrap_err().is_permanent());
        assert!(!failed.retry().unwrap_err().is_permanent());
        let fatal = failed.fatal().unwrap_err();
        assert!(fatal.is_fatal() && !fatal.is_permanent() && fatal.retry_delay().is_none());
        let later = failed.retry_after(Duration::from_secs(30)).unwrap_err();
        assert_eq!(later.retry_delay(), Some(Duration::from_secs(30)));
        assert!(!later.is_fatal() && !later.is_permanent());
        assert_eq!(later.to_string(), "bad record");
    }

    #[test]
    fn only_retry_after_has_a_delay_and_only_fatal_is_fatal() {
        let kinds = [
            HandlerError::retry("a"),
            HandlerError::permanent("b"),
            HandlerError::deferred("c"),
        ];
        for error in &kinds {
            assert_eq!(error.retry_delay(), None, "{error:?}");
            assert!(!error.is_fatal(), "{error:?}");
        }
        assert!(HandlerError::fatal("d").is_fatal());
    }

    #[test]
    fn a_copy_keeps_the_kind_and_origin() {
        let delay = Duration::from_millis(1_500);
        let original = HandlerError::retry_after(delay, "slow down").with_origin(Origin::Timeout);
        let copied = original.with_same_kind(original.to_string());
        assert_eq!(copied.retry_delay(), Some(delay));
        assert_eq!(copied.error_type(), "timeout");
        assert!(HandlerError::fatal("x").with_same_kind("y").is_fatal());
        let deferred = HandlerError::deferred("v2").with_same_kind("v2");
        assert!(deferred.is_deferred());
    }
}
