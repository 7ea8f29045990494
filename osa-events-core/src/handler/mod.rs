//! Handlers: the [`Handler`] trait that `#[event_handler]` implements, its [`HandlerSpec`], and the
//! inventory [`Registration`] that lets `run_all_handlers` find every handler with no wiring.

use std::time::Duration;

use crate::operations::StartFrom;
use crate::{Event, Resources, Result};

pub(crate) mod error;
pub(crate) mod extract;
pub(crate) mod invoke;
pub(crate) mod options;
pub(crate) mod overrides;
pub(crate) mod registry;

pub use invoke::Invoker;
pub use options::HandlerOptions;
use options::Setting;

/// How a handler takes its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Called once per event (`fn(event: E, ..)`); a claimed batch is completed in one write.
    Each,
    /// Called once per claimed batch (`fn(events: Batch<E>, ..)`).
    Batch,
}

/// How an `ordered` handler takes the events of one ordering key: one at a time, in publish
/// order, and what becomes of the key when its oldest delivery (the head) is dead-lettered.
///
/// Only the head of a key is ever due: the next delivery of the key becomes due when the head is
/// completed (or purged). A retrying head holds back its key alone; other keys go on in
/// parallel. The choice is the `ordered` option of `#[event_handler]`: `ordered = "block"` or
/// `ordered = "skip"`. See the ordering guide (`osa_events::ordering`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ordered {
    /// A dead head blocks its key until an operator retries it (it is the head again) or purges
    /// it (the next delivery becomes due). Nothing of the key is ever handled out of order.
    Block,
    /// A dead head leaves its key: the next delivery becomes due at once, and the dead letter
    /// waits for an operator. Retried, it joins the key again at the end, after the deliveries
    /// that are waiting then.
    Skip,
}

impl Ordered {
    /// The option's value as written in `#[event_handler(ordered = "...")]` and stored: `block`
    /// or `skip`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Skip => "skip",
        }
    }
}

/// A handler's configuration: what `#[event_handler(...)]` declares, with defaults filled in.
///
/// Built in `const` context by the macro; read by the runtime and stored as the subscription's
/// config snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerSpec {
    name: &'static str,
    rust_path: &'static str,
    event_type: &'static str,
    event_version: u32,
    shape: Shape,
    routing_key: Option<&'static str>,
    batch: u32,
    linger: Duration,
    poll: Duration,
    retries: u32,
    claim_timeout: Duration,
    concurrency: u32,
    timeout: Option<Duration>,
    backoff: Duration,
    max_backoff: Duration,
    start_from: StartFrom,
    ordered: Option<Ordered>,
}

/// The limits of the handler options, shared with the macro crate (one table for both).
pub(crate) mod limits {
    osa_events_macros::__option_limits!();
}

impl HandlerSpec {
    /// Default `batch`: deliveries claimed at once.
    pub const DEFAULT_BATCH: u32 = 32;
    /// Largest allowed `batch`.
    pub const MAX_BATCH: u32 = limits::MAX_BATCH;
    /// Default `linger`: zero, off. A batch handler is called with what one claim returned.
    pub const DEFAULT_LINGER: Duration = Duration::ZERO;
    /// Default `poll`: how long an idle worker sleeps when no wake-up arrives.
    pub const DEFAULT_POLL: Duration = Duration::from_secs(1);
    /// Default `retries`: failed attempts retried before a delivery is dead (so 6 attempts in all).
    pub const DEFAULT_RETRIES: u32 = 5;
    /// Largest allowed `retries`.
    pub const MAX_RETRIES: u32 = limits::MAX_RETRIES;
    /// Default `claim_timeout`: how long a claim lasts without a heartbeat.
    pub const DEFAULT_CLAIM_TIMEOUT: Duration = limits::DEFAULT_CLAIM_TIMEOUT;
    /// Shortest allowed `claim_timeout`: 1 s.
    pub const MIN_CLAIM_TIMEOUT: Duration = limits::MIN_CLAIM_TIMEOUT;
    /// Longest allowed `claim_timeout`: 24 h. A claim's expiry is `now() + claim_timeout` in the
    /// database, which an extreme value overflows, failing every claim; a handler that runs longer
    /// keeps its claim alive with heartbeats.
    pub const MAX_CLAIM_TIMEOUT: Duration = limits::MAX_CLAIM_TIMEOUT;
    /// Default `concurrency`: claim loops of this handler per process.
    pub const DEFAULT_CONCURRENCY: u32 = 1;
    /// Largest allowed `concurrency`.
    pub const MAX_CONCURRENCY: u32 = limits::MAX_CONCURRENCY;
    /// Default `backoff`: the delay before the first retry; it doubles per attempt.
    pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
    /// Default `max_backoff`: the cap of the retry delay.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(600);

