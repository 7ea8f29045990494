//! `#[projection(key = value, ...)]`: from tokens to [`ProjectionArgs`], every value checked and
//! every error collected.

use std::time::Duration;

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{LitStr, Meta, Token};

use crate::diag::{Errors, Keyed, set_once, unknown_option};
use crate::lit;

/// Every option, in the order the docs list them.
pub(crate) const KEYS: &[&str] = &["name", "batch", "poll", "backoff", "max_backoff", "timeout"];

/// Largest `batch`; the runtime's `ProjectionSpec::MAX_BATCH`.
pub(crate) const MAX_BATCH: u32 = 10_000;

/// The options as written; absent ones get the runtime's defaults.
#[derive(Default)]
pub(crate) struct ProjectionArgs {
    pub(crate) name: Keyed<LitStr>,
    pub(crate) batch: Keyed<u32>,
    pub(crate) poll: Keyed<Duration>,
    pub(crate) backoff: Keyed<Duration>,
    pub(crate) max_backoff: Keyed<Duration>,
    pub(crate) timeout: Keyed<Duration>,
}

impl ProjectionArgs {
    /// Parses the attribute's arguments. Only a syntax error in the list itself aborts; each
    /// option's problems are recorded in `errors`.
    pub(crate) fn parse(args: TokenStream, errors: &mut Errors) -> syn::Result<Self> {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args)?;
        let mut parsed = Self::default();
        for meta in metas {
            if let Err(error) = parsed.set(&meta) {
                errors.push(error);
            }
        }
        if let (Some((_, backoff)), Some((key, max))) = (&parsed.backoff, &parsed.max_backoff)
            && max < backoff
        {
            errors.spanned(key, "`max_backoff` must not be shorter than `backoff`");
        }
        Ok(parsed)
    }

    fn set(&mut self, meta: &Meta) -> syn::Result<()> {
        let Meta::NameValue(assignment) = meta else {
            return Err(syn::Error::new_spanned(
                meta,
                "expected `key = value`, e.g. `batch = 100` or `poll = \"200ms\"`",
            ));
        };
        let Some(key) = assignment.path.get_ident() else {
            return Err(unknown_option(&assignment.path, KEYS));
        };
        let value = &assignment.value;
        let at_least_1ms = Duration::from_millis(1);
        match key.to_string().as_str() {
            "name" => set_once(&mut self.name, key, lit::name(value, "name")?),
            "batch" => set_once(
                &mut self.batch,
                key,
                lit::bounded_u32(value, "batch", 1..=MAX_BATCH, 100)?,
            ),
            "poll" => set_once(
                &mut self.poll,
                key,
                lit::duration(value, "poll", at_least_1ms)?,
            ),
            "backoff" => set_once(
                &mut self.backoff,
                key,
                lit::duration(value, "backoff", at_least_1ms)?,
            ),
            "max_backoff" => set_once(
                &mut self.max_backoff,
                key,
                lit::duration(value, "max_backoff", at_least_1ms)?,
            ),
            "timeout" => set_once(
                &mut self.timeout,
                key,
                lit::duration(value, "timeout", at_least_1ms)?,
            ),
            // An option of `#[event_handler]` that a projection has no use for: say why.
            "linger" => Err(syn::Error::new_spanned(
                key,
                "`linger` is an option of `#[event_handler]`, not of `#[projection]`: a projection \
                 is not woken per publish but polls, so a batch already holds what committed \
                 within one `poll`; raise `poll` for fuller batches",
            )),
            _ => Err(unknown_option(&assignment.path, KEYS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn messages(tokens: TokenStream) -> Vec<String> {
        let mut errors = Errors::new();
        let _ = ProjectionArgs::parse(tokens, &mut errors);
        match errors.finish() {
            Ok(()) => Vec::new(),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn reads_options_and_reports_every_error() {
        assert!(messages(quote!(name = "order_totals", batch = 100, poll = "200ms")).is_empty());
        let errors = messages(quote!(batch = 0, retries = 3, poll = "soon"));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(errors[0], "`batch` must be in 1..=10000, found 0");
        assert!(
            errors[1].starts_with("unknown option `retries`"),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].starts_with("invalid duration \"soon\" for `poll`"),
            "{}",
            errors[2]
        );
    }

    #[test]
    fn linger_is_refused_with_its_reason() {
        let errors = messages(quote!(batch = 100, linger = "50ms"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .starts_with("`linger` is an option of `#[event_handler]`, not of `#[projection]`"),
            "{}",
            errors[0]
        );
    }
}
