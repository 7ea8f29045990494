//! The generated items: a unit type per handler, its `Handler` impl, and its inventory entry.
//! Emission never validates; by now the arguments and signature are known to be good.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::{Ident, ItemFn};

use super::args::HandlerArgs;
use super::signature::{Shape, Signature, blame};

/// `index_vectors` → `IndexVectorsHandler`.
pub(crate) fn handler_type_name(function: &Ident) -> Ident {
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
    format_ident!("{}Handler", camel, span = function.span())
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
        options.extend(quote!(.routing_key(#key)));
    }
    let integers = [
        ("batch", &args.batch),
        ("retries", &args.retries),
        ("concurrency", &args.concurrency),
    ];
    for (method, value) in integers {
        if let Some((_, value)) = value {
            let method = Ident::new(method, Span::call_site());
            options.extend(quote!(.#method(#value)));
        }
    }
    let durations = [
        ("poll", &args.poll),
        ("claim_timeout", &args.claim_timeout),
        ("timeout", &args.timeout),
        ("backoff", &args.backoff),
        ("max_backoff", &args.max_backoff),
    ];
    for (method, value) in durations {
        if let Some((_, value)) = value {
            let method = Ident::new(method, Span::call_site());
            let value = duration(*value);
            options.extend(quote!(.#method(#value)));
        }
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
fn bind(item: &ItemFn, sig: &Signature<'_>) -> TokenStream {
    let function = &item.sig.ident;
    let event = sig.event;
    let trait_path = match sig.shape {
        Shape::Each => quote!(::osa_events::__private::FromEventArg),
        Shape::Batch => quote!(::osa_events::__private::FromBatchArg),
    };
    let bound: Vec<Ident> = (0..sig.extractors.len())
        .map(|i| format_ident!("__bound_{}", i))
        .collect();
    let args: Vec<Ident> = (0..sig.extractors.len())
        .map(|i| format_ident!("__arg_{}", i))
        .collect();
    let binds = sig.extractors.iter().zip(&bound).map(|(ty, bound)| {
        quote_spanned! {blame(ty)=>
            let #bound = <#ty as #trait_path>::bind(__resources, <Self as ::osa_events::__private::Handler>::SPEC.name())?;
        }
    });
    let extracts = sig
        .extractors
        .iter()
        .zip(&bound)
        .zip(&args)
        .map(|((ty, bound), arg)| {
            quote_spanned! {blame(ty)=>
                let #arg = <#ty as #trait_path>::extract(&#bound, __call);
            }
        });
    let transactional = sig.extractors.iter().map(|ty| {
        quote_spanned! {blame(ty)=> <#ty as #trait_path>::TRANSACTIONAL }
    });
    let output = sig.output;
    let convert = match sig.shape {
        Shape::Each => quote_spanned! {blame(output)=>
            <#output as ::osa_events::__private::IntoHandlerResult>::into_handler_result(__future.await)
        },
        Shape::Batch => quote_spanned! {blame(output)=>
            <#output as ::osa_events::__private::IntoBatchResult>::into_batch_result(__future.await)
        },
    };
    let call = quote! {
        #(#extracts)*
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
            ::osa_events::__private::Invoker::batch::<#event, _, _>(
                move |__event: ::osa_events::__private::Batch<#event>, __call: &mut ::osa_events::__private::Call<'_>| { #call },
            )
        },
    };
    quote! {
        #(#binds)*
        ::core::result::Result::Ok(#invoker.transactional(false #(|| #transactional)*))
    }
}

pub(crate) fn emit(args: &HandlerArgs, item: &ItemFn, sig: &Signature<'_>) -> TokenStream {
    let function = &item.sig.ident;
    let vis = &item.vis;
    let handler = handler_type_name(function);
    let event = sig.event;
    let spec = spec(args, item, sig);
    let bind = bind(item, sig);
    let doc = format!(
        "The registration of the event handler [`{function}`], generated by `#[event_handler]`.\n\n\
         `run_all_handlers` finds it through `inventory`; name it in tests or builders that select handlers."
    );
    quote! {
        #item

        #[doc = #doc]
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #handler;

        #[automatically_derived]
        impl ::osa_events::__private::Handler for #handler {
            type Event = #event;
            const SPEC: ::osa_events::__private::HandlerSpec = #spec;

            fn bind(
                __resources: &::osa_events::__private::Resources,
            ) -> ::osa_events::__private::Result<::osa_events::__private::Invoker> {
                #bind
            }
        }

        ::osa_events::__private::inventory::submit! {
            ::osa_events::__private::Registration::of::<#handler>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_type_names_are_camel_case() {
        let name = |s: &str| handler_type_name(&Ident::new(s, Span::call_site())).to_string();
        assert_eq!(name("index_vectors"), "IndexVectorsHandler");
        assert_eq!(name("on_order__placed_"), "OnOrderPlacedHandler");
        assert_eq!(name("x"), "XHandler");
    }
}
