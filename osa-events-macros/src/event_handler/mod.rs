//! `#[event_handler(...)]`: parse the options, check the signature, emit the registration.

use proc_macro2::TokenStream;
use syn::ItemFn;

use crate::diag::{Errors, with_errors};

mod args;
pub(crate) mod emit;
pub(crate) mod signature;
mod start_from;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    expand_fn(
        args,
        item,
        signature::Kind::Handler,
        args::HandlerArgs::parse,
        check,
        emit::emit,
    )
}

/// The checks that need both the options and the signature.
fn check(
    args: Option<&args::HandlerArgs>,
    signature: &signature::Signature<'_>,
    errors: &mut Errors,
) {
    if let Some((key, _)) = args.and_then(|args| args.linger.as_ref())
        && signature.shape == signature::Shape::Each
    {
        errors.spanned(
            key,
            "`linger` applies only to batch handlers, whose first parameter is `Batch<E>`: \
             a per-event handler is called once per event, however many are claimed together",
        );
    }
}

/// The pipeline of every attribute on an `async fn` (`#[event_handler]`, `#[projection]`): parse
/// the item, then parse the options and check the signature (plus the attribute's own `check`,
/// which also gets the options unless their list did not parse), collecting every error, then
/// emit; on any error, the item as written followed by the errors.
pub(crate) fn expand_fn<A>(
    args: TokenStream,
    item: TokenStream,
    kind: signature::Kind,
    parse_args: impl FnOnce(TokenStream, &mut Errors) -> syn::Result<A>,
    check: impl FnOnce(Option<&A>, &signature::Signature<'_>, &mut Errors),
    emit: impl FnOnce(&A, &ItemFn, &signature::Signature<'_>) -> TokenStream,
) -> TokenStream {
    let item: ItemFn = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(_) => return with_errors(&item, syn::Error::new_spanned(&item, kind.misplaced())),
    };
    let mut errors = Errors::new();
    let args = match parse_args(args, &mut errors) {
        Ok(args) => Some(args),
        Err(error) => {
            errors.push(error);
            None
        }
    };
    let signature = signature::analyze(&item, kind, &mut errors);
    if let Some(signature) = &signature {
        check(args.as_ref(), signature, &mut errors);
    }
    match (errors.finish(), args, signature) {
        (Ok(()), Some(args), Some(signature)) => emit(&args, &item, &signature),
        (Err(error), _, _) => with_errors(&item, error),
        (Ok(()), _, _) => unreachable!("a missing part always records an error"),
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    fn errors(args: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> Vec<String> {
        let output = super::expand(args, item).to_string();
        output
            .match_indices("compile_error ! { \"")
            .map(|(at, open)| {
                let rest = &output[at + open.len()..];
                rest[..rest.find("\" }").unwrap()].to_owned()
            })
            .collect()
    }

    #[test]
    fn linger_needs_a_batch_handler() {
        let each = errors(
            quote!(linger = "50ms"),
            quote!(
                async fn h(e: Ev) -> Result<(), HandlerError> {
                    Ok(())
                }
            ),
        );
        assert_eq!(each.len(), 1, "{each:?}");
        assert!(
            each[0].starts_with("`linger` applies only to batch handlers"),
            "{each:?}"
        );
        let batch = errors(
            quote!(batch = 64, linger = "50ms"),
            quote!(
                async fn h(e: Batch<Ev>) -> Result<(), HandlerError> {
                    Ok(())
                }
            ),
        );
        assert!(batch.is_empty(), "{batch:?}");
    }
}
