//! Handler instances on PostgreSQL: one function registered several times under other names and
//! routing keys (`RuntimeBuilder::handler_instance`), a template that runs only as its instances
//! (`register = false`), and the start-up checks an instance shares with every handler.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::operations::Operations;
use osa_events::prelude::*;
use osa_events::{Error, HandlerOptions, Runtime, RuntimeBuilder};
use serde::{Deserialize, Serialize};

use crate::support::{Db, eventually};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.instances.record")]
struct Record {
    n: u32,
}

/// What the backups stored: (routing key, record).
#[derive(Default)]
struct Stored(Mutex<Vec<(String, u32)>>);

impl Stored {
    fn sorted(&self) -> Vec<(String, u32)> {
        let mut stored = self.0.lock().unwrap().clone();
        stored.sort();
        stored
    }
}

/// The template: never registered under its own name.
#[event_handler(
    name = "instances.backup",
    register = false,
    poll = "20ms",
    retries = 4
)]
async fn backup_to(record: Record, ctx: Ctx, stored: State<Stored>) -> Result<(), HandlerError> {
    let backend = ctx.routing_key().unwrap_or("none").to_owned();
    stored.0.lock().unwrap().push((backend, record.n));
    Ok(())
}

/// A registered handler that also serves as a template.
#[event_handler(name = "instances.mirror", poll = "20ms")]
async fn mirror(_record: Record) -> Result<(), HandlerError> {
    Ok(())
}

const BACKENDS: [&str; 2] = ["s3", "gcs"];

/// One instance per configured backend, as an application builds them from its configuration.
fn with_backups(mut builder: RuntimeBuilder) -> RuntimeBuilder {
    for backend in BACKENDS {
        builder = builder.handler_instance::<BackupToHandler>(
            format!("instances.backup.{backend}"),
            move |o| {
                let o = o.routing_key(backend);
                if backend == "s3" { o.batch(5) } else { o }
            },
        );
    }
    builder
}

#[tokio::test]
async fn each_instance_receives_its_routing_key_under_its_own_subscription() {
    let db = Db::new().await;
    let stored = Arc::new(Stored::default());
    let running = db
        .start_with(
            &["instances.backup.s3", "instances.backup.gcs"],
            Resources::new().with_arc(stored.clone()),
            with_backups,
        )
        .await;
    for (key, n) in [("s3", 1), ("gcs", 2), ("azure", 3), ("s3", 4)] {
        osa_events::publish_routed(db.pool(), key, &Record { n })
            .await
            .unwrap();
    }
    osa_events::publish(db.pool(), &Record { n: 5 })
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "three records stored", || async {
        stored.0.lock().unwrap().len() == 3
    })
    .await;
    running.stop().await;
    assert_eq!(
        stored.sorted(),
        [
            ("gcs".to_owned(), 2),
            ("s3".to_owned(), 1),
            ("s3".to_owned(), 4)
        ]
    );
    assert_eq!(db.deliveries(None).await, 0, "no other key got a delivery");

    let subscriptions: Vec<(String, Option<String>)> =
        sqlx::query_as("select name, routing_key from osa_events.subscriptions order by name")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(
        subscriptions,
        [
            ("instances.backup.gcs".to_owned(), Some("gcs".to_owned())),
            ("instances.backup.s3".to_owned(), Some("s3".to_owned())),
        ],
        "no subscription for the template itself"
    );
    let status = db.store.status().await.unwrap();
    let options = |name: &str| {
        status
            .handlers
            .iter()
            .find(|handler| handler.name == name)
            .unwrap_or_else(|| panic!("status of {name}"))
            .config
            .clone()
    };
    assert_eq!(
        options("instances.backup.s3")["batch"],
        5,
        "the instance's option"
    );
    assert_eq!(options("instances.backup.gcs")["batch"], 32, "the default");
    assert_eq!(
        options("instances.backup.gcs")["retries"],
        4,
        "the template's option"
    );
    assert_eq!(options("instances.backup.gcs")["routing_key"], "gcs");
    assert!(
        options("instances.backup.s3")["handler"]
            .as_str()
            .unwrap()
            .ends_with("::backup_to"),
        "the function that runs"
    );
}

fn builder(db: &Db) -> RuntimeBuilder {
    Runtime::builder(db.store.clone())
        .resources(Resources::new().with(Stored::default()))
        .handle_signals(false)
        .read_environment(false)
}

fn build_error(builder: RuntimeBuilder) -> String {
    builder.build().unwrap_err().to_string()
}

