//! The events of the reliability suite: `osa-chaos` publishes and handles them, and the tests that
//! drive it (`tests/it/reliability`) publish and read them too. One definition for both, so
//! publisher and handler can never disagree on a shape.

use osa_events::{Event, Outgoing};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One event of the stream the crash, restart, load and shutdown tests push through the workers.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "chaos.item")]
pub struct Item {
    /// The event's number in its run, `0..events`: the ledger's key.
    pub seq: i64,
    /// Filler, so rows have a realistic size.
    pub pad: String,
}

/// How a [`Poison`] event's handler behaves.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Succeeds: the healthy part of the stream.
    Ok,
    /// Fails with a retryable error every time.
    Fail,
    /// Fails with a permanent error.
    Permanent,
    /// Panics.
    Panic,
    /// Sleeps far past the handler's timeout.
    Hang,
    /// Fails with `HandlerError::fatal`: the worker process stops and exits with 1.
    Fatal,
}

/// The stream of the poison test: healthy events mixed with ones that fail in every way.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "chaos.poison")]
pub struct Poison {
    /// The event's number in its run.
    pub seq: i64,
    /// What the handler does with it.
    pub mode: Mode,
}

/// The id of event `seq`: deterministic, so a publisher that retries after an error whose
/// outcome it cannot know (the connection died during `COMMIT`) republishes the same ids, which
/// the store skips instead of duplicating.
pub fn event_id(seq: i64) -> Uuid {
    Uuid::from_u64_pair(0x6f73_615f_6368_616f, seq as u64)
}

/// Event `seq` of the item stream, with `pad_bytes` of filler, ready to publish.
pub fn item(seq: i64, pad_bytes: usize) -> Outgoing {
    let item = Item {
        seq,
        pad: "x".repeat(pad_bytes),
    };
    Outgoing::new(&item)
        .expect("a small item serializes")
        .with_id(event_id(seq))
}

/// One event of the ordering test (`tests/it/reliability/ordered.rs`): the `n`th event of its
/// `key`, which the ordered `chaos.ordered` handler must take in `n` order, key by key.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "chaos.keyed", ordering_key = "key")]
pub struct Keyed {
    /// The entity the event is about: its ordering key.
    pub key: i64,
    /// Its number within its key, from 0, in publish order.
    pub n: i64,
}

impl Keyed {
    /// The ledger's `seq` of this event: key and number in one.
    pub fn seq(&self) -> i64 {
        self.key * KEYED_SEQ_STRIDE + self.n
    }
}

/// [`Keyed::seq`] is `key * KEYED_SEQ_STRIDE + n`.
pub const KEYED_SEQ_STRIDE: i64 = 1_000_000;

/// One event of the JetStream consumer test (`tests/it/reliability/nats_faults.rs`): a job the
/// `chaos.js` handler of `osa-nats-chaos` records in the ledger, or refuses for good when it is
/// poison, so that it ends on the handler's dead-letter subject.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "chaos.job")]
pub struct Job {
    /// The job's number in its run, `0..jobs`: the ledger's key.
    pub seq: i64,
    /// Whether the handler refuses it with a permanent error.
    #[serde(default)]
    pub poison: bool,
}
