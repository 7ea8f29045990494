//! `#[event(name = "...", version = N, previous = OlderType, ordering_key = "field")]` on the
//! derived type.

use syn::punctuated::Punctuated;
use syn::{Attribute, LitStr, Meta, Token};

use crate::diag::{Errors, Keyed, set_once, unknown_option};
use crate::lit;

const KEYS: &[&str] = &["name", "version", "previous", "ordering_key"];

/// The largest `version`: it is stored in an `int` column.
const MAX_VERSION: u32 = i32::MAX as u32;

/// The event's name and version, as written (version defaults to 1), and the type of the version
/// before it, if declared.
pub(crate) struct EventAttrs {
    pub(crate) name: Option<LitStr>,
    pub(crate) version: u32,
    pub(crate) previous: Option<syn::Path>,
    /// The field whose `Display` form is the event's ordering key.
    pub(crate) ordering_key: Option<syn::Member>,
}

/// Reads every `#[event(...)]` attribute; a missing name is reported at `ident`.
pub(crate) fn parse(attrs: &[Attribute], ident: &syn::Ident, errors: &mut Errors) -> EventAttrs {
    // `Some((key, None))`: the key was written with a bad value, already reported.
    let mut name: Keyed<Option<LitStr>> = None;
    let mut version: Keyed<Option<u32>> = None;
    let mut previous: Keyed<Option<syn::Path>> = None;
    let mut ordering_key: Keyed<Option<syn::Member>> = None;
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
                "ordering_key" => set_once(
                    &mut ordering_key,
                    key,
                    errors.handle(ordering_key_field(value)),
                ),
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
        ordering_key: ordering_key.and_then(|(_, field)| field),
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

/// The field named by `ordering_key = "order_id"` (or `"0"` for a tuple struct's first field),
/// spanned at the literal: a field that does not exist, or whose type is not `Display`, is
/// reported there by the compiler.
fn ordering_key_field(expr: &syn::Expr) -> syn::Result<syn::Member> {
    let lit = lit::string(expr, "ordering_key", "\"order_id\"")?;
    let value = lit.value();
    if let Ok(index) = value.parse::<u32>() {
        return Ok(syn::Member::Unnamed(syn::Index {
            index,
            span: lit.span(),
        }));
    }
    let mut ident = syn::parse_str::<syn::Ident>(&value).map_err(|_| {
        syn::Error::new_spanned(
            lit,
            format!(
                "`ordering_key` names a field of the event, e.g. `ordering_key = \"order_id\"`, found {value:?}"
            ),
        )
    })?;
    ident.set_span(lit.span());
    Ok(syn::Member::Named(ident))
}

/// [`lit::name`], with an event's name as the example.
fn event_name(expr: &syn::Expr) -> syn::Result<LitStr> {
    let lit = lit::string(expr, "name", "\"record.published\"")?;
    lit::check_name(&lit.value(), "name")
        .map_err(|message| syn::Error::new_spanned(lit, message))?;
    Ok(lit.clone())
}