    /// A spec with every option at its default.
    pub const fn new(
        name: &'static str,
        rust_path: &'static str,
        event_type: &'static str,
        event_version: u32,
        shape: Shape,
    ) -> Self {
        Self {
            name,
            rust_path,
            event_type,
            event_version,
            shape,
            routing_key: None,
            batch: Self::DEFAULT_BATCH,
            linger: Self::DEFAULT_LINGER,
            poll: Self::DEFAULT_POLL,
            retries: Self::DEFAULT_RETRIES,
            claim_timeout: Self::DEFAULT_CLAIM_TIMEOUT,
            concurrency: Self::DEFAULT_CONCURRENCY,
            timeout: None,
            backoff: Self::DEFAULT_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
            start_from: StartFrom::Now,
            ordered: None,
        }
    }

    /// Where a new subscription of this handler starts (see [`StartFrom`]): the `start_from`
    /// option of `#[event_handler]`.
    pub const fn with_start_from(mut self, start_from: StartFrom) -> Self {
        self.start_from = start_from;
        self
    }

    /// Where a new subscription of this handler starts.
    pub const fn start_from(&self) -> StartFrom {
        self.start_from
    }

    /// Take the events of one ordering key one at a time, in publish order, with `ordered`
    /// deciding what a dead head does: the `ordered` option of `#[event_handler]`.
    pub const fn with_ordered(mut self, ordered: Ordered) -> Self {
        self.ordered = Some(ordered);
        self
    }

    /// Whether the handler takes each ordering key's events one at a time, and what a dead head
    /// does; `None`: unordered.
    pub const fn ordered(&self) -> Option<Ordered> {
        self.ordered
    }

    /// Receive only events published with this routing key.
    pub const fn with_routing_key(mut self, routing_key: &'static str) -> Self {
        self.routing_key = Some(routing_key);
        self
    }

    /// Claim up to this many deliveries at once.
    pub const fn with_batch(mut self, batch: u32) -> Self {
        self.batch = batch;
        self
    }

    /// After a claim returns fewer than `batch` deliveries (but some), wait up to this long,
    /// measured from that claim, for more before calling the handler; zero (the default) calls it
    /// at once.
    ///
    /// While it waits, the worker claims the rest of the batch whenever a publish wakes it and
    /// once more when the time is up, and calls the handler as soon as the batch is full. Only for
    /// batch handlers ([`Shape::Batch`]), and at most a third of the
    /// [claim timeout](Self::with_claim_timeout), the heartbeat interval: the deliveries it holds
    /// are claimed while it waits. See the `linger` option of `#[event_handler]`.
    ///
    /// # Errors
    ///
    /// Not here (the builder is `const`): [`RuntimeBuilder::build`](crate::RuntimeBuilder::build)
    /// fails with [`Error::Config`](crate::Error::Config) for a non-zero linger on a per-event
    /// handler, or one longer than a third of the claim timeout.
    pub const fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sleep this long when idle and no wake-up arrives.
    pub const fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Retry a failed delivery this many times before it is dead.
    pub const fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Hold a claim this long without a heartbeat.
    pub const fn with_claim_timeout(mut self, claim_timeout: Duration) -> Self {
        self.claim_timeout = claim_timeout;
        self
    }

