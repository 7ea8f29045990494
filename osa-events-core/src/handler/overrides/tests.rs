use std::time::Duration;

use super::{Override, apply, check_configured, env_form, from_env};
use crate::handler::options::{HandlerOptions, Setting};
use crate::handler::{HandlerSpec, Shape};

const HANDLERS: &[&str] = &["index.vector", "mail", "mail.send"];
const PROJECTIONS: &[&str] = &["totals"];

fn env(vars: &[(&str, &str)]) -> Result<Vec<Override>, String> {
    from_env(
        vars.iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
        HANDLERS,
        PROJECTIONS,
    )
    .map_err(|error| error.to_string())
}

fn env_error(vars: &[(&str, &str)]) -> String {
    env(vars).unwrap_err()
}

#[test]
fn env_forms_upper_case_and_replace_what_is_not_alphanumeric() {
    assert_eq!(env_form("index.vector"), "INDEX_VECTOR");
    assert_eq!(env_form("a-b:c/d_e"), "A_B_C_D_E");
    assert_eq!(env_form("Mail2"), "MAIL2");
}

#[test]
fn reads_one_setting_per_variable_and_ignores_other_variables() {
    let overrides = env(&[
        ("PATH", "/usr/bin"),
        ("OSA_EVENTS_HANDLERS", "ignored: no trailing underscore"),
        ("OSA_EVENTS_HANDLER_MAIL_SEND_MAX_BACKOFF", "5m"),
        ("OSA_EVENTS_HANDLER_INDEX_VECTOR_BATCH", "128"),
        ("osa_events_handler_mail_retries", "1"),
    ])
    .unwrap();
    let read: Vec<(&str, &str, &[Setting])> = overrides
        .iter()
        .map(|o| {
            (
                o.source.as_str(),
                o.handler.as_str(),
                o.options.settings.as_slice(),
            )
        })
        .collect();
    assert_eq!(
        read,
        [
            (
                "`OSA_EVENTS_HANDLER_INDEX_VECTOR_BATCH=128`",
                "index.vector",
                &[Setting::Batch(128)][..]
            ),
            (
                "`OSA_EVENTS_HANDLER_MAIL_SEND_MAX_BACKOFF=5m`",
                "mail.send",
                &[Setting::MaxBackoff(Duration::from_secs(300))][..]
            ),
        ],
        "sorted by variable; lower-case variables are not ours"
    );
}

/// `MAIL_SEND_...`: `mail` is a prefix too, but `SEND_MAX_BACKOFF` is no option of it.
#[test]
fn a_handler_whose_name_prefixes_another_is_not_confused_with_it() {
    let overrides = env(&[("OSA_EVENTS_HANDLER_MAIL_RETRIES", "2")]).unwrap();
    assert_eq!(overrides[0].handler, "mail");
    let overrides = env(&[("OSA_EVENTS_HANDLER_MAIL_SEND_RETRIES", "2")]).unwrap();
    assert_eq!(overrides[0].handler, "mail.send");
}

#[test]
fn an_unknown_handler_is_an_error_naming_the_variable_and_the_known_names() {
    assert_eq!(
        env_error(&[("OSA_EVENTS_HANDLER_INDEX_VECTR_BATCH", "1")]),
        "invalid configuration: `OSA_EVENTS_HANDLER_INDEX_VECTR_BATCH`: no handler's name matches \
         `INDEX_VECTR_BATCH` (expected `OSA_EVENTS_HANDLER_<NAME>_<OPTION>` with <NAME> one of \
         INDEX_VECTOR (`index.vector`), MAIL (`mail`), MAIL_SEND (`mail.send`) and <OPTION> one of \
         BATCH, LINGER, POLL, RETRIES, CLAIM_TIMEOUT, CONCURRENCY, TIMEOUT, BACKOFF, MAX_BACKOFF)"
    );
    assert_eq!(
        env_error(&[("OSA_EVENTS_HANDLER_TOTALS_BATCH", "1")]),
        "invalid configuration: `OSA_EVENTS_HANDLER_TOTALS_BATCH`: `totals` is a projection: only \
         handler options can be overridden (set a projection's in `#[projection]`)"
    );
}

#[test]
fn an_unknown_option_is_an_error_naming_the_handler_and_the_options() {
    assert_eq!(
        env_error(&[("OSA_EVENTS_HANDLER_INDEX_VECTOR_BACH", "1")]),
        "invalid configuration: `OSA_EVENTS_HANDLER_INDEX_VECTOR_BACH`: handler `index.vector` has \
         no option `BACH` that can be set from the environment (expected one of BATCH, LINGER, \
         POLL, RETRIES, CLAIM_TIMEOUT, CONCURRENCY, TIMEOUT, BACKOFF, MAX_BACKOFF)"
    );
    // The longest handler name that fits is the one meant.
    assert_eq!(
        env_error(&[("OSA_EVENTS_HANDLER_MAIL_SEND_ROUTING_KEY", "x")]),
        "invalid configuration: `OSA_EVENTS_HANDLER_MAIL_SEND_ROUTING_KEY`: handler `mail.send` \
         has no option `ROUTING_KEY` that can be set from the environment (expected one of BATCH, \
         LINGER, POLL, RETRIES, CLAIM_TIMEOUT, CONCURRENCY, TIMEOUT, BACKOFF, MAX_BACKOFF)"
    );
}

