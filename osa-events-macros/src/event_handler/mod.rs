//! `#[event_handler(...)]`: parse the options, check the signature, emit the registration.

use proc_macro2::TokenStream;
use syn::ItemFn;

use crate::diag::{Errors, with_errors};

mod args;
pub(crate) mod emit;
pub(crate) mod signature;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    expand_fn(
        args,
        item,
        signature::Kind::Handler,
        args::HandlerArgs::parse,
        |_, _| {},
        emit::emit,
    )
}

/// The pipeline of every attribute on an `async fn` (`#[event_handler]`, `#[projection]`): parse
/// the item, then parse the options and check the signature (plus the attribute's own `check`),
/// collecting every error, then emit; on any error, the item as written followed by the errors.
pub(crate) fn expand_fn<A>(
    args: TokenStream,
    item: TokenStream,
    kind: signature::Kind,
    parse_args: impl FnOnce(TokenStream, &mut Errors) -> syn::Result<A>,
    check: impl FnOnce(&signature::Signature<'_>, &mut Errors),
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
        check(signature, &mut errors);
    }
    match (errors.finish(), args, signature) {
        (Ok(()), Some(args), Some(signature)) => emit(&args, &item, &signature),
        (Err(error), _, _) => with_errors(&item, error),
        (Ok(()), _, _) => unreachable!("a missing part always records an error"),
    }
}
