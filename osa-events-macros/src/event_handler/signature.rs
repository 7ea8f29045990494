//! The handler function's signature: async, not generic, no receiver, the event first, then
//! extractors, and a return type.

use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, PathArguments, ReturnType, Type};

use crate::diag::Errors;

/// Which attribute the function carries: the checks are shared, the wording names the attribute.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    /// `#[event_handler]`
    Handler,
    /// `#[projection]`
    Projection,
}

impl Kind {
    /// The function as the messages name it.
    const fn noun(self) -> &'static str {
        match self {
            Self::Handler => "an event handler",
            Self::Projection => "a projection",
        }
    }

    /// The error for an item that is not a function at all.
    pub(crate) const fn misplaced(self) -> &'static str {
        match self {
            Self::Handler => {
                "#[event_handler] goes on an `async fn` whose first parameter is the event"
            }
            Self::Projection => {
                "#[projection] goes on an `async fn` whose first parameter is `Batch<E>`"
            }
        }
    }

    /// The error for a function without parameters.
    const fn missing_event(self) -> &'static str {
        match self {
            Self::Handler => {
                "an event handler takes its event as the first parameter, e.g. `event: RecordPublished` or `events: Batch<RecordPublished>`"
            }
            Self::Projection => {
                "a projection takes its events as the first parameter, e.g. `events: Batch<OrderEvent>`"
            }
        }
    }

    /// The error for a second `Batch<E>` parameter.
    const fn second_event(self) -> &'static str {
        match self {
            Self::Handler => {
                "only the first parameter is the event: a handler receives one event (or one `Batch<E>`) per call"
            }
            Self::Projection => {
                "only the first parameter holds events: a projection receives one `Batch<E>` per call"
            }
        }
    }
}

/// How the handler takes its event.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Shape {
    /// `fn(event: E, ..)`
    Each,
    /// `fn(events: Batch<E>, ..)`
    Batch,
}

/// What emission needs to know about the function.
pub(crate) struct Signature<'a> {
    pub(crate) shape: Shape,
    /// `E`, also inside `Batch<E>`.
    pub(crate) event: &'a Type,
    /// The types of the parameters after the event, in order.
    pub(crate) extractors: Vec<&'a Type>,
    /// The written return type.
    pub(crate) output: &'a Type,
}

/// Checks the signature, recording every problem; `None` when emission is impossible.
pub(crate) fn analyze<'a>(
    item: &'a ItemFn,
    kind: Kind,
    errors: &mut Errors,
) -> Option<Signature<'a>> {
    let sig = &item.sig;
    let noun = kind.noun();
    if sig.asyncness.is_none() {
        errors.spanned(
            sig.fn_token,
            format!("{noun} must be an `async fn`: add the `async` keyword"),
        );
    }
    if let Some(constness) = &sig.constness {
        errors.spanned(constness, format!("{noun} cannot be a `const fn`"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(
            &sig.generics,
            format!("{noun} cannot be generic: the runtime must know its event type"),
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, format!("{noun} cannot be variadic"));
    }

    let mut typed = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => errors.spanned(
                receiver,
                format!("{noun} cannot take `self`: make it a free function and pass shared values as `State<T>`"),
            ),
            FnArg::Typed(pattern) => typed.push(&*pattern.ty),
        }
    }
    for ty in &typed {
        if let Type::ImplTrait(impl_trait) = ty {
            errors.spanned(
                impl_trait,
                format!("{noun} cannot take `impl Trait` parameters"),
            );
        }
    }

    let output = match &sig.output {
        ReturnType::Type(_, ty) => Some(&**ty),
        ReturnType::Default => {
            errors.spanned(
                &sig.ident,
                format!("{noun} must return `Result<(), E>`, e.g. `-> Result<(), HandlerError>`"),
            );
            None
        }
    };

    let Some((first, rest)) = typed.split_first() else {
        // Spanned at the parentheses, where the event is missing.
        errors.push(syn::Error::new(
            sig.paren_token.span.join(),
            kind.missing_event(),
        ));
        return None;
    };
    let (shape, event) = match batch_item(first) {
        Some(item) => (Shape::Batch, item),
        None => (Shape::Each, *first),
    };
    for ty in rest {
        if batch_item(ty).is_some() {
            errors.spanned(ty, kind.second_event());
        }
    }
    Some(Signature {
        shape,
        event,
        extractors: rest.to_vec(),
        output: output?,
    })
}

/// `E` when `ty` is written `Batch<E>` (any path ending in `Batch` with one type argument).
fn batch_item(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Batch" {
        return None;
    }
    let PathArguments::AngleBracketed(arguments) = &last.arguments else {
        return None;
    };
    match arguments.args.first() {
        Some(GenericArgument::Type(item)) if arguments.args.len() == 1 => Some(item),
        _ => None,
    }
}

/// The span to blame for a parameter type.
pub(crate) fn blame(ty: &Type) -> proc_macro2::Span {
    ty.span()
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn check(item: ItemFn) -> (Option<Shape>, Vec<String>) {
        let mut errors = Errors::new();
        let shape = analyze(&item, Kind::Handler, &mut errors).map(|sig| sig.shape);
        let messages = match errors.finish() {
            Ok(()) => Vec::new(),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        };
        (shape, messages)
    }

    #[test]
    fn classifies_each_and_batch() {
        let (shape, errors) = check(parse_quote!(
            async fn h(e: Ev, s: State<X>) -> Result<(), HandlerError> {}
        ));
        assert_eq!((shape, errors.len()), (Some(Shape::Each), 0));
        let (shape, errors) = check(parse_quote!(
            async fn h(e: osa_events::Batch<Ev>) -> Result<(), E> {}
        ));
        assert_eq!((shape, errors.len()), (Some(Shape::Batch), 0));
    }

    #[test]
    fn reports_every_signature_problem() {
        let (_, errors) = check(parse_quote!(
            fn h<T>(&self, e: Ev, b: Batch<Ev>) {}
        ));
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].contains("must be an `async fn`"));
        assert!(errors[1].contains("cannot be generic"));
        assert!(errors[2].contains("cannot take `self`"));
        assert!(errors[3].contains("must return `Result<(), E>`"));
        assert!(errors[4].contains("only the first parameter is the event"));
    }

    #[test]
    fn names_the_attribute_in_its_messages() {
        let item: ItemFn = parse_quote!(
            fn p() {}
        );
        let mut errors = Errors::new();
        assert!(analyze(&item, Kind::Projection, &mut errors).is_none());
        let messages: Vec<String> = errors
            .finish()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(
            messages.iter().all(|m| m.starts_with("a projection ")),
            "{messages:?}"
        );
        assert!(messages[2].contains("`events: Batch<OrderEvent>`"));
    }

    #[test]
    fn requires_an_event() {
        let (shape, errors) = check(parse_quote!(
            async fn h() -> Result<(), E> {}
        ));
        assert_eq!(shape, None);
        assert!(errors[0].contains("takes its event as the first parameter"));
    }
}