    /// Run this many claim loops per process.
    pub const fn with_concurrency(mut self, concurrency: u32) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Fail a handler call that takes longer than this.
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The first retry's delay, doubled per further attempt.
    pub const fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The cap of the retry delay.
    pub const fn with_max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// The same spec under another name: a handler instance's
    /// ([`RuntimeBuilder::handler_instance`](crate::RuntimeBuilder::handler_instance)).
    pub(crate) const fn with_name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The handler's unique name: its subscription in the database.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The Rust path of the handler function, for messages.
    pub const fn rust_path(&self) -> &'static str {
        self.rust_path
    }

    /// The event type it receives.
    pub const fn event_type(&self) -> &'static str {
        self.event_type
    }

    /// The payload version it decodes.
    pub const fn event_version(&self) -> u32 {
        self.event_version
    }

    /// Per event or per batch.
    pub const fn shape(&self) -> Shape {
        self.shape
    }

    /// The routing-key filter, if any.
    pub const fn routing_key(&self) -> Option<&'static str> {
        self.routing_key
    }

    /// Deliveries claimed at once.
    pub const fn batch(&self) -> u32 {
        self.batch
    }

    /// How long a batch handler waits for a fuller batch after a short claim (zero: not at all).
    pub const fn linger(&self) -> Duration {
        self.linger
    }

    /// The idle poll interval.
    pub const fn poll(&self) -> Duration {
        self.poll
    }

    /// Retries before a delivery is dead.
    pub const fn retries(&self) -> u32 {
        self.retries
    }

    /// How long a claim lasts without a heartbeat.
    pub const fn claim_timeout(&self) -> Duration {
        self.claim_timeout
    }

    /// Claim loops per process.
    pub const fn concurrency(&self) -> u32 {
        self.concurrency
    }

    /// The per-call timeout, if any.
    pub const fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The base retry delay.
    pub const fn backoff(&self) -> Duration {
        self.backoff
    }

    /// The cap of the retry delay.
    pub const fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// The configuration snapshot stored with the subscription: one key per attribute option.
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "handler": self.rust_path,
            "event_version": self.event_version,
            "shape": match self.shape { Shape::Each => "each", Shape::Batch => "batch" },
            "routing_key": self.routing_key,
            "batch": self.batch,
            "linger": format_duration(self.linger),
            "poll": format_duration(self.poll),
            "retries": self.retries,
            "claim_timeout": format_duration(self.claim_timeout),
            "concurrency": self.concurrency,
            "timeout": self.timeout.map(format_duration),
            "backoff": format_duration(self.backoff),
            "max_backoff": format_duration(self.max_backoff),
            "ordered": self.ordered.map(Ordered::as_str),
            "start_from": match self.start_from {
                StartFrom::Now => serde_json::json!("now"),
                StartFrom::Beginning => serde_json::json!("beginning"),
                StartFrom::AfterPosition(position) => serde_json::json!(position),
            },
        })
    }

    /// Checks the ranges the macro also checks at compile time (one table, [`Setting`]'s), for
    /// specs built by hand or changed by run-time overrides.
    pub(crate) fn validate(&self) -> Result<()> {
        let fail = |what: String| {
            Err(crate::Error::Config(
                format!("handler `{}`: {what}", self.name).into(),
            ))
        };
        if self.name.is_empty() {
            return fail("the name is empty".into());
        }
        if let Err(message) = Setting::all_of(self).try_for_each(Setting::check) {
            return fail(message);
        }
        // `max_backoff` below `backoff` is no error here: the cap wins (every retry waits
        // `max_backoff`). The macro refuses it only when both are written, and an attribute's
        // `backoff = "1h"` with the default cap has always been accepted.
        if !self.linger.is_zero() && self.shape == Shape::Each {
            return fail(
                "`linger` applies only to batch handlers (`Shape::Batch`): a per-event handler is \
                 called once per event, however many are claimed together"
                    .into(),
            );
        }
        let max_linger = self.claim_timeout / limits::HEARTBEATS_PER_CLAIM_TIMEOUT;
        if self.linger > max_linger {
            return fail(format!(
                "`linger` must be at most {}, a third of `claim_timeout` ({}), found {}: the \
                 deliveries it holds are claimed while it waits",
                format_duration(max_linger),
                format_duration(self.claim_timeout),
                format_duration(self.linger)
            ));
        }
        Ok(())
    }
}

