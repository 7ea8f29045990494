//! `#[event(name = "...", version = N, previous = OlderType)]` on the derived type.

use syn::punctuated::Punctuated;
use syn::{Attribute, LitStr, Meta, Token};

use crate::diag::{Errors, Keyed, set_once, unknown_option};
use crate::lit;

const KEYS: &[&str] = &["name", "version", "previous"];

/// The largest `version`: it is stored in an `int` column.
const MAX_VERSION: u32 = i32::MAX as u32;

/// The event's name and version, as written (version defaults to 1), and the type of the version
/// before it, if declared.
pub(crate) struct EventAttrs {
    pub(crate) name: Option<LitStr>,
    pub(crate) version: u32,
    pub(crate) previous: Option<syn::Path>,
}

/// Reads every `#[event(...)]` attribute; a missing name is reported at `ident`.
pub(crate) fn parse(attrs: &[Attribute], ident: &syn::Ident, errors: &mut Errors) -> EventAttrs {
    // `Some((key, None))`: the key was written with a bad value, already reported.
    let mut name: Keyed<Option<LitStr>> = None;
    let mut version: Keyed<Option<u32>> = None;
    let mut previous: Keyed<Option<syn::Path>> = None;
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
                errors.spanned(
                    &meta,
                    "expected `key = value`, e.g. `name = \"record.published\"`",
                );
                continue;
            };
            let Some(key) = assignment.path.get_ident() else {
                errors.push(unknown_option(&assignment.path, KEYS));
                continue;
            };
            let value = &assignment.value;
            let result = match key.to_string().as_str() {
                "name" => set_once(&mut name, key, errors.handle(event_name(value))),
                "version" => set_once(
                    &mut version,
                    key,
                    errors.handle(lit::bounded_u32(value, "version", 1..=MAX_VERSION, 2)),
                ),
                "previous" => set_once(&mut previous, key, errors.handle(previous_type(value))),
                _ => Err(unknown_option(&assignment.path, KEYS)),
            };
            if let Err(error) = result {
                errors.push(error);
            }
        }
    }
    if name.is_none() {
        errors.spanned(
            ident,
            "an event needs a stable name: add `#[event(name = \"...\")]`, e.g. `#[event(name = \"record.published\")]`",
        );
    }
    EventAttrs {
        name: name.and_then(|(_, name)| name),
        version: version.and_then(|(_, version)| version).unwrap_or(1),
        previous: previous.and_then(|(_, previous)| previous),
    }
}

/// The type of the previous version: a path such as `OrderPlacedV1` or `v1::OrderPlaced`.
fn previous_type(expr: &syn::Expr) -> syn::Result<syn::Path> {
    match expr {
        syn::Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => {
            Ok(path.path.clone())
        }
        _ => Err(syn::Error::new_spanned(
            expr,
            "`previous` takes the type of the event's previous version, e.g. `previous = OrderPlacedV1`",
        )),
    }
}

/// [`lit::name`], with an event's name as the example.
fn event_name(expr: &syn::Expr) -> syn::Result<LitStr> {
    let lit = lit::string(expr, "name", "\"record.published\"")?;
    lit::check_name(&lit.value(), "name")
        .map_err(|message| syn::Error::new_spanned(lit, message))?;
    Ok(lit.clone())
}
