//! The per-backend indexing pipeline: one event, two independent handlers, one of them failing.
//!
//! ```text
//! cargo run --example indexing
//! ```
//!
//! Every `RecordPublished` is delivered twice: once to the vector index, once to the keyword index.
//! The keyword backend rejects some records: titles it cannot tokenize fail with a retryable error
//! (retried with backoff, then dead-lettered), and a record without a title fails permanently (dead
//! at once). The vector index is not held back by any of it: it indexes all six records. Expected
//! output (order may vary):
//!
//! ```text
//! [vector]  indexed 6 records in 1 batch(es)
//! [keyword] indexed 3 records
//! dead letters:
//!   keyword.index  attempts=1  `record.published` event 1b51… (position 6), attempt 1 of 3: record srn:6 has no title
//!   keyword.index  attempts=3  `record.published` event 9007… (position 2), attempt 3 of 3: cannot tokenize "Ærøskøbing harbour"
//!   keyword.index  attempts=3  `record.published` event 4685… (position 5), attempt 3 of 3: cannot tokenize "Ørsted's notebooks"
//! once the keyword backend is fixed: osa-events dead retry --handler keyword.index
//! ```
//!
//! It reads its figures through the operations API (`store.operations()`), as the `osa-events`
//! command-line tool does: status to know when everything is handled or dead, and the dead
//! letters with their errors.
//!
//! Uses `DATABASE_URL`, or a throwaway PostgreSQL cluster when it is unset.

use std::sync::Mutex;
use std::time::Duration;

use osa_events::operations::{DeliveryQuery, DeliveryState, Selector};
use osa_events::prelude::*;
use osa_events::store::Store;
use osa_events::{Outgoing, Runtime};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "record.published")]
struct RecordPublished {
    srn: String,
    title: String,
}

/// Stands in for a vector database: it accepts everything, in bulk.
#[derive(Default)]
struct VectorIndex {
    batches: Mutex<Vec<usize>>,
}

/// Stands in for a keyword search engine that cannot handle non-ASCII titles (a retryable failure:
/// a fixed tokenizer could take them later) and records without a title (a permanent failure).
#[derive(Default)]
struct KeywordIndex {
    indexed: Mutex<Vec<String>>,
}

impl KeywordIndex {
    fn index(&self, record: &RecordPublished) -> Result<(), HandlerError> {
        if record.title.is_empty() {
            return Err(HandlerError::permanent(format!(
                "record {} has no title",
                record.srn
            )));
        }
        if !record.title.is_ascii() {
            return Err(HandlerError::retry(format!(
                "cannot tokenize {:?}",
                record.title
            )));
        }
        self.indexed.lock().unwrap().push(record.srn.clone());
        Ok(())
    }
}

#[event_handler(name = "vector.index", batch = 64, poll = "100ms")]
async fn index_vectors(
    records: Batch<RecordPublished>,
    index: State<VectorIndex>,
) -> Result<(), HandlerError> {
    index.batches.lock().unwrap().push(records.len());
    Ok(())
}

#[event_handler(name = "keyword.index", retries = 2, backoff = "50ms", poll = "100ms")]
async fn index_keywords(
    record: RecordPublished,
    index: State<KeywordIndex>,
) -> Result<(), HandlerError> {
    index.index(&record)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .init();
    let (url, _cluster) = osa_events_fixtures::pg::database_url_or_throwaway()?;
    let store = PgStore::connect(&url).await?;
    store.migrate().await?;

    let vectors = std::sync::Arc::new(VectorIndex::default());
    let keywords = std::sync::Arc::new(KeywordIndex::default());
    let runtime = Runtime::builder(store.clone())
        .resources(
            Resources::new()
                .with_arc(vectors.clone())
                .with_arc(keywords.clone()),
        )
        .handle_signals(false)
        .build()?;
    runtime.register().await?;
    let shutdown = runtime.shutdown_token();

    let records = [
        ("srn:1", "Whale songs"),
        ("srn:2", "Ærøskøbing harbour"),
        ("srn:3", "Tide tables"),
        ("srn:4", "Kelp forests"),
        ("srn:5", "Ørsted's notebooks"),
        ("srn:6", ""),
    ];
    let batch = records
        .iter()
        .map(|(srn, title)| {
            Outgoing::new(&RecordPublished {
                srn: (*srn).into(),
                title: (*title).into(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    osa_events::publish_batch(store.pool(), &batch).await?;

    let running = tokio::spawn(runtime.run());
    // Done when nothing is left to do: every delivery handled or dead (the operations API's
    // status, which `osa-events status` prints).
    let operations = store
        .operations()
        .expect("PgStore offers the operations API");
    loop {
        let status = operations.status().await?;
        let open = ["vector.index", "keyword.index"].iter().any(|name| {
            status.handler(name).is_some_and(|handler| {
                handler.due.value() + handler.scheduled.value() + handler.claimed.value() > 0
            })
        });
        if !open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    running.await??;

    let batches = vectors.batches.lock().unwrap().clone();
    println!(
        "[vector]  indexed {} records in {} batch(es)",
        batches.iter().sum::<usize>(),
        batches.len()
    );
    println!(
        "[keyword] indexed {} records",
        keywords.indexed.lock().unwrap().len()
    );
    // This run's dead letters (`osa-events dead list --handler keyword.index`).
    println!("dead letters:");
    let ids: Vec<uuid::Uuid> = batch.iter().map(Outgoing::id).collect();
    let page = operations
        .deliveries(&DeliveryQuery {
            selector: Selector::handler("keyword.index"),
            state: Some(DeliveryState::Dead),
            page_size: 1_000,
            ..DeliveryQuery::default()
        })
        .await?;
    let mut dead: Vec<_> = page
        .deliveries
        .into_iter()
        .filter(|delivery| ids.contains(&delivery.event_id))
        .collect();
    dead.sort_by_key(|delivery| (delivery.attempts, delivery.key.position));
    for delivery in dead {
        println!(
            "  {}  attempts={}  {}",
            delivery.handler,
            delivery.attempts,
            delivery.last_error.unwrap_or_default()
        );
    }
    println!("once the keyword backend is fixed: osa-events dead retry --handler keyword.index");
    Ok(())
}
