//! `#[event(name = "...", version = N)]` on the derived type.

use syn::{Attribute, LitStr, Meta, Token};
use syn::punctuated::Punctuated;

use crate::diag::{Errors, did_you_mean};
use crate::lit;

const KEYS: &[&str] = &["name", "version"];

/// The event's name and version, as written (version defaults to 1).
pub(crate) struct EventAttrs {
    pub(crate) name: Option<LitStr>,
    pub(crate) version: u32,
}

/// Reads every `#[event(...)]` attribute; a missing name is reported at `ident`.
pub(crate) fn parse(attrs: &[Attribute], ident: &syn::Ident, errors: &mut Errors) -> EventAttrs {
    let mut name: Option<LitStr> = None;
    let mut version: Option<u32> = None;
    let mut name_written = false;
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("event")) {
        let metas = match attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated) {
            Ok(metas) => metas,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        for meta in metas {
            let Meta::NameValue(assignment) = &meta else {
                errors.spanned(&meta, "expected `key = value`, e.g. `name = \"record.published\"`");
                continue;
            };
            let key = assignment.path.get_ident().map(ToString::to_string).unwrap_or_default();
            let result = match key.as_str() {
                "name" if name_written => Err(dup(&assignment.path, "name")),
                "version" if version.is_some() => Err(dup(&assignment.path, "version")),
                "name" => {
                    name_written = true;
                    lit::name(&assignment.value, "name").map(|lit| name = Some(lit))
                }
                "version" => lit::bounded_u32(&assignment.value, "version", 1..=i32::MAX as u32)
                    .map(|(value, _)| version = Some(value)),
                _ => Err(unknown(&assignment.path, &key)),
            };
            if let Err(error) = result {
                errors.push(error);
            }
        }
    }
    if !name_written {
        errors.spanned(
            ident,
            "an event needs a stable name: add `#[event(name = \"...\")]`, e.g. `#[event(name = \"record.published\")]`",
        );
    }
    EventAttrs {
        name,
        version: version.unwrap_or(1),
    }
}

fn dup(path: &syn::Path, key: &str) -> syn::Error {
    syn::Error::new_spanned(path, format!("`{key}` specified more than once"))
}

fn unknown(path: &syn::Path, key: &str) -> syn::Error {
    let written = quote::ToTokens::to_token_stream(path).to_string().replace(' ', "");
    let hint = did_you_mean(key, KEYS)
        .map(|suggestion| format!(", did you mean `{suggestion}`?"))
        .unwrap_or_default();
    syn::Error::new_spanned(
        path,
        format!("unknown event option `{written}`{hint}; expected `name` or `version`"),
    )
}
