//! Procedural macros of osa-events. Use them through the `osa-events` crate, which re-exports
//! them and provides the paths their generated code refers to.

mod diag;
mod event;
mod event_handler;
mod event_set;
mod limits;
mod lit;
mod projection;

use proc_macro::TokenStream;

/// Turns an `async fn` into a durable event handler, registered for `run_all_handlers`.
///
/// See the documentation of `osa_events::event_handler` for options, signatures and examples.
#[proc_macro_attribute]
pub fn event_handler(args: TokenStream, item: TokenStream) -> TokenStream {
    event_handler::expand(args.into(), item.into()).into()
}

/// Implements `osa_events::Event` for a serde type: `#[event(name = "...", version = N)]`, with
/// `previous = OlderType` to also read an older version, upcast with `From`.
///
/// See the documentation of `osa_events::Event` (the derive) for details.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    event::expand(input.into()).into()
}

/// Turns an `async fn` taking `Batch<E>` into an ordered, checkpointed projection.
///
/// See the documentation of `osa_events::projection` for options and examples.
#[proc_macro_attribute]
pub fn projection(args: TokenStream, item: TokenStream) -> TokenStream {
    projection::expand(args.into(), item.into()).into()
}

/// Not public API: expands to the table of option limits (`limits.rs`), so the runtime validates
/// a `HandlerSpec` against the same numbers the macro checks at compile time.
#[doc(hidden)]
#[proc_macro]
pub fn __option_limits(_input: TokenStream) -> TokenStream {
    include_str!("limits.rs")
        .parse()
        .expect("limits.rs is valid Rust")
}

/// Implements `osa_events::EventSet` for an enum with one newtype variant per event type.
///
/// See the documentation of `osa_events::EventSet` (the derive) for details.
#[proc_macro_derive(EventSet)]
pub fn derive_event_set(input: TokenStream) -> TokenStream {
    event_set::expand(input.into()).into()
}
