//! Collecting every error of one macro invocation, so the user sees them all at once.

use std::fmt::Display;

use proc_macro2::{Ident, TokenStream};
use quote::ToTokens;
use syn::Path;

/// An accumulator of spanned errors, in the spirit of serde's `Ctxt` and darling's accumulator.
///
/// It must be consumed with [`Errors::finish`]; dropping it unfinished is a bug in this crate and
/// panics, so no collected error can be silently lost.
#[derive(Default)]
pub(crate) struct Errors {
    errors: Option<Vec<syn::Error>>,
}

impl Errors {
    pub(crate) fn new() -> Self {
        Self {
            errors: Some(Vec::new()),
        }
    }

    /// Records an error spanned on `tokens`.
    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        self.errors
            .as_mut()
            .expect("Errors used after finish()")
            .push(error);
    }

    /// The value of `result`, or `None` with its error recorded (darling's `handle`).
    pub(crate) fn handle<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    /// `Ok` if nothing was recorded, else all errors combined into one.
    pub(crate) fn finish(mut self) -> syn::Result<()> {
        let errors = self.errors.take().expect("Errors finished twice");
        let mut iter = errors.into_iter();
        let Some(mut combined) = iter.next() else {
            return Ok(());
        };
        for error in iter {
            combined.combine(error);
        }
        Err(combined)
    }
}

impl Drop for Errors {
    fn drop(&mut self) {
        if self.errors.is_some() && !std::thread::panicking() {
            panic!("osa-events-macros bug: Errors dropped without finish()");
        }
    }
}

/// The original item followed by the errors: the item stays usable (IDEs, the rest of the crate)
/// and the user sees only the real errors, not a cascade of "cannot find ...".
pub(crate) fn with_errors(item: impl ToTokens, error: syn::Error) -> TokenStream {
    let mut tokens = item.into_token_stream();
    tokens.extend(error.into_compile_error());
    tokens
}

/// An option's value with the key it was given under (for duplicate errors, spanned at the second key).
pub(crate) type Keyed<T> = Option<(Ident, T)>;

/// Stores `value` unless the key was given before; the duplicate error is spanned at this key.
/// The one setter for every option of every attribute.
pub(crate) fn set_once<T>(slot: &mut Keyed<T>, key: &Ident, value: T) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new_spanned(
            key,
            format!("`{key}` specified more than once"),
        ));
    }
    *slot = Some((key.clone(), value));
    Ok(())
}

/// "unknown option `bach`, did you mean `batch`? expected one of `name`, `batch`, …", spanned at
/// the key as written.
pub(crate) fn unknown_option(path: &Path, keys: &[&str]) -> syn::Error {
    let written = path.to_token_stream().to_string().replace(' ', "");
    let quoted: Vec<String> = keys.iter().map(|key| format!("`{key}`")).collect();
    let expected = match quoted.as_slice() {
        [only] => only.clone(),
        [first, second] => format!("{first} or {second}"),
        all => format!("one of {}", all.join(", ")),
    };
    let message = match did_you_mean(&written, keys) {
        Some(suggestion) => {
            format!("unknown option `{written}`, did you mean `{suggestion}`? expected {expected}")
        }
        None => format!("unknown option `{written}`; expected {expected}"),
    };
    syn::Error::new_spanned(path, message)
}

/// The candidate closest to `input` when it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|candidate| (edit_distance(input, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let keys = ["batch", "retries", "routing_key", "poll"];
        assert_eq!(did_you_mean("bach", &keys), Some("batch"));
        assert_eq!(did_you_mean("retires", &keys), Some("retries"));
        assert_eq!(did_you_mean("routingkey", &keys), Some("routing_key"));
        assert_eq!(did_you_mean("colour", &keys), None);
    }

    #[test]
    fn unknown_options_list_what_is_allowed() {
        let message = |path: Path, keys: &[&str]| unknown_option(&path, keys).to_string();
        assert_eq!(
            message(syn::parse_quote!(verison), &["name", "version"]),
            "unknown option `verison`, did you mean `version`? expected `name` or `version`"
        );
        assert_eq!(
            message(syn::parse_quote!(a::b), &["name", "batch", "poll"]),
            "unknown option `a::b`; expected one of `name`, `batch`, `poll`"
        );
    }

    #[test]
    fn combines_all_errors() {
        let mut errors = Errors::new();
        errors.spanned(quote::quote!(a), "first");
        errors.spanned(quote::quote!(b), "second");
        let combined = errors.finish().unwrap_err();
        assert_eq!(combined.into_iter().count(), 2);
    }
}
