//! Run-time overrides of handler options on PostgreSQL: `RuntimeBuilder::configure` and the
//! `OSA_EVENTS_HANDLER_*` environment, their precedence, what reaches the stored subscription and
//! `status`, and every kind of bad override as a start-up error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::operations::Operations;
use osa_events::prelude::*;
use osa_events::{Error, Outgoing, Runtime, RuntimeBuilder};
use serde::{Deserialize, Serialize};

use crate::support::{Db, eventually};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.overrides.item")]
struct Item {
    n: u32,
}

#[derive(Default)]
struct Sizes(Mutex<Vec<usize>>);

#[event_handler(
    name = "overrides.tuned",
    batch = 7,
    retries = 2,
    poll = "20ms",
    timeout = "30s"
)]
async fn tuned(items: Batch<Item>, sizes: State<Sizes>) -> Result<(), HandlerError> {
    sizes.0.lock().unwrap().push(items.len());
    Ok(())
}

/// Two handlers whose names are one environment form, `OVERRIDES_A_B`.
#[event_handler(name = "overrides.a.b")]
async fn dotted(_item: Item) -> Result<(), HandlerError> {
    Ok(())
}

#[event_handler(name = "overrides.a_b")]
async fn underscored(_item: Item) -> Result<(), HandlerError> {
    Ok(())
}

fn builder(db: &Db) -> RuntimeBuilder {
    Runtime::builder(db.store.clone())
        .only(["overrides.tuned"])
        .resources(Resources::new().with(Sizes::default()))
        .handle_signals(false)
        // Whatever the shell running the tests has set; `environment(..)` below replaces it.
        .read_environment(false)
}

