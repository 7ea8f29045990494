//! Projections on the in-memory store: stepped by the harness (catch-up, failure and retry, reset,
//! and what a projection taking a `Tx` publishes), and run by the runtime on two "nodes" sharing
//! one store (leadership, take-over, deposing).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use osa_events::prelude::*;
use osa_events::store::ProjectionStore;
use osa_events::{ResetTo, Runtime};
use osa_events_testing::{Harness, InMemoryStore};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "projection.test.placed")]
struct Placed {
    n: u32,
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "projection.test.noise")]
struct Noise;

/// The read model: every applied position in order of application, and the events' numbers.
#[derive(Default)]
struct Applied {
    positions: Mutex<Vec<i64>>,
    numbers: Mutex<Vec<u32>>,
    /// While set, an event with `n == 13` fails its batch.
    refuse_13: AtomicBool,
}

impl Applied {
    fn positions(&self) -> Vec<i64> {
        self.positions.lock().unwrap().clone()
    }

    fn numbers(&self) -> Vec<u32> {
        self.numbers.lock().unwrap().clone()
    }
}

#[projection(
    name = "projection.test.applied",
    batch = 4,
    poll = "10ms",
    backoff = "10ms"
)]
async fn apply(events: Batch<Placed>, applied: State<Applied>) -> Result<(), HandlerError> {
    let mut staged = Vec::new();
    for (ctx, placed) in events.iter_with_ctx() {
        if placed.n == 13 && applied.refuse_13.load(Ordering::SeqCst) {
            return Err(HandlerError::retry("13 is refused today"));
        }
        staged.push((ctx.position(), placed.n));
    }
    // A read model that writes all of a batch or nothing, as a transaction would.
    for (position, n) in staged {
        applied.positions.lock().unwrap().push(position);
        applied.numbers.lock().unwrap().push(n);
    }
    Ok(())
}

/// Reports the refused event in a `BatchOutcome` instead of returning an error.
#[projection(name = "projection.test.outcome", batch = 4, backoff = "10ms")]
async fn apply_with_outcome(
    events: Batch<Placed>,
    applied: State<Applied>,
) -> Result<BatchOutcome, HandlerError> {
    let mut outcome = BatchOutcome::new();
    for (index, placed) in events.iter().enumerate() {
        if placed.n == 13 && applied.refuse_13.load(Ordering::SeqCst) {
            outcome.fail(index, HandlerError::retry("13 is refused today"));
        } else {
            applied.numbers.lock().unwrap().push(placed.n);
        }
    }
    Ok(outcome)
}

/// A harness running only `projection`, with `applied` as its state.
async fn harness(applied: &Arc<Applied>, projection: &str) -> Harness {
    Harness::builder()
        .resources(Resources::new().with_arc(Arc::clone(applied)))
        .only([projection])
        .build()
        .await
        .expect("a harness for the projection")
}

#[tokio::test]
async fn the_harness_applies_every_event_once_in_order_and_resumes() {
    let applied = Arc::new(Applied::default());
    let mut harness = harness(&applied, "projection.test.applied").await;
    assert_eq!(
        harness.projection_names().collect::<Vec<_>>(),
        ["projection.test.applied"]
    );
    for n in 0..6 {
        harness.publish(&Placed { n });
        harness.publish(&Noise);
    }
    assert_eq!(harness.project("projection.test.applied").await, Ok(6));
    assert_eq!(applied.numbers(), [0, 1, 2, 3, 4, 5]);
    assert!(applied.positions().windows(2).all(|pair| pair[0] < pair[1]));

    for n in 6..9 {
        harness.publish(&Placed { n });
    }
    assert_eq!(harness.project("projection.test.applied").await, Ok(3));
    assert_eq!(harness.project("projection.test.applied").await, Ok(0));
    assert_eq!(applied.numbers(), (0..9).collect::<Vec<_>>());

    let status = harness.store().projection_status().await.unwrap();
    let status = status
        .iter()
        .find(|status| status.name == "projection.test.applied")
        .unwrap();
    assert_eq!(status.position, *applied.positions().last().unwrap());
    assert_eq!(status.lag, 0);
    assert_eq!(status.leader.as_deref(), Some("harness"));
}

