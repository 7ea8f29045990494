//! `#[event_handler(key = value, ...)]`: from tokens to [`HandlerArgs`], every value checked and
//! every error collected.

use std::time::Duration;

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{LitStr, Meta, Token};

use super::start_from::{self, StartFrom};
use crate::diag::{Errors, Keyed, set_once, unknown_option};
use crate::lit;

/// Every option, in the order the docs list them.
pub(crate) const KEYS: &[&str] = &[
    "name",
    "routing_key",
    "batch",
    "linger",
    "poll",
    "retries",
    "claim_timeout",
    "concurrency",
    "timeout",
    "backoff",
    "max_backoff",
    "start_from",
    "ordered",
    "register",
];

pub(crate) use crate::limits::{
    DEFAULT_CLAIM_TIMEOUT, HEARTBEATS_PER_CLAIM_TIMEOUT, MAX_BATCH, MAX_CLAIM_TIMEOUT,
    MAX_CONCURRENCY, MAX_RETRIES, MIN_CLAIM_TIMEOUT, MIN_DURATION,
};

/// The options as written; absent ones are `None` and get the runtime's defaults.
#[derive(Default)]
pub(crate) struct HandlerArgs {
    pub(crate) name: Keyed<LitStr>,
    pub(crate) routing_key: Keyed<LitStr>,
    pub(crate) batch: Keyed<u32>,
    pub(crate) linger: Keyed<Duration>,
    pub(crate) poll: Keyed<Duration>,
    pub(crate) retries: Keyed<u32>,
    pub(crate) claim_timeout: Keyed<Duration>,
    pub(crate) concurrency: Keyed<u32>,
    pub(crate) timeout: Keyed<Duration>,
    pub(crate) backoff: Keyed<Duration>,
    pub(crate) max_backoff: Keyed<Duration>,
    pub(crate) start_from: Keyed<StartFrom>,
    /// `"block"` or `"skip"`, checked by [`ordered`]; `emit` turns it into `Ordered::Block` or
    /// `Ordered::Skip`.
    pub(crate) ordered: Keyed<&'static str>,
    /// `false`: no inventory entry; the handler runs only as instances of
    /// `RuntimeBuilder::handler_instance`.
    pub(crate) register: Keyed<bool>,
}

impl HandlerArgs {
    /// Parses the attribute's arguments. Only a syntax error in the list itself aborts; each
    /// option's problems are recorded in `errors` and the option is skipped.
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
        parsed.check_linger(errors);
        Ok(parsed)
    }

    /// `linger` is at most the heartbeat interval, a third of `claim_timeout` (as written, or the
    /// runtime's default): the deliveries held while lingering are claimed.
    fn check_linger(&self, errors: &mut Errors) {
        let Some((key, linger)) = &self.linger else {
            return;
        };
        let (claim_timeout, default) = match &self.claim_timeout {
            Some((_, claim_timeout)) => (*claim_timeout, ""),
            None => (DEFAULT_CLAIM_TIMEOUT, ", the default"),
        };
        let max = claim_timeout / HEARTBEATS_PER_CLAIM_TIMEOUT;
        if *linger > max {
            errors.spanned(
                key,
                format!(
                    "`linger` must be at most {}, a third of `claim_timeout` ({}{default}), found {}: \
                     the deliveries it holds are claimed while it waits",
                    humantime::format_duration(max),
                    humantime::format_duration(claim_timeout),
                    humantime::format_duration(*linger),
                ),
            );
        }
    }

    fn set(&mut self, meta: &Meta) -> syn::Result<()> {
        let Meta::NameValue(assignment) = meta else {
            return Err(syn::Error::new_spanned(
                meta,
                "expected `key = value`, e.g. `batch = 64` or `poll = \"500ms\"`",
            ));
        };
        let Some(key) = assignment.path.get_ident() else {
            return Err(unknown_option(&assignment.path, KEYS));
        };
        let value = &assignment.value;
        match key.to_string().as_str() {
            "name" => set_once(&mut self.name, key, lit::name(value, "name")?),
            "routing_key" => set_once(&mut self.routing_key, key, lit::name(value, "routing_key")?),
            "batch" => set_once(
                &mut self.batch,
                key,
                lit::bounded_u32(value, "batch", 1..=MAX_BATCH, 64)?,
            ),
            "retries" => set_once(
                &mut self.retries,
                key,
                lit::bounded_u32(value, "retries", 0..=MAX_RETRIES, 5)?,
            ),
            "concurrency" => set_once(
                &mut self.concurrency,
                key,
                lit::bounded_u32(value, "concurrency", 1..=MAX_CONCURRENCY, 4)?,
            ),
            "linger" => set_once(
                &mut self.linger,
                key,
                lit::duration(value, "linger", Duration::ZERO)?,
            ),
            "poll" => set_once(
                &mut self.poll,
                key,
                lit::duration(value, "poll", MIN_DURATION)?,
            ),
            "claim_timeout" => set_once(
                &mut self.claim_timeout,
                key,
                lit::duration_in(value, "claim_timeout", MIN_CLAIM_TIMEOUT, MAX_CLAIM_TIMEOUT)?,
            ),
            "timeout" => set_once(
                &mut self.timeout,
                key,
                lit::duration(value, "timeout", MIN_DURATION)?,
            ),
            "backoff" => set_once(
                &mut self.backoff,
                key,
                lit::duration(value, "backoff", MIN_DURATION)?,
            ),
            "max_backoff" => set_once(
                &mut self.max_backoff,
                key,
                lit::duration(value, "max_backoff", MIN_DURATION)?,
            ),
            "start_from" => set_once(&mut self.start_from, key, start_from::start_from(value)?),
            "ordered" => set_once(&mut self.ordered, key, ordered(value)?),
            "register" => set_once(&mut self.register, key, lit::boolean(value, "register")?),
            _ => Err(unknown_option(&assignment.path, KEYS)),
        }
    }
}

