//! Reading literal option values: integers in a range, humantime durations, names.
//! Every error is spanned at the literal.

use std::time::Duration;

use syn::{Expr, ExprLit, Lit, LitStr};

pub(crate) use crate::limits::check_name;

/// The literal of `expr`, if it is one.
fn literal(expr: &Expr) -> Option<&Lit> {
    match expr {
        Expr::Lit(ExprLit { lit, .. }) => Some(lit),
        _ => None,
    }
}

/// A string literal.
pub(crate) fn string<'a>(expr: &'a Expr, key: &str, example: &str) -> syn::Result<&'a LitStr> {
    match literal(expr) {
        Some(Lit::Str(lit)) => Ok(lit),
        _ => Err(syn::Error::new_spanned(
            expr,
            format!("`{key}` takes a string literal, e.g. `{key} = {example}`"),
        )),
    }
}

/// A boolean literal, `true` or `false`.
pub(crate) fn boolean(expr: &Expr, key: &str) -> syn::Result<bool> {
    match literal(expr) {
        Some(Lit::Bool(lit)) => Ok(lit.value),
        _ => Err(syn::Error::new_spanned(
            expr,
            format!("`{key}` takes `true` or `false`, e.g. `{key} = false`"),
        )),
    }
}

/// An integer literal in `range`; `example` is suggested when the literal is not an integer.
pub(crate) fn bounded_u32(
    expr: &Expr,
    key: &str,
    range: std::ops::RangeInclusive<u32>,
    example: u32,
) -> syn::Result<u32> {
    let lit = match literal(expr) {
        Some(Lit::Int(lit)) => lit,
        _ => {
            return Err(syn::Error::new_spanned(
                expr,
                format!(
                    "`{key}` takes an integer literal in {}..={}, e.g. `{key} = {example}`",
                    range.start(),
                    range.end()
                ),
            ));
        }
    };
    let out_of_range = || {
        syn::Error::new_spanned(
            lit,
            format!(
                "`{key}` must be in {}..={}, found {}",
                range.start(),
                range.end(),
                lit.base10_digits()
            ),
        )
    };
    let value: u64 = lit.base10_parse().map_err(|_| out_of_range())?;
    let value = u32::try_from(value).map_err(|_| out_of_range())?;
    if !range.contains(&value) {
        return Err(out_of_range());
    }
    Ok(value)
}

/// A humantime duration string such as `"500ms"` or `"2m"`, at least `min`.
pub(crate) fn duration(expr: &Expr, key: &str, min: Duration) -> syn::Result<Duration> {
    duration_in(expr, key, min, Duration::MAX)
}

/// A humantime duration string in `min..=max`.
pub(crate) fn duration_in(
    expr: &Expr,
    key: &str,
    min: Duration,
    max: Duration,
) -> syn::Result<Duration> {
    let lit = string(expr, key, "\"30s\"")?;
    let text = lit.value();
    let duration = humantime::parse_duration(&text).map_err(|error| {
        syn::Error::new_spanned(
            lit,
            format!("invalid duration {text:?} for `{key}`: {error} (expected e.g. \"500ms\", \"30s\", \"2m\")"),
        )
    })?;
    if duration < min {
        let min_text = humantime::format_duration(min);
        return Err(syn::Error::new_spanned(
            lit,
            format!("`{key}` must be at least {min_text}, found {text:?}"),
        ));
    }
    if duration > max {
        let max_text = humantime::format_duration(max);
        return Err(syn::Error::new_spanned(
            lit,
            format!("`{key}` must be at most {max_text}, found {text:?}"),
        ));
    }
    Ok(duration)
}

/// A non-empty name of at most [`crate::limits::MAX_NAME_LEN`] characters from `[A-Za-z0-9._:/-]`: safe in logs,
/// SQL values and metrics labels alike.
pub(crate) fn name(expr: &Expr, key: &str) -> syn::Result<LitStr> {
    let lit = string(expr, key, "\"index.vector\"")?;
    check_name(&lit.value(), key).map_err(|message| syn::Error::new_spanned(lit, message))?;
    Ok(lit.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn durations_parse_at_compile_time() {
        let expr: Expr = parse_quote!("500ms");
        assert_eq!(
            duration(&expr, "poll", Duration::from_millis(1)).unwrap(),
            Duration::from_millis(500)
        );
        let expr: Expr = parse_quote!("5 parsecs");
        let message = duration(&expr, "poll", Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("invalid duration \"5 parsecs\" for `poll`"),
            "{message}"
        );
        let expr: Expr = parse_quote!("0s");
        let message = duration(&expr, "poll", Duration::from_millis(1))
            .unwrap_err()
            .to_string();
        assert_eq!(message, "`poll` must be at least 1ms, found \"0s\"");
    }

    #[test]
    fn integers_are_range_checked() {
        let expr: Expr = parse_quote!(0);
        let message = bounded_u32(&expr, "batch", 1..=1000, 64)
            .unwrap_err()
            .to_string();
        assert_eq!(message, "`batch` must be in 1..=1000, found 0");
        let expr: Expr = parse_quote!("64");
        let message = bounded_u32(&expr, "batch", 1..=1000, 64)
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "`batch` takes an integer literal in 1..=1000, e.g. `batch = 64`"
        );
    }

    #[test]
    fn non_literals_say_what_is_expected() {
        let expr: Expr = parse_quote!(index.vector);
        let message = name(&expr, "name").err().unwrap().to_string();
        assert_eq!(
            message,
            "`name` takes a string literal, e.g. `name = \"index.vector\"`"
        );
        let expr: Expr = parse_quote!(-1);
        let message = bounded_u32(&expr, "retries", 0..=100, 5)
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "`retries` takes an integer literal in 0..=100, e.g. `retries = 5`"
        );
    }

    #[test]
    fn names_are_restricted() {
        assert!(check_name("index.vector", "name").is_ok());
        assert_eq!(
            check_name("", "name").unwrap_err(),
            "`name` must not be empty"
        );
        assert!(
            check_name("drop table;", "name")
                .unwrap_err()
                .contains("found ' '")
        );
    }
}