/// The attribute says batch 7 and retries 2; `configure` says batch 20 and retries 3; the
/// environment says batch 3 and concurrency 2. The environment wins over `configure`, which wins
/// over the attribute, option by option; the stored config snapshot and `status` show the result,
/// and the claim loops run with it (no call gets more than 3 events).
#[tokio::test]
async fn environment_wins_over_configure_which_wins_over_the_attribute() {
    let db = Db::new().await;
    let sizes = Arc::new(Sizes::default());
    let running = db
        .start_with(
            &["overrides.tuned"],
            Resources::new().with_arc(sizes.clone()),
            |builder| {
                builder
                    .configure("overrides.tuned", |o| o.batch(20).retries(3))
                    .environment([
                        ("OSA_EVENTS_HANDLER_OVERRIDES_TUNED_BATCH", "3"),
                        ("OSA_EVENTS_HANDLER_OVERRIDES_TUNED_CONCURRENCY", "2"),
                        ("OSA_EVENTS_HANDLER_OVERRIDES_TUNED_BACKOFF", "1m 30s"),
                        ("UNRELATED_VARIABLE", "ignored"),
                    ])
            },
        )
        .await;
    let items: Vec<Outgoing> = (0..10)
        .map(|n| Outgoing::new(&Item { n }).unwrap())
        .collect();
    osa_events::publish_batch(db.pool(), &items).await.unwrap();
    eventually(Duration::from_secs(20), "every item handled", || async {
        sizes.0.lock().unwrap().iter().sum::<usize>() == 10
    })
    .await;
    running.stop().await;
    let sizes = sizes.0.lock().unwrap().clone();
    assert!(
        sizes.iter().all(|size| *size <= 3),
        "the environment's batch of 3, not configure's 20 or the attribute's 7: {sizes:?}"
    );

    let status = db.store.status().await.unwrap();
    let handler = status
        .handlers
        .iter()
        .find(|handler| handler.name == "overrides.tuned")
        .expect("the handler's status");
    let options = &handler.config;
    assert_eq!(options["batch"], 3, "environment over configure: {options}");
    assert_eq!(options["concurrency"], 2, "environment over the attribute");
    assert_eq!(options["backoff"], "90000ms", "a humantime duration");
    assert_eq!(options["retries"], 3, "configure over the attribute");
    assert_eq!(
        options["poll"], "20ms",
        "the attribute where nothing overrides"
    );
    assert_eq!(options["timeout"], "30000ms");
    let stored: serde_json::Value = sqlx::query_scalar(
        "select config from osa_events.subscriptions where name = 'overrides.tuned'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(&stored, options, "status shows the stored snapshot");
}

/// The runtime's specs are the effective ones too (what the health board and the claim loops get).
#[tokio::test]
async fn the_runtimes_specs_are_the_overridden_ones() {
    let db = Db::new().await;
    let runtime = builder(&db)
        .configure("overrides.tuned", |o| o.poll(Duration::from_millis(250)))
        .configure("overrides.tuned", |o| {
            o.claim_timeout(Duration::from_secs(90))
        })
        .environment([("OSA_EVENTS_HANDLER_OVERRIDES_TUNED_RETRIES", "0")])
        .build()
        .unwrap();
    let spec = runtime.handlers().next().unwrap();
    assert_eq!(spec.poll(), Duration::from_millis(250));
    assert_eq!(
        spec.claim_timeout(),
        Duration::from_secs(90),
        "a second configure call adds to the first"
    );
    assert_eq!(spec.retries(), 0);
    assert_eq!(spec.batch(), 7, "not overridden");
}

/// `read_environment(false)` ignores the variables, even a bad one.
#[tokio::test]
async fn the_environment_can_be_ignored() {
    let db = Db::new().await;
    let runtime = builder(&db)
        .environment([("OSA_EVENTS_HANDLER_OVERRIDES_TUNED_BATCH", "0")])
        .read_environment(false)
        .build()
        .unwrap();
    assert_eq!(runtime.handlers().next().unwrap().batch(), 7);
}

/// A handler this runtime does not run may be configured (one configuration for every node), and
/// its values are checked all the same.
#[tokio::test]
async fn a_handler_not_run_here_may_be_configured_but_not_with_bad_values() {
    let db = Db::new().await;
    builder(&db)
        .configure("overrides.a.b", |o| o.batch(5))
        .build()
        .unwrap();
    assert_eq!(
        build_error(builder(&db).configure("overrides.a.b", |o| o.batch(5000))),
        "invalid configuration: `configure(\"overrides.a.b\", ..)`: `batch` must be in 1..=1000, \
         found 5000"
    );
}

fn build_error(builder: RuntimeBuilder) -> String {
    let error = builder.build().unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    error.to_string()
}

fn env_error(db: &Db, var: &str, value: &str) -> String {
    build_error(builder(db).environment([(var, value)]))
}

/// Each kind of bad override fails the build with a message naming the call or the variable, and
/// what is allowed.
#[tokio::test]
async fn bad_overrides_fail_the_build_naming_the_source_and_the_range() {
    let db = Db::new().await;
    // A value out of range, from `configure` and from the environment.
    assert_eq!(
        build_error(builder(&db).configure("overrides.tuned", |o| o.concurrency(0))),
        "invalid configuration: `configure(\"overrides.tuned\", ..)`: `concurrency` must be in \
         1..=256, found 0"
    );
    assert_eq!(
        env_error(&db, "OSA_EVENTS_HANDLER_OVERRIDES_TUNED_BATCH", "1001"),
        "invalid configuration: `OSA_EVENTS_HANDLER_OVERRIDES_TUNED_BATCH=1001`: `batch` must be \
         in 1..=1000, found 1001"
    );
    assert_eq!(
        env_error(
            &db,
            "OSA_EVENTS_HANDLER_OVERRIDES_TUNED_CLAIM_TIMEOUT",
            "25h"
        ),
        "invalid configuration: `OSA_EVENTS_HANDLER_OVERRIDES_TUNED_CLAIM_TIMEOUT=25h`: \
         `claim_timeout` must be in 1s..=1day, found 1day 1h"
    );
    assert_eq!(
        env_error(&db, "OSA_EVENTS_HANDLER_OVERRIDES_TUNED_POLL", "0ms"),
        "invalid configuration: `OSA_EVENTS_HANDLER_OVERRIDES_TUNED_POLL=0ms`: `poll` must be at \
         least 1ms, found 0s"
    );
    // Values that do not parse.
    assert_eq!(
        env_error(&db, "OSA_EVENTS_HANDLER_OVERRIDES_TUNED_RETRIES", "three"),
        "invalid configuration: `OSA_EVENTS_HANDLER_OVERRIDES_TUNED_RETRIES=three`: invalid \
         integer \"three\" for `retries` (expected an integer in 0..=100)"
    );
    assert_eq!(
        env_error(&db, "OSA_EVENTS_HANDLER_OVERRIDES_TUNED_TIMEOUT", "30"),
        "invalid configuration: `OSA_EVENTS_HANDLER_OVERRIDES_TUNED_TIMEOUT=30`: invalid duration \
         \"30\" for `timeout`: time unit needed, for example 30sec or 30ms (expected a duration of \
         at least 1ms, e.g. \"500ms\", \"30s\", \"2m\")"
    );
    // An unknown option of a known handler, and one that is no operational knob.
    let unknown_option = |option: &str| {
        env_error(
            &db,
            &format!("OSA_EVENTS_HANDLER_OVERRIDES_TUNED_{option}"),
            "1",
        )
    };
    assert_eq!(
        unknown_option("BACH"),
        "invalid configuration: `OSA_EVENTS_HANDLER_OVERRIDES_TUNED_BACH`: handler \
         `overrides.tuned` has no option `BACH` that can be set from the environment (expected \
         one of BATCH, LINGER, POLL, RETRIES, CLAIM_TIMEOUT, CONCURRENCY, TIMEOUT, BACKOFF, \
         MAX_BACKOFF)"
    );
    assert!(
        unknown_option("ROUTING_KEY").contains("has no option `ROUTING_KEY`"),
        "the routing key is not an operational knob"
    );
    // Unknown handler names. The lists of known names hold every handler of this test binary.
    let unknown = build_error(builder(&db).configure("overrides.tuend", |o| o.batch(1)));
    assert!(
        unknown.starts_with(
            "invalid configuration: `configure(\"overrides.tuend\", ..)`: no handler is named \
             `overrides.tuend` (known handlers: "
        ),
        "{unknown}"
    );
    assert!(unknown.contains("overrides.tuned"), "{unknown}");
    let unknown = env_error(&db, "OSA_EVENTS_HANDLER_OVERRIDES_TUEND_BATCH", "1");
    assert!(
        unknown.starts_with(
            "invalid configuration: `OSA_EVENTS_HANDLER_OVERRIDES_TUEND_BATCH`: no handler's name \
             matches `OVERRIDES_TUEND_BATCH` (expected `OSA_EVENTS_HANDLER_<NAME>_<OPTION>` with \
             <NAME> one of "
        ),
        "{unknown}"
    );
    assert!(
        unknown.contains("OVERRIDES_TUNED (`overrides.tuned`)"),
        "{unknown}"
    );
    // A routing key through `configure`.
    assert_eq!(
        build_error(builder(&db).configure("overrides.tuned", |o| o.routing_key("eu"))),
        "invalid configuration: `configure(\"overrides.tuned\", ..)`: `routing_key` cannot be \
         overridden: it is part of the handler's subscription (change it with `repoint`, or run \
         the function under another name and key with `handler_instance`)"
    );
    // Two handler names, one variable.
    assert_eq!(
        env_error(&db, "OSA_EVENTS_HANDLER_OVERRIDES_A_B_BATCH", "5"),
        "invalid configuration: `OSA_EVENTS_HANDLER_OVERRIDES_A_B_BATCH`: the variable is \
         ambiguous: it could set `batch` of handler `overrides.a.b` or `batch` of handler \
         `overrides.a_b`; rename a handler so that their variables differ, or set the option with \
         `RuntimeBuilder::configure`"
    );
    // Values valid alone, inconsistent together: every override involved is named.
    assert_eq!(
        build_error(
            builder(&db)
                .configure("overrides.tuned", |o| o.linger(Duration::from_secs(15)))
                .environment([("OSA_EVENTS_HANDLER_OVERRIDES_TUNED_CLAIM_TIMEOUT", "30s")])
        ),
        "invalid configuration: handler `overrides.tuned`: `linger` must be at most 10000ms, a \
         third of `claim_timeout` (30000ms), found 15000ms: the deliveries it holds are claimed \
         while it waits (with the overrides of `configure(\"overrides.tuned\", ..)`, \
         `OSA_EVENTS_HANDLER_OVERRIDES_TUNED_CLAIM_TIMEOUT=30s`)"
    );
    // A cap below `backoff` is no error at run time: the cap wins, as it always has for an
    // attribute's `backoff` above the default `max_backoff`.
    let capped = builder(&db)
        .configure("overrides.tuned", |o| {
            o.max_backoff(Duration::from_millis(500))
        })
        .build()
        .expect("a cap below the backoff builds");
    let spec = capped.handlers().next().expect("the tuned handler");
    assert_eq!(spec.max_backoff(), Duration::from_millis(500));
}

/// A file named by `OSA_EVENTS_HANDLERS_FILE` sits between `configure` and the variables: it wins
/// over the code, and a variable wins over it.
#[tokio::test]
async fn a_file_of_overrides_sits_between_configure_and_the_variables() {
    let db = Db::new().await;
    let path = std::env::temp_dir().join(format!(
        "osa-events-overrides-{}.json",
        uuid::Uuid::new_v4()
    ));
    std::fs::write(
        &path,
        r#"{"overrides.tuned": {"batch": 50, "retries": 9, "poll": "75ms"}}"#,
    )
    .unwrap();
    let path_text = path.to_str().unwrap().to_owned();
    let runtime = builder(&db)
        .configure("overrides.tuned", |o| o.batch(20).concurrency(2))
        .environment([
            ("OSA_EVENTS_HANDLERS_FILE", path_text.as_str()),
            ("OSA_EVENTS_HANDLER_OVERRIDES_TUNED_RETRIES", "1"),
        ])
        .build();
    let bad = {
        std::fs::write(&path, r#"{"overrides.tuned": {"batch": 5000}}"#).unwrap();
        build_error(builder(&db).environment([("OSA_EVENTS_HANDLERS_FILE", path_text.as_str())]))
    };
    std::fs::remove_file(&path).unwrap();
    let runtime = runtime.unwrap();
    let spec = runtime.handlers().next().unwrap();
    assert_eq!(spec.batch(), 50, "the file over configure");
    assert_eq!(spec.retries(), 1, "the variable over the file");
    assert_eq!(
        spec.poll(),
        Duration::from_millis(75),
        "the file over the attribute"
    );
    assert_eq!(spec.concurrency(), 2, "configure where the file is silent");
    assert_eq!(
        bad,
        format!(
            "invalid configuration: `{path_text}`: `overrides.tuned`: `batch` must be in \
             1..=1000, found 5000"
        )
    );
}