/// Reads `ordered = "block" | "skip"`: what a dead head of an ordering key does.
fn ordered(expr: &syn::Expr) -> syn::Result<&'static str> {
    const EXPECTED: &str = "expected `ordered = \"block\"` (a dead head blocks its key until it \
                            is retried or purged) or `ordered = \"skip\"` (the key goes on without it)";
    let lit = lit::string(expr, "ordered", "\"block\"")?;
    match lit.value().as_str() {
        "block" => Ok("block"),
        "skip" => Ok("skip"),
        other => Err(syn::Error::new_spanned(
            lit,
            match crate::diag::did_you_mean(other, &["block", "skip"]) {
                Some(word) => {
                    format!("invalid `ordered` {other:?}, did you mean \"{word}\"? {EXPECTED}")
                }
                None => format!("invalid `ordered` {other:?}; {EXPECTED}"),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: TokenStream) -> (Option<HandlerArgs>, Vec<String>) {
        let mut errors = Errors::new();
        let parsed = HandlerArgs::parse(tokens, &mut errors).ok();
        let messages = match errors.finish() {
            Ok(()) => Vec::new(),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        };
        (parsed, messages)
    }

    #[test]
    fn reads_every_option() {
        let (args, errors) = parse(quote!(
            name = "index.vector",
            routing_key = "vector",
            batch = 64,
            poll = "500ms",
            retries = 5,
            claim_timeout = "5m",
            concurrency = 4,
            timeout = "30s",
            backoff = "1s",
            max_backoff = "1m",
            linger = "50ms",
            start_from = "beginning"
        ));
        assert!(errors.is_empty(), "{errors:?}");
        let args = args.unwrap();
        assert_eq!(args.name.unwrap().1.value(), "index.vector");
        assert_eq!(args.batch.unwrap().1, 64);
        assert_eq!(args.poll.unwrap().1, Duration::from_millis(500));
        assert_eq!(args.claim_timeout.unwrap().1, Duration::from_secs(300));
        assert_eq!(args.concurrency.unwrap().1, 4);
        assert_eq!(args.linger.unwrap().1, Duration::from_millis(50));
        assert_eq!(args.start_from.unwrap().1, StartFrom::Beginning);
    }

    #[test]
    fn ordered_takes_block_or_skip() {
        let (args, errors) = parse(quote!(ordered = "skip"));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(args.unwrap().ordered.unwrap().1, "skip");
        let (_, errors) = parse(quote!(ordered = "blok"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("invalid `ordered` \"blok\", did you mean \"block\"?"),
            "{errors:?}"
        );
        let (_, errors) = parse(quote!(ordered = true));
        assert!(
            errors[0].starts_with("`ordered` takes a string literal, e.g. `ordered = \"block\"`"),
            "{errors:?}"
        );
    }

    #[test]
    fn start_from_is_set_once_and_checked_with_the_others() {
        let (args, errors) = parse(quote!(start_from = 1042, batch = 8));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            args.unwrap().start_from.unwrap().1,
            StartFrom::AfterPosition(1042)
        );
        let (_, errors) = parse(quote!(
            start_from = "now",
            start_from = "later",
            start_from = "now",
            batch = 0
        ));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("invalid `start_from` \"later\""),
            "{errors:?}"
        );
        assert_eq!(errors[1], "`start_from` specified more than once");
        assert_eq!(errors[2], "`batch` must be in 1..=1000, found 0");
        // In an attribute, syn reads `-1` as one negative literal.
        let (_, errors) = parse(quote!(start_from = -1));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("`start_from` position must not be negative"),
            "{errors:?}"
        );
    }

    #[test]
    fn reports_all_errors_at_once() {
        let (_, errors) = parse(quote!(
            bach = 64,
            batch = 0,
            poll = "soon",
            retries = 5,
            retries = 6
        ));
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("unknown option `bach`, did you mean `batch`?"));
        assert_eq!(errors[1], "`batch` must be in 1..=1000, found 0");
        assert!(errors[2].starts_with("invalid duration \"soon\" for `poll`"));
        assert_eq!(errors[3], "`retries` specified more than once");
    }

    #[test]
    fn register_takes_a_boolean_once() {
        let (args, errors) = parse(quote!(register = false, batch = 8));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            args.unwrap().register.map(|(_, register)| register),
            Some(false)
        );
        let (args, errors) = parse(quote!(batch = 8));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(args.unwrap().register.is_none(), "registered by default");
        let (_, errors) = parse(quote!(register = "no", register = true, register = false));
        assert_eq!(
            errors,
            [
                "`register` takes `true` or `false`, e.g. `register = false`",
                "`register` specified more than once"
            ]
        );
    }

    #[test]
    fn rejects_flags_and_paths() {
        let (_, errors) = parse(quote!(batch, a::b = 1));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("expected `key = value`"));
        assert!(errors[1].starts_with("unknown option `a::b`"));
    }

    #[test]
    fn claim_timeout_is_bounded_by_the_shared_limits() {
        let (_, errors) = parse(quote!(claim_timeout = "2days"));
        assert_eq!(
            errors,
            ["`claim_timeout` must be at most 1day, found \"2days\""]
        );
        let (args, errors) = parse(quote!(claim_timeout = "24h"));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(args.unwrap().claim_timeout.unwrap().1, MAX_CLAIM_TIMEOUT);
    }

    #[test]
    fn max_backoff_must_cover_backoff() {
        let (_, errors) = parse(quote!(backoff = "10s", max_backoff = "1s"));
        assert_eq!(errors, ["`max_backoff` must not be shorter than `backoff`"]);
    }

    #[test]
    fn linger_may_be_zero_but_is_a_duration() {
        let (args, errors) = parse(quote!(linger = "0s"));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(args.unwrap().linger.unwrap().1, Duration::ZERO);
        let (_, errors) = parse(quote!(linger = 50));
        assert_eq!(
            errors,
            ["`linger` takes a string literal, e.g. `linger = \"30s\"`"]
        );
    }

    #[test]
    fn linger_is_at_most_a_third_of_the_claim_timeout() {
        let (_, errors) = parse(quote!(linger = "20s", claim_timeout = "1m"));
        assert!(errors.is_empty(), "{errors:?}");
        let (_, errors) = parse(quote!(linger = "21s", claim_timeout = "1m"));
        assert_eq!(
            errors,
            [
                "`linger` must be at most 20s, a third of `claim_timeout` (1m), found 21s: \
                 the deliveries it holds are claimed while it waits"
            ]
        );
        // Without `claim_timeout`, against the runtime's default (the same table).
        let (_, errors) = parse(quote!(linger = "30s"));
        assert_eq!(
            errors,
            [
                "`linger` must be at most 20s, a third of `claim_timeout` (1m, the default), found \
                 30s: the deliveries it holds are claimed while it waits"
            ]
        );
        // A bad `claim_timeout` is reported once, and `linger` checked against the default.
        let (_, errors) = parse(quote!(claim_timeout = "0s", linger = "10s"));
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}
