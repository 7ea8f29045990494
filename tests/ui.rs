//! Compile-time diagnostics of `#[event_handler]`, `#[derive(Event)]`, `#[projection]` and
//! `#[derive(EventSet)]`, checked with trybuild.
//!
//! Each `tests/ui/<macro>/fail/<mistake>.rs` must fail with exactly the errors in its `.stderr`
//! (one per mistake, spanned on the offending token); each `pass/<case>.rs` must compile and run.
//! After a deliberate change of a message, regenerate with
//! `TRYBUILD=overwrite cargo test --test ui` and read the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/event_handler/fail/*.rs");
    t.pass("tests/ui/event_handler/pass/*.rs");
    t.compile_fail("tests/ui/derive_event/fail/*.rs");
    t.pass("tests/ui/derive_event/pass/*.rs");
    t.compile_fail("tests/ui/projection/fail/*.rs");
    t.pass("tests/ui/projection/pass/*.rs");
}

/// The expansion under clippy's strict groups, in the spirit of tokio's `macros_clippy.rs`: this
/// module is compiled with the test, so `cargo clippy --all-targets` lints the generated code (the
/// rustc lints are covered by `tests/ui/event_handler/pass/strict_lints.rs`).
#[deny(clippy::all, clippy::pedantic, clippy::nursery, clippy::cargo)]
mod macros_clippy {
    use osa_events::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Event, Serialize, Deserialize)]
    #[event(name = "clippy.checked")]
    struct CheckedV1 {
        id: u64,
    }

    #[derive(Debug, Event, Serialize, Deserialize)]
    #[event(name = "clippy.checked", version = 2, previous = CheckedV1)]
    struct Checked {
        id: u64,
    }

    impl From<CheckedV1> for Checked {
        fn from(v1: CheckedV1) -> Self {
            Self { id: v1.id }
        }
    }

    #[derive(Debug)]
    struct Counter;

    #[event_handler(name = "clippy.each", retries = 3, timeout = "10s", backoff = "100ms")]
    async fn each(event: Checked, counter: State<Counter>, ctx: Ctx) -> Result<(), HandlerError> {
        println!("{} {:?} {}", event.id, *counter, ctx.attempt());
        Ok(())
    }

    #[event_handler(name = "clippy.batch", batch = 64, poll = "250ms", concurrency = 2)]
    async fn batch(events: Batch<Checked>, counter: State<Counter>) -> Result<(), std::io::Error> {
        println!("{} {:?}", events.len(), *counter);
        Ok(())
    }
}
