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
//! ```
//!
//! Uses `DATABASE_URL`, or a throwaway PostgreSQL cluster when it is unset.

use std::sync::Mutex;
use std::time::Duration;

use osa_events::prelude::*;
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
    // Done when none of this run's deliveries is pending or claimed: all handled or dead.
    let ids: Vec<uuid::Uuid> = batch.iter().map(Outgoing::id).collect();
    loop {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from osa_events.deliveries d join osa_events.events e on e.position = d.event_position \
             where d.status <> 'dead' and e.id = any($1)",
        )
        .bind(&ids)
        .fetch_one(store.pool())
        .await?;
        if open == 0 {
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
    println!("dead letters:");
    let dead: Vec<(String, i32, String)> = sqlx::query_as(
        "select s.name, d.attempts, d.last_error from osa_events.deliveries d \
         join osa_events.subscriptions s on s.id = d.subscription_id \
         join osa_events.events e on e.position = d.event_position \
         where d.status = 'dead' and e.id = any($1) order by d.attempts, d.event_position",
    )
    .bind(&ids)
    .fetch_all(store.pool())
    .await?;
    for (handler, attempts, error) in dead {
        println!("  {handler}  attempts={attempts}  {error}");
    }
    Ok(())
}
