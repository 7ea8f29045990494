//! Test support for osa-events.
//!
//! - [`Harness`]: unit tests of handlers with no database: run them on an in-memory store and
//!   fake time, one claim at a time or until idle, and assert on what was handled, retried and
//!   dead-lettered.
//! - [`sim`]: deterministic concurrency tests: several claim loops of one handler interleaved by
//!   a seeded scheduler, with crashes and stalls, checked against a model of the claim protocol.
//! - [`FakeClock`]: time that moves only when the test says so.
//! - [`Rng`]: a seeded random source, so a randomized test replays from its seed
//!   ([`Rng::from_env_or_random`] picks one and prints it).
//! - [`InMemoryStore`]: a [`Store`](osa_events::store::Store) with the semantics of `PgStore`, in
//!   memory, deterministic on a [`FakeClock`], with projections and transactions (what a `Tx`
//!   publishes).
//! - [`contract`]: the store contract suite every store must pass, with
//!   [`store_contract_tests!`] to run it.
//!
//! # Testing handlers
//!
//! A handler's function stays callable, so its logic can be tested by calling it. What a call
//! cannot show is what the runtime makes of it: which attempts are retried and when, what ends as
//! a dead letter with which error, what a batch does with one bad event. The [`Harness`] runs the
//! handlers as the runtime does (the same claim loop, backoff, retry limits and dead letters), on
//! an [`InMemoryStore`] and a [`FakeClock`], so a test of hours of retries takes microseconds and
//! gives the same result on every run.
//!
//! The handler's `State<T>` extractors get the test's doubles from [`Resources`](osa_events::Resources).
//! Here the search backend is down for the first 200 seconds of (fake) time:
//!
//! ```
//! use std::time::Duration;
//! use osa_events::prelude::*;
//! use osa_events_testing::{FakeClock, Harness};
//! # use serde::{Deserialize, Serialize};
//!
//! #[derive(Event, Serialize, Deserialize, Debug)]
//! #[event(name = "record.published")]
//! pub struct RecordPublished { pub srn: String }
//!
//! /// The search client the handler takes as `State<Search>`.
//! pub struct Search { clock: FakeClock, up_at: tokio::time::Instant }
//!
//! impl Search {
//!     fn index(&self, srn: &str) -> Result<(), HandlerError> {
//!         if self.clock.now() < self.up_at {
//!             return Err(HandlerError::retry(format!("search is down, cannot index {srn}")));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! #[event_handler(name = "index.search", retries = 3, backoff = "1m")]
//! async fn index(record: RecordPublished, search: State<Search>) -> Result<(), HandlerError> {
//!     search.index(&record.srn)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), osa_events::Error> {
//! let clock = FakeClock::new();
//! let search = Search { clock: clock.clone(), up_at: clock.now() + Duration::from_secs(200) };
//! let mut harness = Harness::builder()
//!     .clock(clock)
//!     .resources(Resources::new().with(search))
//!     .only(["index.search"])
//!     .build()
//!     .await?;
//!
//! harness.publish(&RecordPublished { srn: "srn:1".into() });
//! harness.drain().await; // retried after 30-60 s, 1-2 min, 2-4 min: done in microseconds
//!
//! harness.assert_retried("index.search", 3);
//! harness.assert_handled("index.search", 1);
//! harness.assert_dead_lettered("index.search", 0);
//! let last = harness.attempts("index.search").pop().unwrap();
//! assert_eq!(last.attempt, 4);
//! assert!(harness.elapsed() >= Duration::from_secs(200));
//! # Ok(()) }
//! ```
//!
//! A failed assertion shows what it found, e.g. for `assert_dead_lettered("index.search", 1)`:
//!
//! ```text
//! handler `index.search`: expected 1 dead letter(s), found 0
//! journal of `index.search` (4 attempt(s)):
//!   +0.000s  index.search  position 1  attempt 1  retried in 41.163s: `record.published` event … (position 1), attempt 1 of 4: search is down, cannot index srn:1
//!   ...
//!   +357.916s  index.search  position 1  attempt 4  handled
//! ```
//!
//! [`Harness::step`] runs one claim at a time instead, to check the state in between;
//! `examples/testing_handlers.rs` tests a whole pipeline this way.
//!
//! Handlers and projections that take a `Tx` run in the harness too: what they publish through
//! `tx.publish(..)` exists once when the call commits, with the completion of its deliveries (or
//! the projection's checkpoint), and not at all when it fails (see
//! [Handlers that take `Tx`](Harness#handlers-that-take-tx)). Their own SQL through `&mut *tx`
//! needs PostgreSQL: test it against a database of its own.

mod clock;
mod harness;
mod memory;

pub mod contract;
pub mod sim;

pub use clock::FakeClock;
pub use harness::{Attempt, AttemptOutcome, Harness, HarnessBuilder, ProjectionFailed};
pub use memory::{DeliveryInfo, DeliveryStatus, InMemoryStore, RawEvent};
/// The seeded random source of the runtime's retry jitter, for schedules and randomized tests.
pub use osa_events::__private::Rng;
