//! The envelope: what a handler or projection publishes while handling an event is caused by
//! it and shares its correlation id, so the chain submit → validate → publish → index can be
//! followed end to end; what the publisher set itself wins.

use std::sync::{Arc, Mutex, OnceLock};

use osa_events::prelude::*;
use osa_events::{Metadata, Outgoing};
use osa_events_testing::{Harness, InMemoryStore, RawEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "envelope.test.submitted")]
struct Submitted {
    order: u32,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "envelope.test.validated")]
struct Validated {
    order: u32,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "envelope.test.published")]
struct Published {
    order: u32,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "envelope.test.indexed")]
struct Indexed {
    order: u32,
}

/// What the chain's handlers saw and share.
#[derive(Default)]
struct Chain {
    /// The store, for the handler that publishes outside its `Tx`.
    store: OnceLock<InMemoryStore>,
    /// The metadata each `Published` event reached the indexer with, by order.
    indexed: Mutex<Vec<(u32, Uuid, Metadata)>>,
}

/// Submit → validate: publishes through its `Tx`.
#[event_handler(name = "envelope.validate")]
async fn validate(submitted: Submitted, mut tx: Tx) -> Result<(), HandlerError> {
    tx.publish(&Validated {
        order: submitted.order,
    })
    .await?;
    Ok(())
}

/// Validate → publish: publishes straight to the store, not through a `Tx` (any publish made
/// while handling an event inherits its cause).
#[event_handler(name = "envelope.publish")]
async fn publish(validated: Validated, chain: State<Chain>) -> Result<(), HandlerError> {
    let store = chain.store.get().expect("set once built");
    store.publish(&Published {
        order: validated.order,
    })?;
    Ok(())
}

/// Publish → index: records what it sees.
#[event_handler(name = "envelope.index")]
async fn index(published: Published, ctx: Ctx, chain: State<Chain>) -> Result<(), HandlerError> {
    chain
        .indexed
        .lock()
        .unwrap()
        .push((published.order, ctx.event_id(), ctx.metadata().clone()));
    Ok(())
}

/// A batch handler naming each event's cause itself, except for order 0, which it publishes
/// with its own metadata.
#[event_handler(name = "envelope.index_batch", batch = 10)]
async fn index_batch(events: Batch<Published>, mut tx: Tx) -> Result<(), HandlerError> {
    let mut indexed = Vec::new();
    for (ctx, published) in events.iter_with_ctx() {
        let metadata = if published.order == 0 {
            Metadata::new()
                .with_correlation_id("mine")
                .with_causation_id("cmd-0")
        } else {
            Metadata::caused_by(ctx)
        };
        indexed.push(
            Outgoing::new(&Indexed {
                order: published.order,
            })?
            .with_metadata(metadata)?,
        );
    }
    tx.publish_batch(&indexed).await?;
    Ok(())
}

/// A batch handler that publishes with no metadata of its own, once per batch.
#[event_handler(name = "envelope.summarize", batch = 10)]
async fn summarize(events: Batch<Validated>, mut tx: Tx) -> Result<(), HandlerError> {
    let order = events.iter().map(|validated| validated.order).sum();
    tx.publish(&Indexed { order }).await?;
    Ok(())
}

async fn chain_harness(handlers: &[&str]) -> (Harness, Arc<Chain>) {
    let chain = Arc::new(Chain::default());
    let harness = Harness::builder()
        .resources(Resources::new().with_arc(Arc::clone(&chain)))
        .only(handlers.iter().copied())
        .build()
        .await
        .unwrap();
    chain.store.set(harness.store().clone()).ok().unwrap();
    (harness, chain)
}

fn of_type<'a>(events: &'a [RawEvent], event_type: &str) -> Vec<&'a RawEvent> {
    events
        .iter()
        .filter(|event| event.event_type == event_type)
        .collect()
}

fn metadata_of(event: &RawEvent) -> Metadata {
    let json: serde_json::Value =
        serde_json::from_str(event.metadata.as_deref().unwrap_or("{}")).unwrap();
    Metadata::try_from(json).unwrap()
}

#[tokio::test]
async fn a_chain_keeps_its_correlation_id_and_each_event_names_its_cause() {
    let (mut harness, chain) =
        chain_harness(&["envelope.validate", "envelope.publish", "envelope.index"]).await;
    let root = Outgoing::new(&Submitted { order: 1 })
        .unwrap()
        .with_metadata(
            Metadata::new()
                .with_correlation_id("req-42")
                .with_extra("tenant", "acme"),
        )
        .unwrap();
    harness.publish_batch(std::slice::from_ref(&root));
    harness.drain().await;

    let events = harness.published();
    let validated = of_type(&events, Validated::NAME);
    let published = of_type(&events, Published::NAME);
    assert_eq!((validated.len(), published.len()), (1, 1), "{events:#?}");

    let validated_metadata = metadata_of(validated[0]);
    assert_eq!(validated_metadata.correlation_id(), Some("req-42"));
    assert_eq!(
        validated_metadata.causation_id(),
        Some(root.id().to_string().as_str())
    );
    assert_eq!(
        validated_metadata.extra("tenant"),
        None,
        "only the correlation and causation ids are inherited"
    );

    let published_metadata = metadata_of(published[0]);
    assert_eq!(published_metadata.correlation_id(), Some("req-42"));
    assert_eq!(
        published_metadata.causation_id(),
        Some(validated[0].id.to_string().as_str()),
        "a publish outside the handler's `Tx` is caused by the handled event too"
    );

    let indexed = chain.indexed.lock().unwrap().clone();
    assert_eq!(indexed.len(), 1);
    let (order, event_id, metadata) = &indexed[0];
    assert_eq!((*order, *event_id), (1, published[0].id));
    assert_eq!(metadata.correlation_id(), Some("req-42"));
    assert_eq!(
        metadata.causation_id(),
        Some(validated[0].id.to_string().as_str())
    );
}