#[test]
fn bad_values_are_errors_naming_the_variable_and_the_range() {
    assert_eq!(
        env_error(&[("OSA_EVENTS_HANDLER_MAIL_BATCH", "0")]),
        "invalid configuration: `OSA_EVENTS_HANDLER_MAIL_BATCH=0`: `batch` must be in 1..=1000, \
         found 0"
    );
    assert_eq!(
        env_error(&[("OSA_EVENTS_HANDLER_MAIL_BATCH", "many")]),
        "invalid configuration: `OSA_EVENTS_HANDLER_MAIL_BATCH=many`: invalid integer \"many\" for \
         `batch` (expected an integer in 1..=1000)"
    );
    assert_eq!(
        env_error(&[("OSA_EVENTS_HANDLER_MAIL_CLAIM_TIMEOUT", "2days")]),
        "invalid configuration: `OSA_EVENTS_HANDLER_MAIL_CLAIM_TIMEOUT=2days`: `claim_timeout` \
         must be in 1s..=1day, found 2days"
    );
}

#[test]
fn a_variable_that_could_set_two_things_is_an_error() {
    let same_form = from_env(
        [("OSA_EVENTS_HANDLER_A_B_BATCH".to_owned(), "1".to_owned())],
        &["a.b", "a_b"],
        &[],
    )
    .unwrap_err();
    assert_eq!(
        same_form.to_string(),
        "invalid configuration: `OSA_EVENTS_HANDLER_A_B_BATCH`: the variable is ambiguous: it \
         could set `batch` of handler `a.b` or `batch` of handler `a_b`; rename a handler so that \
         their variables differ, or set the option with `RuntimeBuilder::configure`"
    );
    let split = from_env(
        [(
            "OSA_EVENTS_HANDLER_X_CLAIM_TIMEOUT".to_owned(),
            "5s".to_owned(),
        )],
        &["x", "x.claim"],
        &[],
    )
    .unwrap_err();
    assert_eq!(
        split.to_string(),
        "invalid configuration: `OSA_EVENTS_HANDLER_X_CLAIM_TIMEOUT`: the variable is ambiguous: \
         it could set `claim_timeout` of handler `x` or `timeout` of handler `x.claim`; rename a \
         handler so that their variables differ, or set the option with \
         `RuntimeBuilder::configure`"
    );
    // Handlers sharing a form are fine while no variable names them.
    assert!(
        from_env(
            [("OSA_EVENTS_HANDLER_C_BATCH".to_owned(), "1".to_owned())],
            &["a.b", "a_b", "c"],
            &[]
        )
        .is_ok()
    );
}

#[test]
fn configure_calls_are_checked_and_named() {
    let configured = |name: &str, options: HandlerOptions| {
        check_configured(&[(name.to_owned(), options)], HANDLERS, PROJECTIONS)
            .map(|_| ())
            .map_err(|error| error.to_string())
    };
    assert_eq!(configured("mail", HandlerOptions::new().batch(5)), Ok(()));
    assert_eq!(
        configured("mial", HandlerOptions::new().batch(5)),
        Err(
            "invalid configuration: `configure(\"mial\", ..)`: no handler is named `mial` (known \
             handlers: index.vector, mail, mail.send)"
                .to_owned()
        )
    );
    assert_eq!(
        configured("totals", HandlerOptions::new().batch(5)),
        Err(
            "invalid configuration: `configure(\"totals\", ..)`: `totals` is a projection: only \
             handler options can be overridden (set a projection's in `#[projection]`)"
                .to_owned()
        )
    );
    assert_eq!(
        configured("mail", HandlerOptions::new().retries(1000)),
        Err(
            "invalid configuration: `configure(\"mail\", ..)`: `retries` must be in 0..=100, \
             found 1000"
                .to_owned()
        )
    );
    assert_eq!(
        configured("mail", HandlerOptions::new().routing_key("eu")),
        Err(
            "invalid configuration: `configure(\"mail\", ..)`: `routing_key` cannot be \
             overridden: it is part of the handler's subscription (change it with `repoint`, or \
             run the function under another name and key with `handler_instance`)"
                .to_owned()
        )
    );
}

fn layer(source: &str, options: HandlerOptions) -> Override {
    Override {
        source: source.to_owned(),
        handler: "h".to_owned(),
        options,
    }
}

