//! The expansion compiles under strict lints (in the spirit of tokio's `macros_clippy.rs`): no
//! warning from generated code, whatever the user's crate denies. Also linted by clippy through
//! the copy in `tests/ui.rs`.

#![deny(
    warnings,
    missing_docs,
    unreachable_pub,
    unused,
    unused_qualifications,
    unused_results,
    missing_debug_implementations,
    missing_copy_implementations,
    rust_2018_idioms,
    non_ascii_idents,
    trivial_casts,
    trivial_numeric_casts,
    single_use_lifetimes,
    unused_lifetimes,
    redundant_lifetimes,
    elided_lifetimes_in_paths,
    explicit_outlives_requirements,
    let_underscore_drop,
    meta_variable_misuse,
    unit_bindings,
    variant_size_differences,
    unsafe_code,
    clippy::all,
    clippy::pedantic,
    clippy::nursery
)]

/// Handlers of the catalogue.
pub mod handlers {
    use osa_events::prelude::*;
    use serde::{Deserialize, Serialize};

    /// A record was published, as version 1 had it.
    #[derive(Debug, Event, Serialize, Deserialize)]
    #[event(name = "record.published")]
    pub struct RecordPublishedV1 {
        /// The record's identifier.
        pub srn: String,
    }

    /// A record was published.
    #[derive(Debug, Event, Serialize, Deserialize)]
    #[event(name = "record.published", version = 2, previous = RecordPublishedV1)]
    pub struct RecordPublished {
        /// The record's identifier.
        pub srn: String,
    }

    impl From<RecordPublishedV1> for RecordPublished {
        fn from(v1: RecordPublishedV1) -> Self {
            Self { srn: v1.srn }
        }
    }

    /// A search client.
    #[derive(Debug, Clone, Copy)]
    pub struct Search;

    /// Logs each published record.
    ///
    /// # Errors
    ///
    /// Never.
    #[event_handler(name = "strict.log", retries = 3, timeout = "10s")]
    pub async fn log_record(
        event: RecordPublished,
        search: State<Search>,
        ctx: Ctx,
    ) -> Result<(), HandlerError> {
        println!("{} {:?} {}", event.srn, *search, ctx.attempt());
        Ok(())
    }

    /// Indexes records in batches.
    ///
    /// # Errors
    ///
    /// Never.
    #[event_handler(name = "strict.index", batch = 64, poll = "250ms")]
    pub async fn index_records(
        events: Batch<RecordPublished>,
        search: State<Search>,
    ) -> Result<(), HandlerError> {
        println!("{} records for {:?}", events.len(), *search);
        Ok(())
    }

    /// A crate-private handler: its generated type is crate-private too.
    #[event_handler(name = "strict.private")]
    pub(crate) async fn private_handler(event: RecordPublished) -> Result<(), HandlerError> {
        println!("{}", event.srn);
        Ok(())
    }
}

fn main() {}
