//! Projections: ordered, checkpointed read models.
//!
//! A projection applies every event of its types exactly once, in a stable order, saving its
//! checkpoint in the same transaction as the batch's effects. One process at a time runs each
//! projection: the leader, elected through the store (on PostgreSQL, with a session advisory
//! lock).
//!
//! - [`store`]: what a store does for projections ([`ProjectionStore`]): leadership, reading in
//!   order, atomic checkpoints, status and reset.
//! - [`runner`]: the loop: lead, read a batch, apply it with the checkpoint, repeat.

use std::time::Duration;

use crate::handler::error::HandlerError;
use crate::{Event, Resources, Result};

pub(crate) mod runner;
pub(crate) mod store;

pub use store::{
    Advance, Checkpoint, Leadership, OpenBatch, ProjectionStatus, ProjectionStore, ReadAhead,
    ResetTo, event_type_set,
};

/// The set of event types a projection reads: one [`Event`] type, or an enum of them with
/// `#[derive(EventSet)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a set of events a projection can read",
    label = "not an `EventSet`",
    note = "use one event type, or an enum with one newtype variant per event type and `#[derive(EventSet)]`"
)]
pub trait EventSet: Sized + Send + 'static {
    /// The event type names in the set.
    const NAMES: &'static [&'static str];

    /// Decodes one stored event of the set.
    ///
    /// # Errors
    ///
    /// A permanent [`HandlerError`] when the type is not in the set, the version is unknown or the
    /// payload does not decode.
    fn decode(event_type: &str, event_version: i32, payload: &str) -> Result<Self, HandlerError>;
}

impl<E: Event> EventSet for E {
    const NAMES: &'static [&'static str] = &[E::NAME];

    fn decode(event_type: &str, event_version: i32, payload: &str) -> Result<Self, HandlerError> {
        decode_event::<E>(event_type, event_version, payload)
    }
}

/// Decodes `payload`, stored as `event_version` of `event_type`, as `E`: the current version
/// directly, an older one declared with `#[event(previous = ...)]` by upcasting.
///
/// # Errors
///
/// A permanent [`HandlerError`] when the type name is not `E`'s, the version is older than `E`
/// and not declared, or serde cannot decode the payload. A version *newer* than `E`'s is not the
/// event's fault but this process's (its code is older: a deploy in progress): the error defers
/// the delivery, which is given back with a delay and no attempt counted, until a process that
/// knows the version takes it; a projection retries its batch with backoff.
///
/// The error names where and what (`at $.card.number: invalid type: string, expected u64`) but
/// never quotes a value of the payload, since it is stored as `last_error` and logged: serde's own
/// wording (`invalid type: string "4111-1111-1111-1111", expected u64`) is shortened to its shape,
/// and the message of a custom `Deserialize` impl, which may quote anything, is withheld.
pub fn decode_event<E: Event>(
    event_type: &str,
    event_version: i32,
    payload: &str,
) -> Result<E, HandlerError> {
    if event_type != E::NAME {
        return Err(HandlerError::permanent(format!(
            "the handler decodes `{}` events, not `{event_type}`",
            E::NAME
        )));
    }
    if i64::from(event_version) > i64::from(E::VERSION) {
        return Err(HandlerError::deferred(format!(
            "version {event_version} of `{}` is newer than this handler's version {} (`{}`): \
             a deploy in progress? the event waits, with no attempt counted, for code that knows it",
            E::NAME,
            E::VERSION,
            std::any::type_name::<E>(),
        )));
    }
    let decoded = u32::try_from(event_version)
        .ok()
        .and_then(|version| E::decode_version(version, payload));
    match decoded {
        Some(Ok(event)) => Ok(event),
        Some(Err(error)) => Err(HandlerError::permanent(format!(
            "the payload does not decode as `{}` (version {}): {}",
            error.type_name(),
            error.version(),
            // Without the payload's values: they would end up in `last_error` and the logs.
            crate::redact::decode_error(error.serde_error(), payload)
        ))),
        None => {
            let accepted: Vec<String> = E::accepted_versions().iter().map(u32::to_string).collect();
            Err(HandlerError::permanent(format!(
                "version {event_version} of `{}` is unknown to this handler, which accepts version{} {} (as `{}`); \
                 to accept it, declare its type with `#[event(previous = ...)]`",
                E::NAME,
                if accepted.len() == 1 { "" } else { "s" },
                accepted.join(", "),
                std::any::type_name::<E>(),
            )))
        }
    }
}

