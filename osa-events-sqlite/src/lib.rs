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