fn format_duration(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// A handler, as generated by `#[event_handler]`: a unit type with its spec, and a way to bind its
/// extractors to the application's [`Resources`] at start-up.
pub trait Handler: Send + Sync + 'static {
    /// The event it handles.
    type Event: Event;
    /// Its configuration.
    const SPEC: HandlerSpec;
    /// Resolves every extractor against `resources` (a missing `State<T>` is an error here, at
    /// start-up, not at the first event) and returns the callable handler.
    ///
    /// # Errors
    ///
    /// [`Error::MissingResource`](crate::Error::MissingResource) for a `State<T>` with no `T`.
    fn bind(resources: &Resources) -> Result<Invoker>;
}

/// A handler's entry in the inventory, submitted by `#[event_handler]`.
#[derive(Debug)]
pub struct Registration {
    pub(crate) spec: HandlerSpec,
    pub(crate) bind: fn(&Resources) -> Result<Invoker>,
}

impl Registration {
    /// The registration of handler `H`.
    pub const fn of<H: Handler>() -> Self {
        Self {
            spec: H::SPEC,
            bind: H::bind,
        }
    }

    /// The handler's spec.
    pub fn spec(&self) -> &HandlerSpec {
        &self.spec
    }
}

inventory::collect!(Registration);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{HandlerSpec, Shape};

    fn spec(claim_timeout: Duration) -> HandlerSpec {
        HandlerSpec::new("spec.test", "tests::spec", "spec.event", 1, Shape::Each)
            .with_claim_timeout(claim_timeout)
    }

    /// A regression test: `claim_timeout` had no upper bound, and an extreme value overflows
    /// `now() + make_interval(..)` in the claim statement, so every claim of the handler failed.
    /// The runtime now refuses it at start-up (the macro at compile time, from the same table).
    #[test]
    fn claim_timeout_is_bounded_at_run_time() {
        assert!(spec(HandlerSpec::MAX_CLAIM_TIMEOUT).validate().is_ok());
        let error = spec(Duration::from_secs(100 * 365 * 24 * 3600))
            .validate()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid configuration: handler `spec.test`: `claim_timeout` must be in \
             1s..=1day, found 99years 11months 5days 9h 50m 24s"
        );
        assert!(spec(Duration::from_millis(999)).validate().is_err());
    }

    /// `concurrency` was bounded only by the macro: a spec built by hand with 10,000 claim loops
    /// started them all. The runtime checks the macro's limit now.
    #[test]
    fn concurrency_is_bounded_at_run_time() {
        let at = |concurrency| {
            spec(HandlerSpec::DEFAULT_CLAIM_TIMEOUT)
                .with_concurrency(concurrency)
                .validate()
        };
        assert!(at(HandlerSpec::MAX_CONCURRENCY).is_ok());
        assert_eq!(
            at(HandlerSpec::MAX_CONCURRENCY + 1)
                .unwrap_err()
                .to_string(),
            "invalid configuration: handler `spec.test`: `concurrency` must be in 1..=256, found 257"
        );
        assert!(at(0).is_err());
    }

    /// `linger` set with `with_linger` is checked at start-up as the macro checks it at compile
    /// time: batch handlers only, at most a third of the claim timeout.
    #[test]
    fn linger_is_checked_at_run_time() {
        let batch = |linger: Duration, claim_timeout: Duration| {
            HandlerSpec::new("spec.test", "tests::spec", "spec.event", 1, Shape::Batch)
                .with_claim_timeout(claim_timeout)
                .with_linger(linger)
                .validate()
        };
        let minute = Duration::from_secs(60);
        assert!(batch(Duration::ZERO, minute).is_ok());
        assert!(batch(Duration::from_secs(20), minute).is_ok());
        assert_eq!(
            batch(Duration::from_millis(20_001), minute)
                .unwrap_err()
                .to_string(),
            "invalid configuration: handler `spec.test`: `linger` must be at most 20000ms, a third \
             of `claim_timeout` (60000ms), found 20001ms: the deliveries it holds are claimed \
             while it waits"
        );
        let each = spec(minute)
            .with_linger(Duration::from_millis(50))
            .validate();
        assert_eq!(
            each.unwrap_err().to_string(),
            "invalid configuration: handler `spec.test`: `linger` applies only to batch handlers \
             (`Shape::Batch`): a per-event handler is called once per event, however many are \
             claimed together"
        );
        assert!(spec(minute).with_linger(Duration::ZERO).validate().is_ok());
    }
}
