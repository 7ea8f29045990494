//! Registration by the runtime on the in-memory store: conflicts, re-pointing and namespaces,
//! as `PgStore` does them (`tests/it/reliability/deploy.rs` runs the same scenarios across
//! processes on PostgreSQL).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::prelude::*;
use osa_events::store::{ProjectionStore, Store, Subscription};
use osa_events::{Error, Runtime};
use osa_events_testing::InMemoryStore;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "registration.test.order")]
struct Order {
    n: u32,
}

#[event_handler(name = "registration.orders", routing_key = "green")]
async fn orders(_order: Order) -> Result<(), HandlerError> {
    Ok(())
}

/// The numbers one application's projection applied.
#[derive(Default)]
struct Applied {
    numbers: Mutex<Vec<u32>>,
}

impl Applied {
    fn numbers(&self) -> Vec<u32> {
        self.numbers.lock().unwrap().clone()
    }
}

#[projection(name = "registration.totals", batch = 10, poll = "10ms")]
async fn totals(events: Batch<Order>, applied: State<Applied>) -> Result<(), HandlerError> {
    applied
        .numbers
        .lock()
        .unwrap()
        .extend(events.iter().map(|order| order.n));
    Ok(())
}

fn runtime(store: &InMemoryStore) -> osa_events::RuntimeBuilder {
    Runtime::builder(store.clone())
        .only(["registration.orders"])
        .handle_signals(false)
}

/// What another process registered: `registration.orders` routed `routing_key` at `revision`.
async fn registered_elsewhere(store: &InMemoryStore, routing_key: &str, revision: u32) {
    store
        .register(&[Subscription {
            name: "registration.orders".to_owned(),
            event_type: Order::NAME.to_owned(),
            routing_key: Some(routing_key.to_owned()),
            config: serde_json::json!({}),
            revision,
            start_from: Default::default(),
            ordered: None,
        }])
        .await
        .expect("the other process registers");
}

#[tokio::test]
async fn a_conflicting_registration_fails_start_up_naming_both_sides_and_the_fix() {
    let store = InMemoryStore::new();
    registered_elsewhere(&store, "blue", 1).await;
    let runtime = runtime(&store).build().unwrap();
    let error = runtime.register().await.unwrap_err();
    assert!(
        matches!(&error, Error::SubscriptionConflict(conflict) if conflict.handler == "registration.orders"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "handler `registration.orders` is subscribed to `registration.test.order` with routing key \
         `blue` (revision 1) in the database, but this process subscribes it to \
         `registration.test.order` with routing key `green` (revision 1): to change it on purpose, \
         re-point it with `RuntimeBuilder::repoint(\"registration.orders\", 2)` or deploy the \
         change under a new handler `name`; if another application with a handler of this name \
         shares the database, give each application its own `RuntimeBuilder::namespace`"
    );
    // `run` fails the same way, before running anything.
    let run = tokio::time::timeout(Duration::from_secs(5), runtime.run()).await;
    assert!(
        matches!(run, Ok(Err(Error::SubscriptionConflict(_)))),
        "{run:?}"
    );
    store.publish(&Order { n: 1 }).unwrap();
    let id = store.subscription_id("registration.orders").unwrap();
    assert!(store.deliveries(id).is_empty(), "still routed `blue`");
}

#[tokio::test]
async fn a_repoint_changes_the_subscription_and_an_older_build_cannot_revert_it() {
    let store = InMemoryStore::new();
    registered_elsewhere(&store, "blue", 1).await;
    let before = store.subscription_id("registration.orders").unwrap();
    let ids = runtime(&store)
        .repoint("registration.orders", 2)
        .build()
        .unwrap()
        .register()
        .await
        .unwrap();
    assert_eq!(ids, [before], "re-pointed in place");
    let green = osa_events::Outgoing::new(&Order { n: 1 })
        .unwrap()
        .with_routing_key("green");
    store.publish_batch(&[green]);
    assert_eq!(store.deliveries(before).len(), 1, "now routed `green`");

    // The old build restarts: refused, with the newer revision named.
    let old = Subscription {
        name: "registration.orders".to_owned(),
        event_type: Order::NAME.to_owned(),
        routing_key: Some("blue".to_owned()),
        config: serde_json::json!({}),
        revision: 1,
        start_from: Default::default(),
        ordered: None,
    };
    let error = store.register(&[old]).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("a newer deployment re-pointed it at revision 2"),
        "{error}"
    );
    // The new build restarts: accepted, nothing changes.
    assert_eq!(
        runtime(&store)
            .repoint("registration.orders", 2)
            .build()
            .unwrap()
            .register()
            .await
            .unwrap(),
        [before]
    );
}

