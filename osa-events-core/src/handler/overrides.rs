//! Where run-time overrides come from and how they are layered over a handler's spec: the
//! builder's `configure` calls and the environment (`OSA_EVENTS_HANDLER_<NAME>_<OPTION>`).
//!
//! Precedence, lowest first: the attribute (or, for an instance, the template's attribute and then
//! the instance's own options), then `configure` in call order, then the file named by
//! `OSA_EVENTS_HANDLERS_FILE`, then the `OSA_EVENTS_HANDLER_*` variables. Operators tune per
//! environment, so what they set wins over what the code says, and a variable (the most specific,
//! one option of one handler) over a file.

use super::HandlerSpec;
use super::options::{HandlerOptions, KEYS, Setting};
use crate::{Error, Result};

/// The prefix of the environment variables that override handler options.
pub(crate) const ENV_PREFIX: &str = "OSA_EVENTS_HANDLER_";

/// The variable naming a JSON file of overrides.
pub(crate) const FILE_VAR: &str = "OSA_EVENTS_HANDLERS_FILE";

/// Options for one handler, and where they came from: `configure("index.vector", ..)` or
/// `OSA_EVENTS_HANDLER_INDEX_VECTOR_BATCH=128`, which every message about them names.
#[derive(Debug, Clone)]
pub(crate) struct Override {
    pub(crate) source: String,
    pub(crate) handler: String,
    pub(crate) options: HandlerOptions,
}

/// The label of a `configure` call in messages.
pub(crate) fn configure_source(handler: &str) -> String {
    format!("`configure({handler:?}, ..)`")
}

