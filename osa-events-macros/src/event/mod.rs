//! `#[derive(Event)]`: read `#[event(...)]`, check the type, implement `osa_events::Event`.

use proc_macro2::TokenStream;
use quote::quote_spanned;
use syn::DeriveInput;

use crate::diag::Errors;

mod attrs;

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.into_compile_error(),
    };
    let mut errors = Errors::new();
    if !input.generics.params.is_empty() {
        errors.spanned(
            &input.generics,
            "an event type cannot be generic: each event type has one stable name",
        );
    }
    let attrs = attrs::parse(&input.attrs, &input.ident, &mut errors);
    if let Err(error) = errors.finish() {
        return error.into_compile_error();
    }
    let ident = &input.ident;
    let Some(name) = attrs.name else {
        unreachable!("a missing or invalid name is recorded as an error above");
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
        let errors = messages(quote!(struct E;));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("an event needs a stable name"));
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
