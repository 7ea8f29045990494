//! `#[event_handler(...)]`: parse the options, check the signature, emit the registration.

use proc_macro2::TokenStream;
use syn::ItemFn;

use crate::diag::{Errors, with_errors};

mod args;
pub(crate) mod emit;
pub(crate) mod signature;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let item: ItemFn = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(_) => {
            let error = syn::Error::new_spanned(
                &item,
                "#[event_handler] goes on an `async fn` whose first parameter is the event",
            );
            return with_errors(item, error);
        }
    };
    let mut errors = Errors::new();
    let args = match args::HandlerArgs::parse(args, &mut errors) {
        Ok(args) => Some(args),
        Err(error) => {
            errors.push(error);
            None
        }
    };
    let signature = signature::analyze(&item, &mut errors);
    match (errors.finish(), args, signature) {
        (Ok(()), Some(args), Some(signature)) => emit::emit(&args, &item, &signature),
        (Err(error), _, _) => with_errors(&item, error),
        (Ok(()), _, _) => unreachable!("a missing part always records an error"),
    }
}
