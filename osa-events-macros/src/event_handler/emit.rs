//! The generated items: a unit type per handler, its `Handler` impl, and its inventory entry.
//! Emission never validates; by now the arguments and signature are known to be good.

use std::time::Duration;

use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::{Ident, ItemFn, Type};

use super::args::HandlerArgs;
use super::signature::{Shape, Signature, blame};
use super::start_from::StartFrom;

/// `index_vectors` with suffix `Handler` → `IndexVectorsHandler`.
pub(crate) fn handler_type_name(function: &Ident, suffix: &str) -> Ident {
    let name = function.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    let camel: String = name
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect();
    format_ident!("{}{}", camel, suffix, span = function.span())
}

/// The token that names the event type: the last segment of a path (`RecordPublished` in
/// `events::RecordPublished`), else the first token of the type.
fn event_span(event: &Type) -> Span {
    match event {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .map_or_else(|| blame(event), |segment| segment.ident.span()),
        _ => blame(event),
    }
}

fn duration(value: Duration) -> TokenStream {
    let secs = value.as_secs();
    let nanos = value.subsec_nanos();
    quote!(::osa_events::__private::Duration::new(#secs, #nanos))
}

/// The `HandlerSpec` const expression: defaults from the runtime, then each written option.
fn spec(args: &HandlerArgs, item: &ItemFn, sig: &Signature<'_>) -> TokenStream {
    let function = &item.sig.ident;
    let function_name = function.to_string();
    let name = match &args.name {
        Some((_, lit)) => quote!(#lit),
        None => quote!(#function_name),
    };
    let event = sig.event;
    let shape = match sig.shape {
        Shape::Each => quote!(::osa_events::__private::Shape::Each),
        Shape::Batch => quote!(::osa_events::__private::Shape::Batch),
    };
    let mut options = TokenStream::new();
    if let Some((_, key)) = &args.routing_key {
        options.extend(quote!(.with_routing_key(#key)));
    }
    let integers = [
        ("batch", &args.batch),
        ("retries", &args.retries),
        ("concurrency", &args.concurrency),
    ];
    for (method, value) in integers {
        if let Some((_, value)) = value {
            let method = Ident::new(&format!("with_{method}"), Span::call_site());
            options.extend(quote!(.#method(#value)));
        }
    }
    let durations = [
        ("linger", &args.linger),
        ("poll", &args.poll),
        ("claim_timeout", &args.claim_timeout),
        ("timeout", &args.timeout),
        ("backoff", &args.backoff),
        ("max_backoff", &args.max_backoff),
    ];
    for (method, value) in durations {
        if let Some((_, value)) = value {
            let method = Ident::new(&format!("with_{method}"), Span::call_site());
            let value = duration(*value);
            options.extend(quote!(.#method(#value)));
        }
    }
    if let Some((_, start_from)) = &args.start_from {
        let start_from = match start_from {
            StartFrom::Now => quote!(::osa_events::__private::StartFrom::Now),
            StartFrom::Beginning => quote!(::osa_events::__private::StartFrom::Beginning),
            StartFrom::AfterPosition(position) => {
                quote!(::osa_events::__private::StartFrom::AfterPosition(#position))
            }
        };
        options.extend(quote!(.with_start_from(#start_from)));
    }
    if let Some((_, ordered)) = &args.ordered {
        let ordered = match *ordered {
            "skip" => quote!(::osa_events::__private::Ordered::Skip),
            _ => quote!(::osa_events::__private::Ordered::Block),
        };
        options.extend(quote!(.with_ordered(#ordered)));
    }
    let event_name =
        quote_spanned!(blame(event)=> <#event as ::osa_events::__private::Event>::NAME);
    let event_version =
        quote_spanned!(blame(event)=> <#event as ::osa_events::__private::Event>::VERSION);
    quote! {
        ::osa_events::__private::HandlerSpec::new(
            #name,
            ::core::concat!(::core::module_path!(), "::", #function_name),
            #event_name,
            #event_version,
            #shape,
        ) #options
    }
}

/// The body of `Handler::bind`: bind each extractor, then build the invoker around a closure that
/// extracts per call and awaits the user's function.
///
/// Only the user's function names the extractor and return types: the generated code gets them by
/// inference from the call, so a type that does not resolve is reported once (by the function),
/// and one that is no extractor once, by the single generic bound it fails (`__extractor`'s),
/// spanned at the type.
/// `batch_invoker` builds the invoker of a batch shape (`Invoker::batch` or `Invoker::projection`);
/// `owner` is the trait whose `SPEC` names the handler in start-up errors.
pub(crate) fn bind(
    item: &ItemFn,
    sig: &Signature<'_>,
    batch_invoker: &TokenStream,
    owner: &TokenStream,
) -> TokenStream {
    let function = &item.sig.ident;
    let event = sig.event;
    let trait_path = match sig.shape {
        Shape::Each => quote!(::osa_events::__private::FromEventArg),
        Shape::Batch => quote!(::osa_events::__private::FromBatchArg),
    };
    let transactional: Vec<Ident> = (0..sig.extractors.len())
        .map(|i| format_ident!("__transactional_{}", i))
        .collect();
    let extractors: Vec<Ident> = (0..sig.extractors.len())
        .map(|i| format_ident!("__extract_{}", i))
        .collect();
    let args: Vec<Ident> = (0..sig.extractors.len())
        .map(|i| format_ident!("__arg_{}", i))
        .collect();
    let binds = sig
        .extractors
        .iter()
        .zip(&transactional)
        .zip(&extractors)
        .map(|((ty, transactional), extractor)| {
            let call = spanned_call(ty, quote!(__extractor), quote!(__resources, __name));
            quote!(let (#transactional, #extractor) = #call?;)
        });
    let helper = (!sig.extractors.is_empty()).then(|| {
        quote! {
            fn __extractor<T: #trait_path>(
                resources: &::osa_events::__private::Resources,
                handler: &'static str,
            ) -> ::osa_events::__private::Result<(
                bool,
                impl ::core::ops::Fn(&mut ::osa_events::__private::Call<'_>) -> T
                    + ::core::marker::Send
                    + ::core::marker::Sync
                    + 'static,
            )> {
                let bound = <T as #trait_path>::bind(resources, handler)?;
                ::core::result::Result::Ok((
                    <T as #trait_path>::TRANSACTIONAL,
                    move |call: &mut ::osa_events::__private::Call<'_>| {
                        <T as #trait_path>::extract(&bound, call)
                    },
                ))
            }
            let __name = <Self as #owner>::SPEC.name();
        }
    });
    let convert = match sig.shape {
        Shape::Each => spanned_call(
            sig.output,
            quote!(::osa_events::__private::IntoHandlerResult::into_handler_result),
            quote!(__future.await),
        ),
        Shape::Batch => spanned_call(
            sig.output,
            quote!(::osa_events::__private::IntoBatchResult::into_batch_result),
            quote!(__future.await),
        ),
    };
    let call = quote! {
        #(let #args = #extractors(__call);)*
        let __future = #function(__event #(, #args)*);
        async move { #convert }
    };
    let invoker = match sig.shape {
        Shape::Each => quote! {
            ::osa_events::__private::Invoker::each::<#event, _, _>(
                move |__event: #event, __call: &mut ::osa_events::__private::Call<'_>| { #call },
            )
        },
        Shape::Batch => quote! {
            #batch_invoker::<#event, _, _>(
                move |__event: ::osa_events::__private::Batch<#event>, __call: &mut ::osa_events::__private::Call<'_>| { #call },
            )
        },
    };
    quote! {
        #helper
        #(#binds)*
        ::core::result::Result::Ok(#invoker.transactional(false #(|| #transactional)*))
    }
}

/// `callee(args)` spanned over the written type `ty`, so that an error on the call, or on its
/// argument, underlines the whole type even on stable, where spans cannot be joined: each part
/// starts at the type's first token and ends at its last (the trick of `syn::Error::new_spanned`).
fn spanned_call(ty: &Type, callee: TokenStream, args: TokenStream) -> TokenStream {
    let mut tokens = ty.to_token_stream().into_iter();
    let first = tokens
        .next()
        .map_or_else(Span::call_site, |token| token.span());
    let last = tokens.last().map_or(first, |token| token.span());
    let callee = respan(callee, first, last);
    let mut args = Group::new(Delimiter::Parenthesis, respan(args, first, last));
    args.set_span(last);
    quote!(#callee #args)
}

/// `tokens` with the first top-level token spanned at `first` and the others at `last`.
fn respan(tokens: TokenStream, first: Span, last: Span) -> TokenStream {
    tokens
        .into_iter()
        .enumerate()
        .map(|(index, mut token)| {
            token.set_span(if index == 0 { first } else { last });
            token
        })
        .collect()
}

pub(crate) fn emit(args: &HandlerArgs, item: &ItemFn, sig: &Signature<'_>) -> TokenStream {
    let function = &item.sig.ident;
    let vis = &item.vis;
    let handler = handler_type_name(function, "Handler");
    let event = sig.event;
    let spec = spec(args, item, sig);
    let bind = bind(
        item,
        sig,
        &quote!(::osa_events::__private::Invoker::batch),
        &quote!(::osa_events::__private::Handler),
    );
    // `Registration::of::<H>` is where `H: Handler`, so `event: Event`, is checked: spanned there,
    // the error sits under the user's event type.
    let registered = Ident::new(&handler.to_string(), event_span(event));
    let registers = args.register.as_ref().is_none_or(|(_, register)| *register);
    let doc = if registers {
        format!(
            "The registration of the event handler [`{function}`], generated by `#[event_handler]`.\n\n\
             `run_all_handlers` finds it through `inventory`; name it in tests or builders that select handlers."
        )
    } else {
        format!(
            "The event handler [`{function}`] as a template, generated by `#[event_handler(register = false)]`.\n\n\
             It is not registered: it runs only as the instances given to `RuntimeBuilder::handler_instance`."
        )
    };
    // Registered or not, `Registration::of` is named, so that a type that is no event is reported
    // at the same place either way.
    let registration = if registers {
        quote! {
            ::osa_events::__private::inventory::submit! {
                ::osa_events::__private::Registration::of::<#registered>()
            }
        }
    } else {
        quote! {
            const _: ::osa_events::__private::Registration =
                ::osa_events::__private::Registration::of::<#registered>();
        }
    };
    quote! {
        // A handler must be `async` even when it awaits nothing.
        #[allow(clippy::unused_async)]
        #item

        #[doc = #doc]
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #handler;

        // The impl holds only if the event type implements `Event`: a bound made non-trivial by
        // `for<'__event>` (trivially false bounds are errors on stable, rust-lang/rust#48214).
        // A type that is not an event is then reported once, by `submit!` below, instead of
        // once per use of the type in this impl.
        #[automatically_derived]
        impl ::osa_events::__private::Handler for #handler
        where
            for<'__event> #event: ::osa_events::__private::Event,
        {
            type Event = #event;
            const SPEC: ::osa_events::__private::HandlerSpec = #spec;

            fn bind(
                __resources: &::osa_events::__private::Resources,
            ) -> ::osa_events::__private::Result<::osa_events::__private::Invoker> {
                #bind
            }
        }

        #registration
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_type_names_are_camel_case() {
        let name =
            |s: &str| handler_type_name(&Ident::new(s, Span::call_site()), "Handler").to_string();
        assert_eq!(name("index_vectors"), "IndexVectorsHandler");
        assert_eq!(name("on_order__placed_"), "OnOrderPlacedHandler");
        assert_eq!(name("x"), "XHandler");
    }

    /// The expansion names extractor and return types nowhere but in the function itself, so a
    /// type that does not resolve or does not fit is reported once (see `tests/ui`).
    #[test]
    fn names_extractor_and_return_types_only_in_the_function() {
        let output = crate::event_handler::expand(
            quote!(name = "index.vector"),
            quote!(
                async fn index(e: Ev, index: State<VectorIndex>, ctx: Ctx) -> Result<(), MyError> {
                    Ok(())
                }
            ),
        )
        .to_string();
        assert!(!output.contains("compile_error"), "{output}");
        assert_eq!(
            output.matches("State < VectorIndex >").count(),
            1,
            "{output}"
        );
        assert_eq!(output.matches("Ctx").count(), 1, "{output}");
        assert_eq!(output.matches("MyError").count(), 1, "{output}");
    }

    /// `register = false` keeps the type and its `Handler` impl but submits nothing to the
    /// inventory; by default the handler is submitted.
    #[test]
    fn register_false_submits_nothing() {
        let expand = |args| {
            crate::event_handler::expand(
                args,
                quote!(
                    async fn backup_to(e: Ev) -> Result<(), HandlerError> {
                        Ok(())
                    }
                ),
            )
            .to_string()
        };
        let template = expand(quote!(name = "backup", register = false));
        assert!(!template.contains("compile_error"), "{template}");
        assert!(!template.contains("inventory :: submit"), "{template}");
        assert!(
            template.contains("impl :: osa_events :: __private :: Handler for BackupToHandler")
        );
        assert!(template.contains("Registration :: of :: < BackupToHandler >"));
        let registered = expand(quote!(name = "backup"));
        assert!(registered.contains("inventory :: submit"), "{registered}");
        assert_eq!(expand(quote!(name = "backup", register = true)), registered);
    }
}
