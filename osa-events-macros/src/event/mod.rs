//! `#[derive(Event)]`: read `#[event(...)]`, check the type, implement `osa_events::Event`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::DeriveInput;
use syn::spanned::Spanned;

use crate::diag::Errors;

mod attrs;

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.into_compile_error(),
    };
    let mut errors = Errors::new();
    let generic = !input.generics.params.is_empty();
    if generic {
        errors.spanned(
            &input.generics,
            "an event type cannot be generic: each event type has one stable name",
        );
    }
    let attrs = attrs::parse(&input.attrs, &input.ident, &mut errors);
    let errors = errors.finish().err();
    // With a bad `#[event]` the impl is still emitted (with a placeholder name, which the errors
    // keep from ever being compiled into a program), so code using the type reports nothing more.
    let implementation = (!generic).then(|| implementation(&input.ident, &attrs));
    let errors = errors.map(syn::Error::into_compile_error);
    quote! { #implementation #errors }
}

fn implementation(ident: &syn::Ident, attrs: &attrs::EventAttrs) -> TokenStream {
    let name = match &attrs.name {
        Some(name) => quote!(#name),
        None => quote!(""),
    };
    let version = attrs.version;
    // Spanned on the field's name as written: a missing field or a type without `Display` is
    // reported there.
    let ordering_key = attrs.ordering_key.as_ref().map(|field| {
        quote_spanned! {field.span()=>
            fn ordering_key(&self) -> ::core::option::Option<::std::string::String> {
                ::core::option::Option::Some(::std::string::ToString::to_string(&self.#field))
            }
        }
    });
    let Some(previous) = &attrs.previous else {
        // Spanned on the type: a type that is not serde-serializable is reported there, by the
        // compiler, through the trait's supertraits.
        return quote_spanned! {ident.span()=>
            #[automatically_derived]
            impl ::osa_events::__private::Event for #ident {
                const NAME: &'static str = #name;
                const VERSION: u32 = #version;
                #ordering_key
            }
        };
    };
    // One `const` holds everything about the previous version, spanned on its type: a type that
    // is not an `Event`, a missing `From`, another name or a version that is not lower are each
    // reported once, there; the methods only call what it holds.
    let previous = quote_spanned! {previous.span()=>
        const PREVIOUS: ::osa_events::__private::Previous<#ident> =
            ::osa_events::__private::previous::<#ident, #previous>();
    };
    let implementation = quote_spanned! {ident.span()=>
        #[automatically_derived]
        impl ::osa_events::__private::Event for #ident {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;

            fn decode_version(
                version: u32,
                payload: &str,
            ) -> ::core::option::Option<
                ::core::result::Result<Self, ::osa_events::__private::PayloadError>,
            > {
                PREVIOUS.decode_version(version, payload)
            }

            fn accepted_versions() -> ::std::vec::Vec<u32> {
                PREVIOUS.accepted_versions()
            }

            #ordering_key
        }
    };
    quote! {
        const _: () = {
            #previous
            #implementation
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn messages(tokens: TokenStream) -> Vec<String> {
        let output = expand(tokens).to_string();
        output
            .split("compile_error")
            .skip(1)
            .map(|part| part.to_owned())
            .collect()
    }

    #[test]
    fn name_is_required() {
        let errors = messages(quote!(
            struct E;
        ));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("an event needs a stable name"));
    }

    #[test]
    fn implements_the_trait_despite_attribute_errors() {
        let output = expand(quote!(
            #[event(name = "", verison = 2)]
            struct E;
        ))
        .to_string();
        assert!(
            output.contains("impl :: osa_events :: __private :: Event for E"),
            "{output}"
        );
        let errors = messages(quote!(
            #[event(verison = 2)]
            struct E;
        ));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0]
                .contains("did you mean `version`? expected one of `name`, `version`, `previous`")
        );
        assert!(errors[1].contains("an event needs a stable name"));
    }

    #[test]
    fn previous_implements_upcasting_and_checks_the_chain() {
        let output = expand(quote!(
            #[event(name = "order.placed", version = 2, previous = v1::OrderPlaced)]
            struct OrderPlaced;
        ))
        .to_string();
        assert!(!output.contains("compile_error"), "{output}");
        assert!(
            output.contains(
                ":: osa_events :: __private :: previous :: < OrderPlaced , v1 :: OrderPlaced > ()"
            ),
            "{output}"
        );
        assert!(
            output.contains("PREVIOUS . decode_version (version , payload)"),
            "{output}"
        );
        assert!(
            output.contains("PREVIOUS . accepted_versions ()"),
            "{output}"
        );
    }

    #[test]
    fn without_previous_only_the_current_version_is_accepted() {
        let output = expand(quote!(
            #[event(name = "order.placed", version = 2)]
            struct OrderPlaced;
        ))
        .to_string();
        assert!(!output.contains("PREVIOUS"), "{output}");
        assert!(!output.contains("decode_version"), "{output}");
    }

    #[test]
    fn previous_is_a_type_given_once() {
        let errors = messages(quote!(
            #[event(name = "order.placed", version = 3, previous = V1, previous = V2)]
            struct OrderPlaced;
        ));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("`previous` specified more than once"),
            "{errors:?}"
        );

        let errors = messages(quote!(
            #[event(name = "order.placed", version = 2, previous = "V1")]
            struct OrderPlaced;
        ));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("`previous` takes the type of the event's previous version"),
            "{errors:?}"
        );

        let errors = messages(quote!(
            #[event(name = "order.placed", version = 2, previos = V1)]
            struct OrderPlaced;
        ));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("did you mean `previous`?"), "{errors:?}");
    }

    #[test]
    fn ordering_key_reads_the_named_field() {
        let output = expand(quote!(
            #[event(name = "order.shipped", ordering_key = "order_id")]
            struct OrderShipped {
                order_id: u64,
            }
        ))
        .to_string();
        assert!(!output.contains("compile_error"), "{output}");
        assert!(
            output.contains("ToString :: to_string (& self . order_id)"),
            "{output}"
        );
        let errors = messages(quote!(
            #[event(name = "order.shipped", ordering_key = "order id")]
            struct OrderShipped;
        ));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("`ordering_key` names a field of the event"),
            "{errors:?}"
        );
    }

    #[test]
    fn reports_every_attribute_problem() {
        let errors = messages(quote!(
            #[event(name = "", version = 0, nmae = "x")]
            struct E<T>(T);
        ));
        assert_eq!(errors.len(), 4, "{errors:?}"); // generic, empty name, version 0, unknown key
    }
}