/// A projection's configuration: what `#[projection(...)]` declares, with defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectionSpec {
    name: &'static str,
    rust_path: &'static str,
    event_types: &'static [&'static str],
    batch: u32,
    poll: Duration,
    backoff: Duration,
    max_backoff: Duration,
    timeout: Option<Duration>,
}

impl ProjectionSpec {
    /// Default `batch`: events applied per transaction.
    pub const DEFAULT_BATCH: u32 = 100;
    /// Largest allowed `batch`.
    pub const MAX_BATCH: u32 = 10_000;
    /// Default `poll`: how long the leader waits when it has caught up.
    pub const DEFAULT_POLL: Duration = Duration::from_millis(500);
    /// Default `backoff`: the delay before retrying a failed batch; it doubles per failure.
    pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
    /// Default `max_backoff`: the cap of that delay.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);

    /// A spec with every option at its default.
    pub const fn new(
        name: &'static str,
        rust_path: &'static str,
        event_types: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            rust_path,
            event_types,
            batch: Self::DEFAULT_BATCH,
            poll: Self::DEFAULT_POLL,
            backoff: Self::DEFAULT_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
            timeout: None,
        }
    }

    /// Apply up to this many events per transaction.
    pub const fn with_batch(mut self, batch: u32) -> Self {
        self.batch = batch;
        self
    }

    /// Wait this long when caught up.
    pub const fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The first retry delay of a failed batch.
    pub const fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The cap of the retry delay.
    pub const fn with_max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// Fail a batch whose projection call takes longer than this: it is rolled back (its
    /// checkpoint row unlocked) and retried with backoff, like any failed batch.
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The projection's unique name: its checkpoint and its lock.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The Rust path of the projection function.
    pub const fn rust_path(&self) -> &'static str {
        self.rust_path
    }

    /// The event types it reads.
    pub const fn event_types(&self) -> &'static [&'static str] {
        self.event_types
    }

    /// Events per transaction.
    pub const fn batch(&self) -> u32 {
        self.batch
    }

    /// The idle poll interval.
    pub const fn poll(&self) -> Duration {
        self.poll
    }

    /// The base retry delay.
    pub const fn backoff(&self) -> Duration {
        self.backoff
    }

    /// The cap of the retry delay.
    pub const fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// The limit of one batch's projection call, if it has one.
    pub const fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

/// A projection, as generated by `#[projection]`.
pub trait Projection: Send + Sync + 'static {
    /// Its configuration.
    const SPEC: ProjectionSpec;

    /// Resolves its extractors against `resources` at start-up.
    ///
    /// # Errors
    ///
    /// [`Error::MissingResource`](crate::Error::MissingResource) for a `State<T>` with no `T`.
    fn bind(resources: &Resources) -> Result<crate::handler::Invoker>;
}

/// A projection's entry in the inventory, submitted by `#[projection]`.
#[derive(Debug)]
pub struct ProjectionRegistration {
    pub(crate) spec: ProjectionSpec,
    pub(crate) bind: fn(&Resources) -> Result<crate::handler::Invoker>,
}

impl ProjectionRegistration {
    /// The registration of projection `P`.
    pub const fn of<P: Projection>() -> Self {
        Self {
            spec: P::SPEC,
            bind: P::bind,
        }
    }

    /// The projection's spec.
    pub fn spec(&self) -> &ProjectionSpec {
        &self.spec
    }
}

inventory::collect!(ProjectionRegistration);
