//! `#[derive(EventSet)]` on an enum with one newtype variant per event type: the events one
//! projection reads, decoded by name.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Fields};

use crate::diag::Errors;

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.into_compile_error(),
    };
    let mut errors = Errors::new();
    if !input.generics.params.is_empty() {
        errors.spanned(&input.generics, "an event set cannot be generic");
    }
    let mut variants = Vec::new();
    match &input.data {
        Data::Enum(data) if data.variants.is_empty() => {
            errors.spanned(
                &input.ident,
                "an event set needs at least one variant, e.g. `Placed(OrderPlaced)`",
            );
        }
        Data::Enum(data) => {
            for variant in &data.variants {
                match &variant.fields {
                    Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
                        variants.push((&variant.ident, &fields.unnamed[0].ty));
                    }
                    _ => errors.spanned(
                        variant,
                        "each variant of an event set wraps one event type, e.g. `Placed(OrderPlaced)`",
                    ),
                }
            }
        }
        _ => errors.spanned(
            &input.ident,
            "#[derive(EventSet)] goes on an enum with one newtype variant per event type",
        ),
    }
    if let Err(error) = errors.finish() {
        return error.into_compile_error();
    }
    let ident = &input.ident;
    let names = variants
        .iter()
        .map(|(_, ty)| quote!(<#ty as ::osa_events::__private::Event>::NAME));
    let arms = variants.iter().map(|(variant, ty)| {
        quote! {
            if event_type == <#ty as ::osa_events::__private::Event>::NAME {
                return ::osa_events::__private::decode_event::<#ty>(event_type, event_version, payload)
                    .map(Self::#variant);
            }
        }
    });
    let set_name = ident.to_string();
    quote! {
        #[automatically_derived]
        impl ::osa_events::__private::EventSet for #ident {
            const NAMES: &'static [&'static str] = &[#(#names),*];

            fn decode(
                event_type: &str,
                event_version: i32,
                payload: &str,
            ) -> ::core::result::Result<Self, ::osa_events::__private::HandlerError> {
                #(#arms)*
                ::core::result::Result::Err(::osa_events::__private::HandlerError::permanent(
                    ::std::format!("`{}` is not an event of `{}`", event_type, #set_name),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(tokens: TokenStream) -> usize {
        expand(tokens).to_string().matches("compile_error").count()
    }

    #[test]
    fn accepts_newtype_variants_only() {
        assert_eq!(
            errors(quote!(
                enum E {
                    A(A),
                    B(B),
                }
            )),
            0
        );
        assert_eq!(
            errors(quote!(
                enum E {
                    A(A),
                    B { b: B },
                    C,
                }
            )),
            2
        );
        assert_eq!(
            errors(quote!(
                struct E(A);
            )),
            1
        );
        assert_eq!(
            errors(quote!(
                enum E {}
            )),
            1
        );
    }
}