#[test]
fn later_layers_win_and_inconsistent_results_name_every_layer() {
    let spec = HandlerSpec::new("h", "p::h", "e", 1, Shape::Batch).with_batch(10);
    let code = layer(
        "`configure(\"h\", ..)`",
        HandlerOptions::new().batch(20).retries(1),
    );
    let ops = layer(
        "`OSA_EVENTS_HANDLER_H_BATCH=30`",
        HandlerOptions::new().batch(30),
    );
    let effective = apply(spec, &[&code, &ops]).unwrap();
    assert_eq!((effective.batch(), effective.retries()), (30, 1));
    assert_eq!(apply(spec, &[]).unwrap(), spec);

    let linger = layer(
        "`configure(\"h\", ..)`",
        HandlerOptions::new().linger(Duration::from_secs(10)),
    );
    let claim = layer(
        "`OSA_EVENTS_HANDLER_H_CLAIM_TIMEOUT=15s`",
        HandlerOptions::new().claim_timeout(Duration::from_secs(15)),
    );
    assert_eq!(
        apply(spec, &[&linger, &claim]).unwrap_err().to_string(),
        "invalid configuration: handler `h`: `linger` must be at most 5000ms, a third of \
         `claim_timeout` (15000ms), found 10000ms: the deliveries it holds are claimed while it \
         waits (with the overrides of `configure(\"h\", ..)`, \
         `OSA_EVENTS_HANDLER_H_CLAIM_TIMEOUT=15s`)"
    );
    let backoff = layer(
        "`configure(\"h\", ..)`",
        HandlerOptions::new().backoff(Duration::from_secs(3600)),
    );
    // The cap wins, as with an attribute's `backoff = "1h"` and the default `max_backoff`.
    let capped = apply(spec, &[&backoff]).unwrap();
    assert_eq!(capped.backoff(), Duration::from_secs(3600));
    assert!(capped.max_backoff() < capped.backoff());
}

fn file(text: &str) -> Result<Vec<Override>, String> {
    super::parse_file("/etc/app/handlers.json", text, HANDLERS, PROJECTIONS)
        .map_err(|error| error.to_string())
}

#[test]
fn a_file_sets_options_per_handler() {
    let overrides =
        file(r#"{"index.vector": {"batch": 128, "poll": "500ms", "retries": "3"}, "mail": {}}"#)
            .unwrap();
    assert_eq!(overrides.len(), 2);
    assert_eq!(
        overrides[0].source,
        "`/etc/app/handlers.json`: `index.vector`"
    );
    assert_eq!(overrides[0].handler, "index.vector");
    assert_eq!(
        overrides[0].options.settings,
        [
            Setting::Batch(128),
            Setting::Poll(Duration::from_millis(500)),
            Setting::Retries(3)
        ]
    );
    assert!(overrides[1].options.settings.is_empty());
}

#[test]
fn a_bad_file_is_an_error_naming_the_file_and_the_handler() {
    let expected = "expected an object of handler names, each an object of options, e.g. \
                    {\"index.vector\": {\"batch\": 128, \"poll\": \"500ms\"}}";
    assert_eq!(
        file("[1, 2]").unwrap_err(),
        format!(
            "invalid configuration: `/etc/app/handlers.json` (`OSA_EVENTS_HANDLERS_FILE`): {expected}"
        )
    );
    assert_eq!(
        file("{\"mail\": ").unwrap_err(),
        format!(
            "invalid configuration: `/etc/app/handlers.json` (`OSA_EVENTS_HANDLERS_FILE`): not \
             JSON (EOF while parsing a value at line 1 column 9): {expected}"
        )
    );
    assert_eq!(
        file(r#"{"mail": 5}"#).unwrap_err(),
        format!("invalid configuration: `/etc/app/handlers.json`: `mail`: {expected}")
    );
    assert_eq!(
        file(r#"{"mial": {"batch": 5}}"#).unwrap_err(),
        "invalid configuration: `/etc/app/handlers.json`: `mial`: no handler is named `mial` \
         (known handlers: index.vector, mail, mail.send)"
    );
    assert_eq!(
        file(r#"{"mail": {"bach": 5}}"#).unwrap_err(),
        "invalid configuration: `/etc/app/handlers.json`: `mail`: no option `bach` can be set in \
         the file (expected one of batch, linger, poll, retries, claim_timeout, concurrency, \
         timeout, backoff, max_backoff)"
    );
    assert_eq!(
        file(r#"{"mail": {"batch": 0}}"#).unwrap_err(),
        "invalid configuration: `/etc/app/handlers.json`: `mail`: `batch` must be in 1..=1000, \
         found 0"
    );
    assert_eq!(
        file(r#"{"mail": {"batch": 1.5}}"#).unwrap_err(),
        "invalid configuration: `/etc/app/handlers.json`: `mail`: invalid integer \"1.5\" for \
         `batch` (expected an integer in 1..=1000)"
    );
    assert_eq!(
        file(r#"{"mail": {"poll": true}}"#).unwrap_err(),
        "invalid configuration: `/etc/app/handlers.json`: `mail`: `poll` takes a number or a \
         string, found true"
    );
    let missing = super::from_file("/nonexistent/osa-events.json", HANDLERS, PROJECTIONS)
        .unwrap_err()
        .to_string();
    assert!(
        missing.starts_with(
            "invalid configuration: `OSA_EVENTS_HANDLERS_FILE=/nonexistent/osa-events.json`: \
             cannot read the file: "
        ),
        "{missing}"
    );
}
