//! One handler function, one subscription per configured backend: handler instances, and options
//! tuned at run time by the code and by the environment.
//!
//! ```text
//! cargo run --example backends
//! BACKUP_BACKENDS=s3,gcs,azure OSA_EVENTS_HANDLER_BACKUP_S3_BATCH=2 cargo run --example backends
//! ```
//!
//! `backup_to` is a template (`register = false`): it runs only as the instances `main` registers
//! for the backends listed in `BACKUP_BACKENDS` (default `s3,gcs`), each under its own name
//! (`backup.s3`) and routing key (`s3`), with its own retries and dead letters. Records are
//! published routed to one backend each. `configure` raises the retries of `backup.gcs`; an
//! `OSA_EVENTS_HANDLER_<NAME>_<OPTION>` variable overrides both the code and the attribute. The
//! effective options are read back from `status`, as `osa-events status` shows them. Expected
//! output of the first command:
//!
//! ```text
//! backup.s3     stored 3 records  (batch 10, retries 3, poll 100ms)
//! backup.gcs    stored 3 records  (batch 10, retries 8, poll 100ms)
//! ```
//!
//! and of the second, `backup.azure` too (2 records each) and `batch 2` for `backup.s3`.
//!
//! Uses `DATABASE_URL`, or a throwaway PostgreSQL cluster when it is unset.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::prelude::*;
use osa_events::store::Store;
use osa_events::{Outgoing, Runtime};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
}

/// Stands in for the storage backends: what each one stored.
#[derive(Default)]
struct Backends {
    stored: Mutex<BTreeMap<String, Vec<String>>>,
}

/// The template of every `backup.<backend>` handler: the routing key says which backend.
#[event_handler(
    name = "backup",
    register = false,
    batch = 10,
    retries = 3,
    poll = "100ms"
)]
async fn backup_to(
    record: RecordPublished,
    ctx: Ctx,
    backends: State<Backends>,
) -> Result<(), HandlerError> {
    let backend = ctx.routing_key().unwrap_or("unrouted").to_owned();
    backends
        .stored
        .lock()
        .unwrap()
        .entry(backend)
        .or_default()
        .push(record.srn);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (url, _cluster) = osa_events_fixtures::pg::database_url_or_throwaway()?;
    let store = PgStore::connect(&url).await?;
    store.migrate().await?;

    let listed = std::env::var("BACKUP_BACKENDS").unwrap_or_else(|_| "s3,gcs".to_owned());
    let backends_listed: Vec<String> = listed
        .split(',')
        .map(str::trim)
        .filter(|backend| !backend.is_empty())
        .map(str::to_owned)
        .collect();
    let backends = Arc::new(Backends::default());
    let mut builder = Runtime::builder(store.clone())
        .resources(Resources::new().with_arc(backends.clone()))
        .handle_signals(false);
    for backend in &backends_listed {
        let key = backend.clone();
        builder = builder.handler_instance::<BackupToHandler>(format!("backup.{backend}"), |o| {
            o.routing_key(key)
        });
    }
    if backends_listed.iter().any(|backend| backend == "gcs") {
        builder = builder.configure("backup.gcs", |o| o.retries(8));
    }
    let runtime = builder.build()?;
    runtime.register().await?;
    let shutdown = runtime.shutdown_token();

    let records = (0..6)
        .map(|n| {
            let backend = &backends_listed[n % backends_listed.len()];
            Outgoing::new(&RecordPublished {
                srn: format!("srn:{n}"),
            })
            .map(|outgoing| outgoing.with_routing_key(backend.as_str()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    osa_events::publish_batch(store.pool(), &records).await?;

    let running = tokio::spawn(runtime.run());
    let operations = store
        .operations()
        .expect("PgStore offers the operations API");
    let status = loop {
        let status = operations.status().await?;
        let open = status.handlers.iter().any(|handler| {
            handler.name.starts_with("backup.")
                && handler.due.value() + handler.scheduled.value() + handler.claimed.value() > 0
        });
        if !open {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    shutdown.cancel();
    running.await??;

    let stored = backends.stored.lock().unwrap().clone();
    for backend in &backends_listed {
        let name = format!("backup.{backend}");
        let Some(handler) = status.handler(&name) else {
            continue;
        };
        let options = &handler.config;
        println!(
            "{name:<14}stored {} records  (batch {}, retries {}, poll {})",
            stored.get(backend).map_or(0, Vec::len),
            options["batch"],
            options["retries"],
            options["poll"].as_str().unwrap_or("-"),
        );
    }
    Ok(())
}