#[tokio::test]
async fn a_failing_batch_moves_nothing_reports_its_error_and_is_retried() {
    let applied = Arc::new(Applied::default());
    applied.refuse_13.store(true, Ordering::SeqCst);
    let mut harness = harness(&applied, "projection.test.applied").await;
    for n in 10..16 {
        harness.publish(&Placed { n });
    }
    let failed = harness
        .project("projection.test.applied")
        .await
        .unwrap_err();
    assert_eq!(failed.applied, 0, "13 is in the first batch of 4");
    assert!(failed.error.contains("13 is refused today"), "{failed}");
    assert_eq!(applied.numbers(), [] as [u32; 0]);
    let status = harness
        .store()
        .status("projection.test.applied", &[Placed::NAME])
        .await
        .unwrap();
    assert_eq!(
        (status.position, status.lag),
        (0, 6),
        "the checkpoint did not move"
    );
    assert!(status.last_error.unwrap().contains("13 is refused today"));

    applied.refuse_13.store(false, Ordering::SeqCst);
    assert_eq!(harness.project("projection.test.applied").await, Ok(6));
    assert_eq!(applied.numbers(), (10..16).collect::<Vec<_>>(), "each once");
    let status = harness
        .store()
        .status("projection.test.applied", &[Placed::NAME])
        .await
        .unwrap();
    assert_eq!((status.lag, status.last_error), (0, None));
}

#[tokio::test]
async fn one_failed_event_of_a_batch_outcome_fails_the_whole_batch() {
    let applied = Arc::new(Applied::default());
    applied.refuse_13.store(true, Ordering::SeqCst);
    let mut harness = harness(&applied, "projection.test.outcome").await;
    let published: Vec<_> = (10..16).map(|n| harness.publish(&Placed { n })).collect();
    let failed = harness
        .project("projection.test.outcome")
        .await
        .unwrap_err();
    assert_eq!(failed.applied, 0);
    // Named by id and position, not by its index in the batch.
    assert!(
        failed.error.contains(&published[3].to_string()) && failed.error.contains("13 is refused"),
        "{failed}"
    );
    let status = harness
        .store()
        .status("projection.test.outcome", &[Placed::NAME])
        .await
        .unwrap();
    assert_eq!((status.position, status.lag), (0, 6), "nothing skipped");

    applied.refuse_13.store(false, Ordering::SeqCst);
    assert_eq!(harness.project("projection.test.outcome").await, Ok(6));
    let status = harness
        .store()
        .status("projection.test.outcome", &[Placed::NAME])
        .await
        .unwrap();
    assert_eq!((status.lag, status.last_error), (0, None));
}

#[tokio::test]
async fn a_reset_replays_from_the_chosen_point() {
    let applied = Arc::new(Applied::default());
    let mut harness = harness(&applied, "projection.test.applied").await;
    for n in 0..5 {
        harness.publish(&Placed { n });
    }
    assert_eq!(harness.project("projection.test.applied").await, Ok(5));
    let third = applied.positions()[2];
    harness
        .store()
        .reset("projection.test.applied", ResetTo::AfterPosition(third))
        .await
        .unwrap();
    assert_eq!(harness.project("projection.test.applied").await, Ok(2));
    assert_eq!(applied.numbers(), [0, 1, 2, 3, 4, 3, 4]);
}

/// Starts a runtime on `store` that runs the projection only, as `instance`.
fn node(
    store: &InMemoryStore,
    applied: &Arc<Applied>,
    instance: &str,
) -> tokio::task::JoinHandle<osa_events::Result<()>> {
    let runtime = Runtime::builder(store.clone())
        .resources(Resources::new().with_arc(Arc::clone(applied)))
        .only(["projection.test.applied"])
        .handle_signals(false)
        .instance_name(instance)
        .build()
        .unwrap();
    tokio::spawn(runtime.run())
}

async fn leader(store: &InMemoryStore) -> Option<String> {
    store
        .status("projection.test.applied", &[Placed::NAME])
        .await
        .unwrap()
        .leader
}

/// Waits up to 10 s for `condition`.
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let started = tokio::time::Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_share_one_leader_and_the_survivor_takes_over() {
    let store = InMemoryStore::new();
    let applied = Arc::new(Applied::default());
    let node_a = node(&store, &applied, "node-a");
    let node_b = node(&store, &applied, "node-b");
    eventually("a leader", async || leader(&store).await.is_some()).await;
    let first = leader(&store).await.unwrap();

    for n in 0..40 {
        store.publish(&Placed { n }).unwrap();
    }
    eventually("the first 40 applied", async || {
        applied.numbers().len() == 40
    })
    .await;
    // The leader dies: its task is gone, and with it its leadership.
    let (dead, survivor) = if first == "node-a" {
        (node_a, node_b)
    } else {
        (node_b, node_a)
    };
    dead.abort();
    for n in 40..80 {
        store.publish(&Placed { n }).unwrap();
    }
    eventually("the survivor leads", async || {
        leader(&store).await.is_some_and(|now| now != first)
    })
    .await;
    eventually("all 80 applied", async || applied.numbers().len() == 80).await;

    // Deposed (its session ended, as PostgreSQL would end it): it follows, then leads again.
    assert!(store.depose_projection_leader("projection.test.applied"));
    for n in 80..100 {
        store.publish(&Placed { n }).unwrap();
    }
    eventually("all 100 applied after deposing", async || {
        applied.numbers().len() == 100
    })
    .await;
    survivor.abort();
    assert_eq!(
        applied.numbers(),
        (0..100).collect::<Vec<_>>(),
        "once each, in order"
    );
}

