//! Run-time overrides of handler options and handler instances on the in-memory store: the same
//! rules as on PostgreSQL (`tests/it/overrides.rs` and `tests/it/instances.rs` of the suite), and
//! the harness's `configure` and `handler_instance`.

use std::sync::Mutex;
use std::time::Duration;

use osa_events::operations::Operations;
use osa_events::prelude::*;
use osa_events::{Error, Runtime, RuntimeBuilder};
use osa_events_testing::{Harness, InMemoryStore};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "overrides.test.job")]
struct Job {
    n: u32,
}

#[event_handler(name = "memory.failing", retries = 5, backoff = "1s")]
async fn failing(_job: Job) -> Result<(), HandlerError> {
    Err(HandlerError::retry("the backend is down"))
}

/// (routing key, job) of every call of an instance.
#[derive(Default)]
struct Calls(Mutex<Vec<(String, u32)>>);

#[event_handler(name = "memory.send", register = false, batch = 4)]
async fn send_to(job: Job, ctx: Ctx, calls: State<Calls>) -> Result<(), HandlerError> {
    let key = ctx.routing_key().unwrap_or("-").to_owned();
    calls.0.lock().unwrap().push((key, job.n));
    Ok(())
}

fn builder(store: &InMemoryStore) -> RuntimeBuilder {
    Runtime::builder(store.clone())
        .only(["memory.failing"])
        .handle_signals(false)
        .read_environment(false)
}

fn build_error(builder: RuntimeBuilder) -> String {
    let error = builder.build().unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    error.to_string()
}

#[tokio::test]
async fn the_environment_wins_over_configure_and_the_snapshot_shows_it() {
    let store = InMemoryStore::new();
    let runtime = builder(&store)
        .configure("memory.failing", |o| o.retries(2).batch(9))
        .environment([
            ("OSA_EVENTS_HANDLER_MEMORY_FAILING_RETRIES", "1"),
            ("OSA_EVENTS_HANDLER_MEMORY_FAILING_POLL", "250ms"),
        ])
        .build()
        .unwrap();
    runtime.register().await.unwrap();
    let status = store.status().await.unwrap();
    let options = &status.handlers[0].config;
    assert_eq!(status.handlers[0].name, "memory.failing");
    assert_eq!(
        options["retries"], 1,
        "the environment over configure: {options}"
    );
    assert_eq!(options["batch"], 9, "configure over the attribute");
    assert_eq!(options["poll"], "250ms");
    assert_eq!(options["backoff"], "1000ms", "the attribute");
}

#[tokio::test]
async fn bad_overrides_fail_the_build_on_the_in_memory_store_too() {
    let store = InMemoryStore::new();
    let env = |var: &str, value: &str| build_error(builder(&store).environment([(var, value)]));
    assert_eq!(
        env("OSA_EVENTS_HANDLER_MEMORY_FAILING_RETRIES", "101"),
        "invalid configuration: `OSA_EVENTS_HANDLER_MEMORY_FAILING_RETRIES=101`: `retries` must \
         be in 0..=100, found 101"
    );
    assert_eq!(
        env("OSA_EVENTS_HANDLER_MEMORY_FAILING_BACKOFF", "soon"),
        "invalid configuration: `OSA_EVENTS_HANDLER_MEMORY_FAILING_BACKOFF=soon`: invalid \
         duration \"soon\" for `backoff`: expected number at 0 (expected a duration of at least \
         1ms, e.g. \"500ms\", \"30s\", \"2m\")"
    );
    assert_eq!(
        env("OSA_EVENTS_HANDLER_MEMORY_FAILING_RETRYS", "1"),
        "invalid configuration: `OSA_EVENTS_HANDLER_MEMORY_FAILING_RETRYS`: handler \
         `memory.failing` has no option `RETRYS` that can be set from the environment (expected \
         one of BATCH, LINGER, POLL, RETRIES, CLAIM_TIMEOUT, CONCURRENCY, TIMEOUT, BACKOFF, \
         MAX_BACKOFF)"
    );
    assert!(
        env("OSA_EVENTS_HANDLER_MEMORY_FAILNG_RETRIES", "1").starts_with(
            "invalid configuration: `OSA_EVENTS_HANDLER_MEMORY_FAILNG_RETRIES`: no handler's name \
             matches `MEMORY_FAILNG_RETRIES`"
        )
    );
    assert!(
        build_error(builder(&store).configure("memory.failng", |o| o.batch(1))).starts_with(
            "invalid configuration: `configure(\"memory.failng\", ..)`: no handler is named \
             `memory.failng` (known handlers: "
        )
    );
    assert_eq!(
        build_error(
            builder(&store).configure("memory.failing", |o| o.claim_timeout(Duration::ZERO))
        ),
        "invalid configuration: `configure(\"memory.failing\", ..)`: `claim_timeout` must be in \
         1s..=1day, found 0s"
    );
}

