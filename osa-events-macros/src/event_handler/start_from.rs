//! `start_from = "now" | "beginning" | <position>`: where a new subscription starts, read from its
//! literal with every error spanned at the value.

use syn::{Expr, ExprLit, ExprUnary, Lit, UnOp};

/// Where a new subscription of the handler starts: the macro's copy of the runtime's `StartFrom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartFrom {
    /// `"now"`: only events published from now on.
    Now,
    /// `"beginning"`: the whole history of its event type.
    Beginning,
    /// A log position: the history after it.
    AfterPosition(i64),
}

/// The string forms, for suggestions.
const WORDS: &[&str] = &["now", "beginning"];

/// What every error ends with: the allowed forms.
const EXPECTED: &str = "expected `start_from = \"now\"`, `start_from = \"beginning\"` or a log \
                        position, a non-negative integer such as `start_from = 1042`";

fn negative() -> String {
    format!("`start_from` position must not be negative; {EXPECTED}")
}

/// Reads the value of `start_from`.
pub(crate) fn start_from(expr: &Expr) -> syn::Result<StartFrom> {
    let message = match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => match lit.value().as_str() {
            "now" => return Ok(StartFrom::Now),
            "beginning" => return Ok(StartFrom::Beginning),
            other => match crate::diag::did_you_mean(other, WORDS) {
                Some(word) => {
                    format!("invalid `start_from` {other:?}, did you mean \"{word}\"? {EXPECTED}")
                }
                None => format!("invalid `start_from` {other:?}; {EXPECTED}"),
            },
        },
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => {
            // In an attribute, `-1` is one literal (syn reads the sign into it); in an
            // expression, a negation (below).
            let digits = lit.base10_digits();
            match lit.base10_parse::<u64>().map(i64::try_from) {
                Ok(Ok(position)) => return Ok(StartFrom::AfterPosition(position)),
                _ if digits.starts_with('-') => negative(),
                _ => format!(
                    "`start_from` position must be at most {}, found {digits}",
                    i64::MAX
                ),
            }
        }
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), ..
        }) => negative(),
        // `start_from = beginning`: the word without its quotes.
        Expr::Path(path) => match path.path.get_ident().map(ToString::to_string) {
            Some(word) if WORDS.contains(&word.as_str()) => {
                format!("`start_from` takes a string here: `start_from = \"{word}\"`")
            }
            _ => format!("invalid `start_from`; {EXPECTED}"),
        },
        _ => format!("invalid `start_from`; {EXPECTED}"),
    };
    Err(syn::Error::new_spanned(expr, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn read(expr: Expr) -> Result<StartFrom, String> {
        start_from(&expr).map_err(|error| error.to_string())
    }

    #[test]
    fn reads_the_three_forms() {
        assert_eq!(read(parse_quote!("now")), Ok(StartFrom::Now));
        assert_eq!(read(parse_quote!("beginning")), Ok(StartFrom::Beginning));
        assert_eq!(read(parse_quote!(0)), Ok(StartFrom::AfterPosition(0)));
        assert_eq!(
            read(parse_quote!(1_042)),
            Ok(StartFrom::AfterPosition(1042))
        );
        assert_eq!(
            read(parse_quote!(9223372036854775807)),
            Ok(StartFrom::AfterPosition(i64::MAX))
        );
    }

    #[test]
    fn every_error_names_the_allowed_forms() {
        let errors = [
            read(parse_quote!("begining")),
            read(parse_quote!("latest")),
            read(parse_quote!(-1)),
            read(parse_quote!(true)),
            read(parse_quote!(StartFrom::Now)),
            read(parse_quote!(1.5)),
        ];
        for error in &errors {
            assert!(error.as_ref().unwrap_err().ends_with(EXPECTED), "{error:?}");
        }
        assert!(
            errors[0]
                .as_ref()
                .unwrap_err()
                .starts_with("invalid `start_from` \"begining\", did you mean \"beginning\"?"),
            "{errors:?}"
        );
        assert!(
            errors[1]
                .as_ref()
                .unwrap_err()
                .starts_with("invalid `start_from` \"latest\"; expected"),
            "{errors:?}"
        );
        assert!(
            errors[2]
                .as_ref()
                .unwrap_err()
                .starts_with("`start_from` position must not be negative"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_bare_word_is_told_to_be_a_string() {
        assert_eq!(
            read(parse_quote!(beginning)),
            Err("`start_from` takes a string here: `start_from = \"beginning\"`".into())
        );
    }

    #[test]
    fn a_position_past_i64_is_out_of_range() {
        assert_eq!(
            read(parse_quote!(9223372036854775808)),
            Err(
                "`start_from` position must be at most 9223372036854775807, found \
                 9223372036854775808"
                    .into()
            )
        );
    }
}