/// A handler name as it appears in an environment variable: upper-cased, every character other
/// than an ASCII letter or digit replaced by `_` (`index.vector` → `INDEX_VECTOR`).
pub(crate) fn env_form(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Checks the `configure` calls: each names a known handler (one in `handlers`; a projection's
/// options cannot be overridden), sets no routing key, and has values in range.
pub(crate) fn check_configured(
    configured: &[(String, HandlerOptions)],
    handlers: &[&str],
    projections: &[&str],
) -> Result<Vec<Override>> {
    configured
        .iter()
        .map(|(handler, options)| {
            let source = configure_source(handler);
            let fail = |message: String| Err(Error::Config(format!("{source}: {message}").into()));
            if !handlers.contains(&handler.as_str()) {
                return fail(unknown_handler(handler, handlers, projections));
            }
            if options.routing_key.is_some() {
                return fail(
                    "`routing_key` cannot be overridden: it is part of the handler's subscription \
                     (change it with `repoint`, or run the function under another name and key \
                     with `handler_instance`)"
                        .to_owned(),
                );
            }
            if let Err(message) = options.check() {
                return fail(message);
            }
            Ok(Override {
                source,
                handler: handler.clone(),
                options: options.clone(),
            })
        })
        .collect()
}

fn unknown_handler(name: &str, handlers: &[&str], projections: &[&str]) -> String {
    if projections.contains(&name) {
        return format!(
            "`{name}` is a projection: only handler options can be overridden (set a \
             projection's in `#[projection]`)"
        );
    }
    format!(
        "no handler is named `{name}` (known handlers: {})",
        handlers.join(", ")
    )
}

/// The overrides in the environment `vars`: every `OSA_EVENTS_HANDLER_<NAME>_<OPTION>=<value>`,
/// where `<NAME>` is the [`env_form`] of one of `handlers` and `<OPTION>` an overridable
/// option's key upper-cased; other variables are ignored. One override per variable, sorted by
/// variable name (so the first error is the same on every start).
///
/// # Errors
///
/// [`Error::Config`] naming the variable for a name no handler has, an option that cannot be
/// overridden, a value that does not parse or is out of range, and a variable that could set two
/// things (`a.b` and `a_b` are both `A_B`; `x.claim`'s `timeout` and `x`'s `claim_timeout` are both
/// `X_CLAIM_TIMEOUT`).
pub(crate) fn from_env<I>(vars: I, handlers: &[&str], projections: &[&str]) -> Result<Vec<Override>>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(key, _)| key.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    let mut forms: Vec<(String, &str)> = handlers
        .iter()
        .map(|handler| (env_form(handler), *handler))
        .collect();
    forms.sort_unstable();
    forms.dedup();
    vars.into_iter()
        .map(|(var, value)| {
            let rest = &var[ENV_PREFIX.len()..];
            let fail = |message: String| Err(Error::Config(format!("`{var}`: {message}").into()));
            // Every (handler, option) the variable could mean, and every handler it could start with.
            let mut meanings: Vec<(&str, &str)> = Vec::new();
            let mut prefixes: Vec<(&str, &str)> = Vec::new();
            for (form, handler) in &forms {
                let Some(option) = rest
                    .strip_prefix(form.as_str())
                    .and_then(|rest| rest.strip_prefix('_'))
                else {
                    continue;
                };
                prefixes.push((handler, option));
                if let Some(key) = KEYS.iter().find(|key| key.to_ascii_uppercase() == option) {
                    meanings.push((handler, key));
                }
            }
            match meanings.as_slice() {
                [(handler, key)] => {
                    let setting = Setting::parse(key, &value)
                        .expect("every key in KEYS is an overridable option");
                    match setting {
                        Ok(setting) => Ok(Override {
                            source: format!("`{var}={value}`"),
                            handler: (*handler).to_owned(),
                            options: HandlerOptions::new().set(setting),
                        }),
                        Err(message) => {
                            Err(Error::Config(format!("`{var}={value}`: {message}").into()))
                        }
                    }
                }
                [] => match prefixes.iter().max_by_key(|(handler, _)| handler.len()) {
                    Some((handler, option)) => fail(format!(
                        "handler `{handler}` has no option `{option}` that can be set from the \
                         environment (expected one of {})",
                        env_options()
                    )),
                    None => match projections.iter().find(|projection| {
                        rest.strip_prefix(env_form(projection).as_str())
                            .is_some_and(|option| option.starts_with('_'))
                    }) {
                        Some(projection) => {
                            fail(unknown_handler(projection, handlers, projections))
                        }
                        None => fail(format!(
                            "no handler's name matches `{rest}` (expected \
                             `{ENV_PREFIX}<NAME>_<OPTION>` with <NAME> one of {} and <OPTION> one \
                             of {})",
                            env_names(&forms),
                            env_options()
                        )),
                    },
                },
                several => fail(format!(
                    "the variable is ambiguous: it could set {}; rename a handler so that their \
                     variables differ, or set the option with `RuntimeBuilder::configure`",
                    several
                        .iter()
                        .map(|(handler, key)| format!("`{key}` of handler `{handler}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                )),
            }
        })
        .collect()
}

/// The overrides in the JSON file at `path` (the value of [`FILE_VAR`]): an object of handler
/// names, each an object of options, `{"index.vector": {"batch": 128, "poll": "500ms"}}`, with
/// integers as JSON numbers or strings and durations as humantime strings.
///
/// # Errors
///
/// [`Error::Config`] naming the variable or the file for a file that cannot be read or is not such
/// an object, and naming the file and the handler for an unknown handler or option and a bad value.
pub(crate) fn from_file(
    path: &str,
    handlers: &[&str],
    projections: &[&str],
) -> Result<Vec<Override>> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        Error::Config(format!("`{FILE_VAR}={path}`: cannot read the file: {error}").into())
    })?;
    parse_file(path, &text, handlers, projections)
}

/// [`from_file`] on the file's text.
pub(crate) fn parse_file(
    path: &str,
    text: &str,
    handlers: &[&str],
    projections: &[&str],
) -> Result<Vec<Override>> {
    let fail = |at: String, message: String| Err(Error::Config(format!("{at}: {message}").into()));
    let file = format!("`{path}` (`{FILE_VAR}`)");
    let expected = "expected an object of handler names, each an object of options, e.g. \
                    {\"index.vector\": {\"batch\": 128, \"poll\": \"500ms\"}}";
    let parsed: serde_json::Value = match serde_json::from_str(text) {
        Ok(parsed) => parsed,
        Err(error) => return fail(file, format!("not JSON ({error}): {expected}")),
    };
    let serde_json::Value::Object(entries) = parsed else {
        return fail(file, expected.to_owned());
    };
    let mut overrides = Vec::with_capacity(entries.len());
    for (handler, options) in entries {
        let source = format!("`{path}`: `{handler}`");
        if !handlers.contains(&handler.as_str()) {
            return fail(source, unknown_handler(&handler, handlers, projections));
        }
        let serde_json::Value::Object(options) = options else {
            return fail(source, expected.to_owned());
        };
        let mut parsed = HandlerOptions::new();
        for (key, value) in options {
            let text = match value {
                serde_json::Value::String(text) => text,
                serde_json::Value::Number(number) => number.to_string(),
                other => {
                    return fail(
                        source,
                        format!("`{key}` takes a number or a string, found {other}"),
                    );
                }
            };
            match Setting::parse(&key, &text) {
                Some(Ok(setting)) => parsed = parsed.set(setting),
                Some(Err(message)) => return fail(source, message),
                None => {
                    return fail(
                        source,
                        format!(
                            "no option `{key}` can be set in the file (expected one of {})",
                            KEYS.join(", ")
                        ),
                    );
                }
            }
        }
        overrides.push(Override {
            source,
            handler,
            options: parsed,
        });
    }
    Ok(overrides)
}

/// `BATCH, LINGER, …`
fn env_options() -> String {
    KEYS.iter()
        .map(|key| key.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `INDEX_VECTOR (index.vector), …`
fn env_names(forms: &[(String, &str)]) -> String {
    if forms.is_empty() {
        return "(no handler is registered)".to_owned();
    }
    forms
        .iter()
        .map(|(form, handler)| format!("{form} (`{handler}`)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `spec` with the overrides of its handler applied, lowest precedence first, then validated.
///
/// # Errors
///
/// [`Error::Config`] when the result is not a valid spec (`linger` beyond a third of the
/// overridden `claim_timeout`, say), naming the overrides that were applied.
pub(crate) fn apply(spec: HandlerSpec, overrides: &[&Override]) -> Result<HandlerSpec> {
    let effective = overrides
        .iter()
        .fold(spec, |spec, layer| layer.options.apply(spec));
    effective.validate().map_err(|error| match error {
        Error::Config(message) if !overrides.is_empty() => Error::Config(
            format!(
                "{message} (with the overrides of {})",
                overrides
                    .iter()
                    .map(|layer| layer.source.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .into(),
        ),
        error => error,
    })?;
    Ok(effective)
}

#[cfg(test)]
mod tests;