/// What the transactional projection publishes, one per event it applies.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "projection.test.counted")]
struct Counted {
    n: u32,
}

/// How the transactional projection's next batches end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchEnd {
    Commit,
    Fail,
    Panic,
    /// Deposes the projection's leader (as a lost session would), then returns `Ok`.
    Depose,
}

/// The transactional projection's script (one end per batch, then [`BatchEnd::Commit`]), and
/// what it and the handler of its follow-ups saw.
#[derive(Default)]
struct Counting {
    ends: Mutex<VecDeque<BatchEnd>>,
    /// The store, set once the harness or runtime is built.
    store: OnceLock<InMemoryStore>,
    /// How many of its own `Counted` events a batch found in the store after publishing them.
    visible_early: AtomicUsize,
    /// Whether [`BatchEnd::Depose`] found a leader to depose.
    deposed: AtomicBool,
    /// What `projection.test.on_counted` received.
    received: Mutex<Vec<u32>>,
}

impl Counting {
    fn new(ends: &[BatchEnd]) -> Self {
        Self {
            ends: Mutex::new(ends.iter().copied().collect()),
            ..Self::default()
        }
    }

    fn received(&self) -> Vec<u32> {
        self.received.lock().unwrap().clone()
    }
}

#[projection(
    name = "projection.test.transactional",
    batch = 4,
    poll = "10ms",
    backoff = "10ms"
)]
async fn transactional(
    events: Batch<Placed>,
    mut tx: Tx,
    counting: State<Counting>,
) -> Result<(), HandlerError> {
    let mut ids = Vec::new();
    for placed in events.iter() {
        ids.push(tx.publish(&Counted { n: placed.n }).await?.id);
    }
    let store = counting.store.get().expect("set once built");
    let visible = store
        .events()
        .iter()
        .filter(|event| ids.contains(&event.id))
        .count();
    counting.visible_early.fetch_add(visible, Ordering::SeqCst);
    let end = counting
        .ends
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(BatchEnd::Commit);
    match end {
        BatchEnd::Commit => Ok(()),
        BatchEnd::Fail => Err(HandlerError::retry("the batch failed after publishing")),
        BatchEnd::Panic => panic!("the batch panicked after publishing"),
        BatchEnd::Depose => {
            let deposed = store.depose_projection_leader("projection.test.transactional");
            counting.deposed.store(deposed, Ordering::SeqCst);
            Ok(())
        }
    }
}

/// Receives what the transactional projection publishes.
#[event_handler(name = "projection.test.on_counted")]
async fn on_counted(counted: Counted, counting: State<Counting>) -> Result<(), HandlerError> {
    counting.received.lock().unwrap().push(counted.n);
    Ok(())
}

/// A harness running the transactional projection and the handler of what it publishes.
async fn transactional_harness(counting: &Arc<Counting>) -> Harness {
    let harness = Harness::builder()
        .resources(Resources::new().with_arc(Arc::clone(counting)))
        .only([
            "projection.test.transactional",
            "projection.test.on_counted",
        ])
        .build()
        .await
        .expect("a harness runs a projection that takes a `Tx`");
    counting
        .store
        .set(harness.store().clone())
        .expect("set once");
    harness
}

/// The numbers of the `Counted` events in `store`, sorted.
fn counted(store: &InMemoryStore) -> Vec<u32> {
    let mut numbers: Vec<u32> = store
        .events()
        .iter()
        .filter(|event| event.event_type == Counted::NAME)
        .map(|event| serde_json::from_str::<Counted>(&event.payload).unwrap().n)
        .collect();
    numbers.sort_unstable();
    numbers
}

/// The position of the `index`th `Placed` event.
fn placed_position(store: &InMemoryStore, index: usize) -> i64 {
    let position = store
        .events()
        .iter()
        .enumerate()
        .filter(|(_, event)| event.event_type == Placed::NAME)
        .nth(index)
        .expect("published")
        .0;
    i64::try_from(position).unwrap() + 1
}

async fn checkpoint(store: &InMemoryStore) -> i64 {
    store
        .status("projection.test.transactional", &[Placed::NAME])
        .await
        .unwrap()
        .position
}

