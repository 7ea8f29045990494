//! `#[derive(Event)]`: read `#[event(...)]`, check the type, implement `osa_events::Event`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::DeriveInput;

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
    // Spanned on the type: a type that is not serde-serializable is reported there, by the
    // compiler, through the trait's supertraits.
    quote_spanned! {ident.span()=>
        #[automatically_derived]
        impl ::osa_events::__private::Event for #ident {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
        }
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
        assert!(errors[0].contains("did you mean `version`? expected `name` or `version`"));
        assert!(errors[1].contains("an event needs a stable name"));
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