#[tokio::test]
async fn two_namespaces_get_two_subscriptions_each_receiving_every_event() {
    let store = InMemoryStore::new();
    let billing = runtime(&store).namespace("billing").build().unwrap();
    let shipping = runtime(&store).namespace("shipping").build().unwrap();
    let default = runtime(&store).build().unwrap();
    let billing_id = billing.register().await.unwrap()[0];
    let shipping_id = shipping.register().await.unwrap()[0];
    let default_id = default.register().await.unwrap()[0];
    assert_eq!(
        store.subscription_id("billing@registration.orders"),
        Some(billing_id)
    );
    assert_eq!(
        store.subscription_id("shipping@registration.orders"),
        Some(shipping_id)
    );
    assert_eq!(
        store.subscription_id("registration.orders"),
        Some(default_id)
    );
    let green = osa_events::Outgoing::new(&Order { n: 1 })
        .unwrap()
        .with_routing_key("green");
    store.publish_batch(&[green]);
    for id in [billing_id, shipping_id, default_id] {
        assert_eq!(store.deliveries(id).len(), 1, "{id:?} got its own delivery");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_namespaces_run_the_same_projection_with_their_own_checkpoints() {
    let store = InMemoryStore::new();
    let mut apps = Vec::new();
    for namespace in ["billing", "shipping"] {
        let applied = Arc::new(Applied::default());
        let runtime = Runtime::builder(store.clone())
            .resources(Resources::new().with_arc(Arc::clone(&applied)))
            .only(["registration.totals"])
            .namespace(namespace)
            .handle_signals(false)
            .build()
            .unwrap();
        let shutdown = runtime.shutdown_token();
        apps.push((namespace, applied, shutdown, tokio::spawn(runtime.run())));
    }
    for n in 0..20 {
        store.publish(&Order { n }).unwrap();
    }
    let started = tokio::time::Instant::now();
    while apps
        .iter()
        .any(|(_, applied, _, _)| applied.numbers().len() < 20)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "both applications apply every event within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (namespace, applied, _, _) in &apps {
        assert_eq!(applied.numbers(), (0..20).collect::<Vec<_>>());
        let status = store
            .status(&format!("{namespace}@registration.totals"), &[Order::NAME])
            .await
            .unwrap();
        assert_eq!(
            status.lag, 0,
            "{namespace} has its own checkpoint, at the end"
        );
    }
    for (_, _, shutdown, task) in apps {
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn invalid_namespaces_and_repoints_fail_the_build() {
    let store = InMemoryStore::new();
    for namespace in ["", "a@b", "bill/ing", &"x".repeat(65)] {
        let error = runtime(&store).namespace(namespace).build().unwrap_err();
        assert!(
            matches!(&error, Error::Config(message) if message.contains("invalid namespace")),
            "{namespace:?}: {error:?}"
        );
    }
    let error = runtime(&store)
        .repoint("registration.nope", 2)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("no handler named"), "{error}");
    let error = runtime(&store)
        .repoint("registration.orders", 0)
        .build()
        .unwrap_err();
    assert!(
        error.to_string().contains("a revision is in 1.."),
        "{error}"
    );
}