#[tokio::test]
async fn a_projection_that_takes_a_tx_publishes_once_with_its_checkpoint() {
    let counting = Arc::new(Counting::new(&[]));
    let mut harness = transactional_harness(&counting).await;
    for n in 0..6 {
        harness.publish(&Placed { n });
    }
    assert_eq!(
        harness.project("projection.test.transactional").await,
        Ok(6)
    );
    assert_eq!(counted(harness.store()), [0, 1, 2, 3, 4, 5], "once each");
    assert_eq!(
        counting.visible_early.load(Ordering::SeqCst),
        0,
        "invisible until the batch committed"
    );
    assert_eq!(
        checkpoint(harness.store()).await,
        placed_position(harness.store(), 5)
    );
    assert_eq!(harness.deliveries("projection.test.on_counted").len(), 6);

    harness.drain().await;
    harness.assert_handled("projection.test.on_counted", 6);
    assert_eq!(counting.received(), [0, 1, 2, 3, 4, 5]);
    assert_eq!(
        harness.project("projection.test.transactional").await,
        Ok(0)
    );
    assert_eq!(
        counted(harness.store()),
        [0, 1, 2, 3, 4, 5],
        "still once each"
    );
}

/// The second batch (of 4) ends as `end`: the first batch's events and checkpoint are committed,
/// the second's are not, and the retry publishes them once.
async fn a_failed_tx_batch_publishes_nothing_and_leaves_the_checkpoint(end: BatchEnd, error: &str) {
    let counting = Arc::new(Counting::new(&[BatchEnd::Commit, end]));
    let mut harness = transactional_harness(&counting).await;
    for n in 0..6 {
        harness.publish(&Placed { n });
    }
    let failed = harness
        .project("projection.test.transactional")
        .await
        .unwrap_err();
    assert_eq!(failed.applied, 4, "the first batch");
    assert!(failed.error.contains(error), "{failed}");
    assert_eq!(
        counted(harness.store()),
        [0, 1, 2, 3],
        "the first batch's only"
    );
    assert_eq!(
        checkpoint(harness.store()).await,
        placed_position(harness.store(), 3),
        "after the first batch"
    );
    harness.drain().await;
    assert_eq!(counting.received(), [0, 1, 2, 3]);

    assert_eq!(
        harness.project("projection.test.transactional").await,
        Ok(2)
    );
    assert_eq!(counted(harness.store()), [0, 1, 2, 3, 4, 5], "once each");
    harness.drain().await;
    assert_eq!(counting.received(), [0, 1, 2, 3, 4, 5]);
    assert_eq!(counting.visible_early.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_erring_tx_projection_batch_publishes_nothing_and_leaves_the_checkpoint() {
    a_failed_tx_batch_publishes_nothing_and_leaves_the_checkpoint(
        BatchEnd::Fail,
        "the batch failed after publishing",
    )
    .await;
}

#[tokio::test]
async fn a_panicking_tx_projection_batch_publishes_nothing_and_leaves_the_checkpoint() {
    a_failed_tx_batch_publishes_nothing_and_leaves_the_checkpoint(
        BatchEnd::Panic,
        "the projection panicked: the batch panicked after publishing",
    )
    .await;
}

/// A leader deposed while its batch runs (its session lost) commits neither the batch's
/// publishes nor its checkpoint; the runtime leads again and applies every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_tx_batch_publishes_nothing() {
    let store = InMemoryStore::new();
    let counting = Arc::new(Counting::new(&[BatchEnd::Depose]));
    counting.store.set(store.clone()).expect("set once");
    for n in 0..6 {
        store.publish(&Placed { n }).unwrap();
    }
    let runtime = Runtime::builder(store.clone())
        .resources(Resources::new().with_arc(Arc::clone(&counting)))
        .only(["projection.test.transactional"])
        .handle_signals(false)
        .build()
        .unwrap();
    let token = runtime.shutdown_token();
    let running = tokio::spawn(runtime.run());
    eventually("all applied", async || {
        checkpoint(&store).await == placed_position(&store, 5)
    })
    .await;
    token.cancel();
    running.await.unwrap().unwrap();
    assert!(counting.deposed.load(Ordering::SeqCst), "it was deposed");
    assert_eq!(
        counted(&store),
        [0, 1, 2, 3, 4, 5],
        "once each: the deposed batch published nothing"
    );
}

#[tokio::test]
async fn a_store_without_transactions_refuses_a_tx_projection_naming_it() {
    let error = Runtime::builder(crate::tx::NoTransactions(InMemoryStore::new()))
        .resources(Resources::new().with(Counting::default()))
        .only(["projection.test.transactional"])
        .handle_signals(false)
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid configuration: projection `projection.test.transactional` takes a `Tx`, but \
         this store offers no transactions (`Store::transactions` is `None`)"
    );
}
