//! [`HandlerError`]: what a handler returns when an event could not be handled.

use std::error::Error as StdError;
use std::fmt;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The error a handler returns: the cause, and whether a retry could help.
///
/// Any error converts into a retryable `HandlerError` with `?` (anything that converts into
/// `Box<dyn Error + Send + Sync>`: `std::io::Error`, `sqlx::Error`, `anyhow::Error`, `String`, ...).
/// Say explicitly what should happen with [`HandlerError::retry`] and [`HandlerError::permanent`],
/// or with the [`ResultExt`] methods on any `Result`.
///
/// A retryable error puts the delivery back with exponential backoff until the handler's `retries`
/// are used up, then dead-letters it. A permanent error dead-letters it at once: use it when a retry
/// cannot help (a malformed record, a rejected request).
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

    /// Where the failure came from.
    pub(crate) fn origin(&self) -> Origin {
        self.origin
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

    /// Whether this error dead-letters the delivery at once.
    pub fn is_permanent(&self) -> bool {
        self.kind == Kind::Permanent
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

/// Adds [`retry`](ResultExt::retry) and [`permanent`](ResultExt::permanent) to any `Result`, to say
/// how a handler's failure should be treated at the point where it happens.
pub trait ResultExt<T> {
    /// Maps the error to a retryable [`HandlerError`].
    fn retry(self) -> Result<T, HandlerError>;
    /// Maps the error to a permanent [`HandlerError`]: the delivery is dead-lettered at once.
    fn permanent(self) -> Result<T, HandlerError>;
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
    }
}