#[tokio::test]
async fn a_chain_without_a_correlation_id_is_correlated_by_its_first_event() {
    let (mut harness, chain) =
        chain_harness(&["envelope.validate", "envelope.publish", "envelope.index"]).await;
    let root = harness.publish(&Submitted { order: 2 });
    harness.drain().await;
    let events = harness.published();
    assert_eq!(
        events
            .iter()
            .find(|event| event.id == root)
            .unwrap()
            .metadata,
        None,
        "a publish outside any handler adds nothing"
    );
    for event in events.iter().filter(|event| event.id != root) {
        assert_eq!(
            metadata_of(event).correlation_id(),
            Some(root.to_string().as_str()),
            "{event:?}"
        );
    }
    let indexed = chain.indexed.lock().unwrap().clone();
    assert_eq!(
        indexed[0].2.correlation_id(),
        Some(root.to_string().as_str())
    );
}

#[tokio::test]
async fn a_batch_handler_names_causes_itself_and_what_it_sets_wins() {
    let (mut harness, _chain) = chain_harness(&["envelope.index_batch"]).await;
    let ids: Vec<Uuid> = (0..3)
        .map(|order| harness.publish(&Published { order }))
        .collect();
    harness.drain().await;
    let events = harness.published();
    let indexed = of_type(&events, Indexed::NAME);
    assert_eq!(indexed.len(), 3);
    for event in indexed {
        let order = serde_json::from_str::<Indexed>(&event.payload)
            .unwrap()
            .order;
        let metadata = metadata_of(event);
        if order == 0 {
            assert_eq!(metadata.correlation_id(), Some("mine"));
            assert_eq!(metadata.causation_id(), Some("cmd-0"));
        } else {
            let cause = ids[order as usize].to_string();
            assert_eq!(metadata.causation_id(), Some(cause.as_str()));
            assert_eq!(metadata.correlation_id(), Some(cause.as_str()));
        }
    }
}

#[tokio::test]
async fn a_batch_of_one_chain_shares_its_correlation_id_but_names_no_single_cause() {
    let (mut harness, _chain) = chain_harness(&["envelope.summarize"]).await;
    let batch: Vec<Outgoing> = (0..3)
        .map(|order| {
            Outgoing::new(&Validated { order })
                .unwrap()
                .with_metadata(Metadata::new().with_correlation_id("req-7"))
                .unwrap()
        })
        .collect();
    harness.publish_batch(&batch);
    harness.drain().await;
    let events = harness.published();
    let summaries = of_type(&events, Indexed::NAME);
    assert_eq!(summaries.len(), 1, "one batch");
    let metadata = metadata_of(summaries[0]);
    assert_eq!(metadata.correlation_id(), Some("req-7"));
    assert_eq!(metadata.causation_id(), None);
}

/// A projection publishing one summary per batch through its `Tx`.
#[projection(name = "envelope.project", batch = 10)]
async fn project(events: Batch<Submitted>, mut tx: Tx) -> Result<(), HandlerError> {
    let order = events.iter().map(|submitted| submitted.order).sum();
    tx.publish(&Validated { order }).await?;
    Ok(())
}

#[tokio::test]
async fn a_projection_publishing_through_its_tx_inherits_its_batch_cause() {
    let (mut harness, _chain) = chain_harness(&["envelope.project"]).await;
    let single = harness.publish(&Submitted { order: 1 });
    assert_eq!(harness.project("envelope.project").await, Ok(1));
    let chained: Vec<Outgoing> = (2..4)
        .map(|order| {
            Outgoing::new(&Submitted { order })
                .unwrap()
                .with_metadata(Metadata::new().with_correlation_id("req-9"))
                .unwrap()
        })
        .collect();
    harness.publish_batch(&chained);
    assert_eq!(harness.project("envelope.project").await, Ok(2));

    let events = harness.published();
    let summaries = of_type(&events, Validated::NAME);
    assert_eq!(summaries.len(), 2, "{events:#?}");
    let of_one = metadata_of(summaries[0]);
    assert_eq!(of_one.causation_id(), Some(single.to_string().as_str()));
    assert_eq!(of_one.correlation_id(), Some(single.to_string().as_str()));
    let of_two = metadata_of(summaries[1]);
    assert_eq!(of_two.correlation_id(), Some("req-9"));
    assert_eq!(of_two.causation_id(), None);
}