/// `configure` and the environment override an instance under its own name, over its own options.
#[tokio::test]
async fn an_instance_is_overridden_under_its_name() {
    let db = Db::new().await;
    let runtime = with_backups(builder(&db))
        .only(["instances.backup.s3", "instances.backup.gcs"])
        .configure("instances.backup.s3", |o| o.batch(6).retries(1))
        .environment([("OSA_EVENTS_HANDLER_INSTANCES_BACKUP_S3_BATCH", "8")])
        .build()
        .unwrap();
    let specs: Vec<(&str, Option<&str>, u32, u32)> = runtime
        .handlers()
        .map(|spec| {
            (
                spec.name(),
                spec.routing_key(),
                spec.batch(),
                spec.retries(),
            )
        })
        .collect();
    assert_eq!(
        specs,
        [
            ("instances.backup.gcs", Some("gcs"), 32, 4),
            ("instances.backup.s3", Some("s3"), 8, 1),
        ]
    );
}

/// A registered handler runs under its own name and as its instances; `only` and `exclude`
/// select instances by name; the unregistered template has no name to select.
#[tokio::test]
async fn instances_are_selected_by_name_like_handlers() {
    let db = Db::new().await;
    let names = |builder: RuntimeBuilder| -> Vec<String> {
        builder
            .build()
            .unwrap()
            .handlers()
            .map(|spec| spec.name().to_owned())
            .collect()
    };
    assert_eq!(
        names(
            builder(&db)
                .handler_instance::<MirrorHandler>("instances.mirror.eu", |o| o.routing_key("eu"))
                .only(["instances.mirror", "instances.mirror.eu"])
        ),
        ["instances.mirror", "instances.mirror.eu"]
    );
    assert_eq!(
        names(
            with_backups(builder(&db))
                .only(["instances.backup.s3", "instances.backup.gcs"])
                .exclude(["instances.backup.gcs"])
        ),
        ["instances.backup.s3"]
    );
    let unknown = builder(&db).only(["instances.backup"]).build().unwrap_err();
    assert!(
        matches!(&unknown, Error::UnknownHandler { name, .. } if name == "instances.backup"),
        "{unknown:?}"
    );
}

/// The start-up checks of every handler, for an instance, with its name in the message.
#[tokio::test]
async fn an_instance_gets_every_start_up_check() {
    let db = Db::new().await;
    let backup = |name: &str, options: fn(HandlerOptions) -> HandlerOptions| {
        builder(&db)
            .handler_instance::<BackupToHandler>(name, options)
            .only([name])
    };
    // A name another handler has: the registered one, or another instance.
    let duplicate = build_error(
        builder(&db)
            .handler_instance::<BackupToHandler>("instances.mirror", |o| o)
            .only(["instances.mirror"]),
    );
    assert!(
        duplicate.starts_with("two handlers are named `instances.mirror` (`"),
        "{duplicate}"
    );
    assert!(
        duplicate.contains("::backup_to (handler_instance)`"),
        "the instance is told apart from the function: {duplicate}"
    );
    let twice = build_error(
        builder(&db)
            .handler_instance::<BackupToHandler>("instances.twice", |o| o)
            .handler_instance::<MirrorHandler>("instances.twice", |o| o)
            .only(["instances.twice"]),
    );
    assert!(
        twice.starts_with("two handlers are named `instances.twice`"),
        "{twice}"
    );
    // A missing resource, reported under the instance's name.
    let missing = Runtime::builder(db.store.clone())
        .handler_instance::<BackupToHandler>("instances.backup.s3", |o| o.routing_key("s3"))
        .only(["instances.backup.s3"])
        .read_environment(false)
        .build()
        .unwrap_err();
    assert!(
        matches!(&missing, Error::MissingResource { handler, .. } if handler == "instances.backup.s3"),
        "{missing:?}"
    );
    let stored = std::any::type_name::<Stored>();
    assert_eq!(
        missing.to_string(),
        format!(
            "handler `instances.backup.s3` needs `State<{stored}>`, but `Resources` has no \
             `{stored}`: add it with `Resources::new().with(..)`"
        )
    );
    // Names and routing keys follow the attribute's rule; options their ranges.
    assert_eq!(
        build_error(backup("instances backup", |o| o)),
        "invalid configuration: `handler_instance(\"instances backup\", ..)`: `name` may contain \
         only ASCII letters, digits and `. _ - : /`, found ' '"
    );
    assert_eq!(
        build_error(backup("instances.empty", |o| o.routing_key(""))),
        "invalid configuration: `handler_instance(\"instances.empty\", ..)`: `routing_key` must \
         not be empty"
    );
    assert_eq!(
        build_error(backup("instances.big", |o| o.batch(0))),
        "invalid configuration: `handler_instance(\"instances.big\", ..)`: `batch` must be in \
         1..=1000, found 0"
    );
    // Options valid alone, not together with the template's: the message names the instance.
    assert_eq!(
        build_error(backup("instances.linger", |o| o.linger(Duration::from_millis(10)))),
        "invalid configuration: handler `instances.linger`: `linger` applies only to batch \
         handlers (`Shape::Batch`): a per-event handler is called once per event, however many \
         are claimed together (with the overrides of `handler_instance(\"instances.linger\", ..)`)"
    );
}
