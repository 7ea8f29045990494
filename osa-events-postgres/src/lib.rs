//! The PostgreSQL store of [osa-events](https://docs.rs/osa-events): [`PgStore`], publishing in
//! the caller's transaction ([`publish`], [`publish_routed`], [`publish_batch`]), handler
//! transactions, projections (advisory-lock leadership, commit-ordered reads) and the SQL
//! migrations, embedded.
//!
//! Applications use it through `osa-events`, whose default `postgres` feature re-exports it.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod operations;
mod projection;
mod publish;
mod store;
mod tx;

pub use projection::ops::reset_projection;
pub use publish::{publish, publish_batch, publish_routed};
pub use store::{ConnectRetry, PgStore, PgUnnamed};
pub use tx::{PgTransaction, connection, connection_ref};

/// Not public API: the store's statements, for the benchmark's raw-SQL baseline (which must issue
/// exactly what the store issues). It may change in any release.
#[doc(hidden)]
pub mod __private {
    /// The statements of publish, claim and completion.
    pub mod sql {
        pub use crate::publish::PUBLISH_SQL;
        pub use crate::store::claim::CLAIM_SQL;
        pub use crate::store::fenced::COMPLETE_SQL;

        /// The statement of `Operations::status` and its planner settings, for the test of its
        /// plan.
        pub use crate::operations::{STATUS_PLAN_SQL, STATUS_SQL};
    }
}