/// The overrides change what the claim loops do: with `retries` 1 instead of the attribute's 5,
/// a delivery is dead after two attempts.
#[tokio::test]
async fn a_harness_runs_with_the_configured_options() {
    let mut harness = Harness::builder()
        .only(["memory.failing"])
        .configure("memory.failing", |o| o.retries(1))
        .build()
        .await
        .unwrap();
    harness.publish(&Job { n: 1 });
    harness.drain().await;
    assert_eq!(harness.attempts("memory.failing").len(), 2);
    harness.assert_dead_lettered("memory.failing", 1);
}

#[tokio::test]
async fn instances_of_a_template_receive_their_own_routing_keys() {
    let mut harness = Harness::builder()
        .resources(Resources::new().with(Calls::default()))
        .handler_instance::<SendToHandler>("memory.send.mail", |o| o.routing_key("mail"))
        .handler_instance::<SendToHandler>("memory.send.sms", |o| o.routing_key("sms").batch(1))
        .only(["memory.send.mail", "memory.send.sms"])
        .build()
        .await
        .unwrap();
    for (key, n) in [("mail", 1), ("sms", 2), ("pager", 3), ("mail", 4)] {
        harness.publish_routed(key, &Job { n });
    }
    harness.drain().await;
    assert_eq!(
        harness.handled_events::<Job>("memory.send.mail"),
        [Job { n: 1 }, Job { n: 4 }]
    );
    assert_eq!(
        harness.handled_events::<Job>("memory.send.sms"),
        [Job { n: 2 }]
    );
    harness.assert_idle();
    let status = harness.store().status().await.unwrap();
    let names: Vec<(&str, Option<&str>, &serde_json::Value)> = status
        .handlers
        .iter()
        .map(|h| {
            (
                h.name.as_str(),
                h.routing_key.as_deref(),
                &h.config["batch"],
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("memory.send.mail", Some("mail"), &serde_json::json!(4)),
            ("memory.send.sms", Some("sms"), &serde_json::json!(1)),
        ],
        "the template's batch, and the instance's own"
    );
}

#[tokio::test]
async fn an_instance_is_checked_at_start_up_like_any_handler() {
    let store = InMemoryStore::new();
    let instance = |name: &str| {
        Runtime::builder(store.clone())
            .handle_signals(false)
            .read_environment(false)
            .handler_instance::<SendToHandler>(name, |o| o.routing_key("mail"))
            .only([name])
    };
    let missing = instance("memory.send.mail").build().unwrap_err();
    assert!(
        matches!(&missing, Error::MissingResource { handler, .. } if handler == "memory.send.mail"),
        "{missing:?}"
    );
    let duplicate = instance("memory.failing")
        .resources(Resources::new().with(Calls::default()))
        .build()
        .unwrap_err();
    assert!(
        matches!(&duplicate, Error::DuplicateHandlerName { name, second, .. }
            if name == "memory.failing" && second.ends_with("::send_to (handler_instance)")),
        "{duplicate:?}"
    );
    // Names are unique across handlers, instances and projections (`registration.totals` is a
    // projection of the `registration` tests).
    let projection = instance("registration.totals").build().unwrap_err();
    assert!(
        matches!(&projection, Error::DuplicateHandlerName { name, .. } if name == "registration.totals"),
        "{projection:?}"
    );
    assert_eq!(
        build_error(instance("")),
        "invalid configuration: `handler_instance(\"\", ..)`: `name` must not be empty"
    );
    let unregistered = Runtime::builder(store.clone())
        .only(["memory.send"])
        .build()
        .unwrap_err();
    assert!(
        matches!(&unregistered, Error::UnknownHandler { name, .. } if name == "memory.send"),
        "a template with `register = false` is not a handler: {unregistered:?}"
    );
}

/// `OSA_EVENTS_HANDLERS_FILE` names a JSON file of overrides; a file that cannot be read is a
/// start-up error naming the variable.
#[tokio::test]
async fn a_file_of_overrides_is_read_at_build() {
    let store = InMemoryStore::new();
    let path = std::env::temp_dir().join(format!(
        "osa-events-memory-overrides-{}.json",
        std::process::id()
    ));
    std::fs::write(
        &path,
        r#"{"memory.failing": {"retries": 0, "backoff": "2s"}}"#,
    )
    .unwrap();
    let path_text = path.to_str().unwrap().to_owned();
    let runtime = builder(&store)
        .environment([("OSA_EVENTS_HANDLERS_FILE", path_text.as_str())])
        .build();
    std::fs::remove_file(&path).unwrap();
    let spec = *runtime.unwrap().handlers().next().unwrap();
    assert_eq!(spec.retries(), 0);
    assert_eq!(spec.backoff(), Duration::from_secs(2));
    let missing = build_error(
        builder(&store).environment([("OSA_EVENTS_HANDLERS_FILE", path_text.as_str())]),
    );
    assert!(
        missing.starts_with(&format!(
            "invalid configuration: `OSA_EVENTS_HANDLERS_FILE={path_text}`: cannot read the file: "
        )),
        "{missing}"
    );
}
