//! The embedded SQLite store of [osa-events](https://docs.rs/osa-events): [`SqliteStore`],
//! publishing in the caller's transaction ([`publish`], [`publish_routed`], [`publish_batch`]),
//! handler transactions, projections (leases on a row, read in log order) and the SQL migrations,
//! embedded. SQLite itself is compiled in: nothing to install, no server to run.
//!
//! One file holds everything; any number of processes on one machine may share it (not a network
//! file system: SQLite's locks need a local disk). SQLite runs one write transaction at a time, so
//! every write of the store takes the write lock when its transaction begins (`BEGIN IMMEDIATE`)
//! and waits for it up to the busy timeout ([`SqliteSettings::busy_timeout`]); past it the
//! operation fails with [`Error::Busy`](osa_events_core::Error::Busy), naming the wait.
//!
//! Applications use it through `osa-events`, whose `sqlite` feature re-exports it.
//!
//! # Handler transactions
//!
//! A write transaction that began when a `Tx` handler began would stop every other writer
//! (claims, heartbeats, publishes, other processes) for the whole call. So a handler's transaction
//! (and a projection batch's) starts *deferred*: what it publishes through `tx.publish` and the
//! completion the runtime writes through it are checked against the committed state at once (the
//! handler learns how many events were new and how many deliveries they got, the runtime how many
//! claims it still holds), and written at the commit, in one `BEGIN IMMEDIATE` transaction that
//! checks them again. If anything changed meanwhile (another worker took a claim over, another
//! process published the same id or registered a subscription), the commit fails and writes
//! nothing: the attempt fails and runs again. The write lock is held for the commit only.
//!
//! A handler that runs statements of its own (`tx.sqlite().await?`, [`connection`]) opens the
//! transaction for real at that point, writing what was deferred: from then on it holds the write
//! lock until its commit, as its reads must stay true until its writes land, and other writers
//! wait for it up to their busy timeout. Keep such handlers short, or raise the busy timeout
//! above their longest call.
//!
//! # Order
//!
//! Positions are handed out under the write lock, so they commit in order: the log's commit
//! order is its position order, and projections read by position alone.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod busy;
mod operations;
mod projection;
mod publish;
mod store;
mod time;
mod tx;

pub use projection::reset_projection;
pub use publish::{publish, publish_batch, publish_routed};
pub use store::{SqliteSettings, SqliteStore};
pub use tx::{SqliteTransaction, connection};

/// Not public API: the store's statements, for the benchmark's raw-SQL baseline (which must issue
/// exactly what the store issues). It may change in any release.
#[doc(hidden)]
pub mod __private {
    /// The statements of publish, claim and completion.
    pub mod sql {
        pub use crate::publish::{FAN_OUT_SQL, INSERT_EVENTS_SQL};
        pub use crate::store::claim::{CLAIM_SQL, PICK_SQL};
        pub use crate::store::fenced::COMPLETE_SQL;
    }
}
