//! Handlers that take `Tx`, run by the harness on the in-memory store: what they publish through
//! it exists once when the call commits (together with the completion of its deliveries), and not
//! at all when the call fails, panics, times out or loses its claims; a store without transactions
//! refuses them at start-up, naming them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use osa_events::prelude::*;
use osa_events::store::{
    ClaimRequest, Delivery, Failure, Fence, ProjectionStore, Store, Subscription, SubscriptionId,
    WakeUps,
};
use osa_events::{BatchOutcome, Clock, Outgoing, Runtime};
use osa_events_testing::{AttemptOutcome, DeliveryStatus, FakeClock, Harness, InMemoryStore};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "tx.test.job")]
struct Job {
    n: u32,
}

/// What the `Tx` handlers publish, one per job.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "tx.test.follow_up")]
struct FollowUp {
    n: u32,
}

/// No follow-ups.
const NONE: [u32; 0] = [];

/// The claim timeout of the `Tx` handlers.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(30);

/// How a call of a `Tx` handler ends, after it published its follow-ups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Returns `Ok`: the call commits.
    Commit,
    /// Returns a retryable error.
    Fail,
    /// Panics.
    Panic,
    /// Sleeps past the handler's `timeout` (on the fake clock).
    Hang,
    /// Lets its claims expire, and another worker takes one over; then returns `Ok`.
    TakeOver,
    /// (Batch handler.) Fails the odd jobs in its `BatchOutcome`.
    FailOdd,
    /// (Batch handler.) Names an index past the end of its batch in its `BatchOutcome`.
    Miscount,
    /// Returns `HandlerError::fatal`.
    Fatal,
    /// (Batch handler.) Fails its first event fatally in its `BatchOutcome`.
    FatalFirst,
}

/// How the next calls end (one entry per call, then [`End::Commit`]), and what the calls saw.
struct Script {
    clock: FakeClock,
    ends: Mutex<VecDeque<End>>,
    /// The harness's store, set once it is built.
    store: OnceLock<InMemoryStore>,
    /// How many of its own follow-ups a call found in the store after publishing them: the
    /// transaction has not committed, so none.
    visible_early: AtomicUsize,
    /// The claims other workers took over.
    taken_over: Mutex<Vec<Delivery>>,
}

impl Script {
    fn new(clock: FakeClock, ends: &[End]) -> Self {
        Self {
            clock,
            ends: Mutex::new(ends.iter().copied().collect()),
            store: OnceLock::new(),
            visible_early: AtomicUsize::new(0),
            taken_over: Mutex::new(Vec::new()),
        }
    }

    /// Ends a call of `handler` that published the events `ids` in its transaction: notes how
    /// many of them the store shows already, then ends as scripted. Returns the end the batch
    /// handler reports in its `BatchOutcome`.
    async fn end(&self, handler: &str, ids: &[Uuid]) -> Result<End, HandlerError> {
        let store = self.store.get().expect("set once the harness is built");
        let visible = store
            .events()
            .iter()
            .filter(|event| ids.contains(&event.id))
            .count();
        self.visible_early.fetch_add(visible, Ordering::SeqCst);
        let end = self.ends.lock().unwrap().pop_front().unwrap_or(End::Commit);
        match end {
            End::Fail => Err(HandlerError::retry("the call failed after publishing")),
            End::Fatal => Err(HandlerError::fatal("the call found the schema wrong")),
            End::Panic => panic!("the call panicked after publishing"),
            End::Hang => {
                self.clock.sleep(Duration::from_secs(3600)).await;
                Ok(End::Commit)
            }
            End::TakeOver => {
                // No await between the expiry and the claim: the heartbeat cannot run in between.
                self.clock.advance(CLAIM_TIMEOUT + Duration::from_secs(1));
                let subscription = store.subscription_id(handler).expect("registered");
                let request = ClaimRequest {
                    subscription,
                    limit: 1,
                    claim_timeout: Duration::from_secs(600),
                    worker: "another worker",
                };
                let taken = store.claim(request).await.expect("claim");
                assert_eq!(taken.len(), 1, "another worker takes a claim over");
                self.taken_over.lock().unwrap().extend(taken);
                Ok(End::Commit)
            }
            End::Commit | End::FailOdd | End::Miscount | End::FatalFirst => Ok(end),
        }
    }
}

/// The follow-ups the second handler received, in order.
#[derive(Default)]
struct Received(Mutex<Vec<u32>>);

impl Received {
    fn numbers(&self) -> Vec<u32> {
        self.0.lock().unwrap().clone()
    }
}

#[event_handler(
    name = "tx.each",
    retries = 3,
    backoff = "1s",
    timeout = "5s",
    claim_timeout = "30s"
)]
async fn each(job: Job, mut tx: Tx, script: State<Script>) -> Result<(), HandlerError> {
    let published = tx.publish(&FollowUp { n: job.n }).await?;
    script.end("tx.each", &[published.id]).await?;
    Ok(())
}

#[event_handler(
    name = "tx.batch",
    batch = 10,
    retries = 3,
    backoff = "1s",
    timeout = "5s",
    claim_timeout = "30s"
)]
async fn batch(
    jobs: Batch<Job>,
    mut tx: Tx,
    script: State<Script>,
) -> Result<BatchOutcome, HandlerError> {
    let follow_ups = jobs
        .iter()
        .map(|job| Outgoing::new(&FollowUp { n: job.n }))
        .collect::<Result<Vec<_>, _>>()?;
    tx.publish_batch(&follow_ups).await?;
    let ids: Vec<Uuid> = follow_ups.iter().map(Outgoing::id).collect();
    let mut outcome = BatchOutcome::new();
    match script.end("tx.batch", &ids).await? {
        End::FailOdd => {
            for (index, job) in jobs.iter().enumerate() {
                if job.n % 2 == 1 {
                    outcome.fail(index, HandlerError::retry(format!("job {} failed", job.n)));
                }
            }
        }
        End::Miscount => {
            outcome.fail(jobs.len(), HandlerError::retry("off by one"));
        }
        End::FatalFirst => {
            outcome.fail(0, HandlerError::fatal("job 0 found the schema wrong"));
        }
        _ => {}
    }
    Ok(outcome)
}

/// Receives the follow-ups.
#[event_handler(name = "tx.follower")]
async fn follower(follow_up: FollowUp, received: State<Received>) -> Result<(), HandlerError> {
    received.0.lock().unwrap().push(follow_up.n);
    Ok(())
}

/// A harness running `handler` (ending its calls as `ends` says) and `tx.follower`.
async fn harness(handler: &str, ends: &[End]) -> (Harness, Arc<Script>, Arc<Received>) {
    let clock = FakeClock::new();
    let script = Arc::new(Script::new(clock.clone(), ends));
    let received = Arc::new(Received::default());
    let harness = Harness::builder()
        .clock(clock)
        .resources(
            Resources::new()
                .with_arc(Arc::clone(&script))
                .with_arc(Arc::clone(&received)),
        )
        .only([handler, "tx.follower"])
        .build()
        .await
        .expect("a harness runs `Tx` handlers");
    script.store.set(harness.store().clone()).expect("set once");
    (harness, script, received)
}

/// The numbers of the follow-ups in the store, sorted.
fn follow_ups(harness: &Harness) -> Vec<u32> {
    let mut numbers: Vec<u32> = harness
        .published()
        .iter()
        .filter(|event| event.event_type == FollowUp::NAME)
        .map(|event| serde_json::from_str::<FollowUp>(&event.payload).unwrap().n)
        .collect();
    numbers.sort_unstable();
    numbers
}

fn publish_jobs(harness: &Harness, numbers: std::ops::Range<u32>) {
    for n in numbers {
        harness.publish(&Job { n });
    }
}

#[tokio::test]
async fn a_tx_handler_publishes_its_follow_up_once_when_its_call_commits() {
    let (mut harness, script, received) = harness("tx.each", &[]).await;
    publish_jobs(&harness, 0..3);
    let attempts = harness.step("tx.each").await;
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts.iter().all(|attempt| attempt.is_handled()),
        "completed in the call's transaction: {attempts:#?}"
    );
    assert_eq!(harness.deliveries("tx.each"), [], "completed");
    assert_eq!(follow_ups(&harness), [0, 1, 2], "once each");
    assert_eq!(
        script.visible_early.load(Ordering::SeqCst),
        0,
        "invisible until the call committed"
    );
    assert_eq!(
        harness.deliveries("tx.follower").len(),
        3,
        "delivered at the commit"
    );

    harness.drain().await;
    harness.assert_handled("tx.follower", 3);
    assert_eq!(received.numbers(), [0, 1, 2]);
    harness.assert_handled("tx.each", 3);
    assert_eq!(follow_ups(&harness), [0, 1, 2], "still once each");
}

/// A call of `handler` that ends as `end` publishes nothing, and its deliveries are retried:
/// then each follow-up is published once. Two jobs: the per-event handler's second call, in the
/// same batch, commits; the batch handler's one call fails for both. `error` is part of the
/// recorded error.
async fn a_failed_call_publishes_nothing_and_is_retried(handler: &str, end: End, error: &str) {
    let (mut harness, script, received) = harness(handler, &[end]).await;
    publish_jobs(&harness, 0..2);
    let attempts = harness.step(handler).await;
    assert_eq!(attempts.len(), 2, "one batch");
    assert!(attempts[0].is_retried(), "{attempts:#?}");
    assert!(
        attempts[0].error().unwrap().contains(error),
        "{attempts:#?}"
    );
    if handler == "tx.batch" {
        assert!(attempts[1].is_retried(), "{attempts:#?}");
        assert_eq!(follow_ups(&harness), NONE, "the batch published nothing");
    } else {
        assert!(attempts[1].is_handled(), "{attempts:#?}");
        assert_eq!(follow_ups(&harness), [1], "only the second call committed");
    }
    assert_eq!(script.visible_early.load(Ordering::SeqCst), 0);
    let first = &harness.deliveries(handler)[0];
    assert_eq!(
        (first.status, first.attempts),
        (DeliveryStatus::Pending, 1),
        "the first job waits for its retry"
    );

    harness.drain().await;
    assert_eq!(follow_ups(&harness), [0, 1], "once each, after the retry");
    assert_eq!(received.numbers().len(), 2, "the follower got each once");
    assert_eq!(harness.deliveries(handler), [], "all completed");
}

#[tokio::test]
async fn an_erring_tx_handler_publishes_nothing_and_is_retried() {
    a_failed_call_publishes_nothing_and_is_retried(
        "tx.each",
        End::Fail,
        "the call failed after publishing",
    )
    .await;
}

#[tokio::test]
async fn a_panicking_tx_handler_publishes_nothing_and_is_retried() {
    a_failed_call_publishes_nothing_and_is_retried(
        "tx.each",
        End::Panic,
        "the handler panicked: the call panicked after publishing",
    )
    .await;
}

#[tokio::test]
async fn a_timed_out_tx_handler_publishes_nothing_and_is_retried() {
    a_failed_call_publishes_nothing_and_is_retried(
        "tx.each",
        End::Hang,
        "the handler timed out after 5s",
    )
    .await;
}

/// A fatal call of `handler` publishes nothing, and gives back its deliveries (with the rest of
/// the claim), unfailed: pending, the attempt not counted. `error` is part of the fatal error.
async fn a_fatal_call_publishes_nothing_and_gives_its_deliveries_back(
    handler: &str,
    end: End,
    error: &str,
) {
    let (mut harness, script, _) = harness(handler, &[end]).await;
    publish_jobs(&harness, 0..3);
    let attempts = harness.step(handler).await;
    assert_eq!(attempts.len(), 3, "one claim");
    assert!(
        attempts.iter().all(|attempt| attempt.is_fatal()),
        "given back, the later calls of the claim never made: {attempts:#?}"
    );
    assert!(
        attempts[0].error().unwrap().contains(error),
        "{attempts:#?}"
    );
    assert_eq!(follow_ups(&harness), NONE, "rolled back");
    assert_eq!(script.visible_early.load(Ordering::SeqCst), 0);
    let left = harness.deliveries(handler);
    assert_eq!(left.len(), 3);
    for delivery in &left {
        assert_eq!(
            (delivery.status, delivery.attempts),
            (DeliveryStatus::Pending, 0),
            "{delivery:?}"
        );
    }
    // A process that starts again (the script now commits) handles each job once.
    harness.drain().await;
    assert_eq!(follow_ups(&harness), [0, 1, 2]);
    assert_eq!(harness.deliveries(handler), []);
}

#[tokio::test]
async fn a_fatal_tx_handler_publishes_nothing_and_gives_its_deliveries_back() {
    a_fatal_call_publishes_nothing_and_gives_its_deliveries_back(
        "tx.each",
        End::Fatal,
        "the call found the schema wrong",
    )
    .await;
}

#[tokio::test]
async fn a_fatal_tx_batch_publishes_nothing_and_gives_its_batch_back() {
    a_fatal_call_publishes_nothing_and_gives_its_deliveries_back(
        "tx.batch",
        End::Fatal,
        "the call found the schema wrong",
    )
    .await;
}

#[tokio::test]
async fn one_fatal_event_of_a_tx_batch_rolls_the_whole_batch_back() {
    a_fatal_call_publishes_nothing_and_gives_its_deliveries_back(
        "tx.batch",
        End::FatalFirst,
        "job 0 found the schema wrong",
    )
    .await;
}

#[tokio::test]
async fn a_tx_batch_handler_publishes_its_follow_ups_once_when_its_batch_commits() {
    let (mut harness, script, received) = harness("tx.batch", &[]).await;
    publish_jobs(&harness, 0..4);
    let attempts = harness.step("tx.batch").await;
    assert_eq!(attempts.len(), 4, "one batch");
    assert!(attempts.iter().all(|attempt| attempt.is_handled()));
    assert_eq!(harness.deliveries("tx.batch"), []);
    assert_eq!(follow_ups(&harness), [0, 1, 2, 3]);
    assert_eq!(script.visible_early.load(Ordering::SeqCst), 0);

    harness.drain().await;
    assert_eq!(received.numbers(), [0, 1, 2, 3]);
    assert_eq!(follow_ups(&harness), [0, 1, 2, 3], "still once each");
}

#[tokio::test]
async fn an_erring_tx_batch_publishes_nothing_and_is_retried() {
    a_failed_call_publishes_nothing_and_is_retried(
        "tx.batch",
        End::Fail,
        "the call failed after publishing",
    )
    .await;
}

#[tokio::test]
async fn a_panicking_tx_batch_publishes_nothing_and_is_retried() {
    a_failed_call_publishes_nothing_and_is_retried(
        "tx.batch",
        End::Panic,
        "the handler panicked: the call panicked after publishing",
    )
    .await;
}

#[tokio::test]
async fn a_timed_out_tx_batch_publishes_nothing_and_is_retried() {
    a_failed_call_publishes_nothing_and_is_retried(
        "tx.batch",
        End::Hang,
        "the handler timed out after 5s",
    )
    .await;
}

/// As documented on `Tx`: a batch's transaction is the whole batch's, so what it published for
/// the events it fails in its `BatchOutcome` commits with the rest, and is published again when
/// those events are retried.
#[tokio::test]
async fn a_batch_outcome_commits_what_the_batch_published_for_the_events_it_fails() {
    let (mut harness, _script, received) = harness("tx.batch", &[End::FailOdd]).await;
    publish_jobs(&harness, 0..4);
    let attempts = harness.step("tx.batch").await;
    let handled: Vec<bool> = attempts
        .iter()
        .map(|attempt| attempt.is_handled())
        .collect();
    assert_eq!(handled, [true, false, true, false], "the odd jobs failed");
    assert!(attempts[1].error().unwrap().contains("job 1 failed"));
    assert_eq!(
        follow_ups(&harness),
        [0, 1, 2, 3],
        "committed for the failed events too"
    );
    let retried: Vec<u32> = harness
        .deliveries("tx.batch")
        .iter()
        .map(|delivery| delivery.attempts)
        .collect();
    assert_eq!(retried, [1, 1], "the odd jobs wait for their retry");

    harness.drain().await;
    assert_eq!(
        follow_ups(&harness),
        [0, 1, 1, 2, 3, 3],
        "the retry published the odd jobs' follow-ups again"
    );
    assert_eq!(received.numbers().len(), 6);
    assert_eq!(harness.deliveries("tx.batch"), []);
}

#[tokio::test]
async fn an_out_of_range_batch_outcome_index_rolls_the_tx_batch_back() {
    let (mut harness, _script, _received) = harness("tx.batch", &[End::Miscount]).await;
    publish_jobs(&harness, 0..3);
    let attempts = harness.step("tx.batch").await;
    assert!(attempts.iter().all(|attempt| attempt.is_retried()));
    assert!(
        attempts[0]
            .error()
            .unwrap()
            .contains("`BatchOutcome::fail` named index 3")
    );
    assert_eq!(follow_ups(&harness), NONE, "rolled back");
    harness.drain().await;
    assert_eq!(follow_ups(&harness), [0, 1, 2]);
}

#[tokio::test]
async fn a_tx_handler_whose_claim_is_taken_over_publishes_nothing() {
    let (mut harness, script, _received) = harness("tx.each", &[End::TakeOver]).await;
    publish_jobs(&harness, 0..1);
    let attempts = harness.step("tx.each").await;
    assert_eq!(
        attempts[0].outcome,
        AttemptOutcome::CompletionRefused,
        "{attempts:?}"
    );
    assert_eq!(follow_ups(&harness), NONE, "rolled back");
    let rows = harness.deliveries("tx.each");
    assert_eq!(
        (rows[0].status, rows[0].attempts),
        (DeliveryStatus::Claimed, 2),
        "the other worker's claim"
    );
    let taken = script.taken_over.lock().unwrap()[0].fence;
    let subscription = harness.subscription("tx.each");
    assert_eq!(
        harness
            .store()
            .complete(subscription, &[taken])
            .await
            .unwrap(),
        1,
        "the other worker holds it"
    );
    assert_eq!(follow_ups(&harness), NONE);
}

#[tokio::test]
async fn a_tx_batch_whose_claims_are_taken_over_while_it_runs_commits_nothing() {
    let (mut harness, script, _received) = harness("tx.batch", &[End::TakeOver]).await;
    publish_jobs(&harness, 0..3);
    let attempts = harness.step("tx.batch").await;
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts.iter().all(|attempt| !attempt.is_handled()),
        "{attempts:#?}"
    );
    assert_eq!(
        follow_ups(&harness),
        NONE,
        "the batch's transaction rolled back"
    );
    let taken = script.taken_over.lock().unwrap()[0].clone();
    for row in harness.deliveries("tx.batch") {
        if row.position == taken.fence.position {
            assert_eq!((row.status, row.attempts), (DeliveryStatus::Claimed, 2));
        } else {
            assert_eq!((row.status, row.attempts), (DeliveryStatus::Pending, 1));
            let error = row.last_error.unwrap();
            assert!(error.contains("taken over"), "{error}");
        }
    }

    // The other worker finishes its delivery without publishing; the batch's worker retries the
    // rest, which publishes their follow-ups once.
    let subscription = harness.subscription("tx.batch");
    assert_eq!(
        harness
            .store()
            .complete(subscription, &[taken.fence])
            .await
            .unwrap(),
        1
    );
    harness.drain().await;
    let taken_job: Job = serde_json::from_str(&taken.payload).unwrap();
    let expected: Vec<u32> = (0..3).filter(|&n| n != taken_job.n).collect();
    assert_eq!(follow_ups(&harness), expected);
}

/// An [`InMemoryStore`] that offers no transactions: everything else is the store's.
#[derive(Clone)]
pub(crate) struct NoTransactions(pub(crate) InMemoryStore);

impl Store for NoTransactions {
    fn register<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> BoxFuture<'a, osa_events::Result<Vec<SubscriptionId>>> {
        self.0.register(subscriptions)
    }

    fn claim<'a>(
        &'a self,
        request: ClaimRequest<'a>,
    ) -> BoxFuture<'a, osa_events::Result<Vec<Delivery>>> {
        self.0.claim(request)
    }

    fn complete<'a>(
        &'a self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, osa_events::Result<u64>> {
        self.0.complete(subscription, done)
    }

    fn fail<'a>(
        &'a self,
        subscription: SubscriptionId,
        failures: &'a [Failure],
    ) -> BoxFuture<'a, osa_events::Result<u64>> {
        self.0.fail(subscription, failures)
    }

    fn extend<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
        claim_timeout: Duration,
    ) -> BoxFuture<'a, osa_events::Result<Vec<i64>>> {
        self.0.extend(subscription, claims, claim_timeout)
    }

    fn release<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
    ) -> BoxFuture<'a, osa_events::Result<u64>> {
        self.0.release(subscription, claims)
    }

    fn defer<'a>(
        &'a self,
        subscription: SubscriptionId,
        deferred: &'a [Failure],
    ) -> BoxFuture<'a, osa_events::Result<u64>> {
        self.0.defer(subscription, deferred)
    }

    fn wake_ups(&self) -> Option<BoxFuture<'static, osa_events::Result<WakeUps>>> {
        self.0.wake_ups()
    }

    fn projections(&self) -> Option<Arc<dyn ProjectionStore>> {
        self.0.projections()
    }
}

#[tokio::test]
async fn a_store_without_transactions_refuses_a_tx_handler_naming_it() {
    for handler in ["tx.each", "tx.batch"] {
        let error = Runtime::builder(NoTransactions(InMemoryStore::new()))
            .resources(Resources::new().with(Script::new(FakeClock::new(), &[])))
            .only([handler])
            .handle_signals(false)
            .build()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "invalid configuration: handler `{handler}` takes a `Tx`, but this store offers \
                 no transactions (`Store::transactions` is `None`)"
            )
        );
    }
    let plain = Runtime::builder(NoTransactions(InMemoryStore::new()))
        .resources(Resources::new().with(Received::default()))
        .only(["tx.follower"])
        .handle_signals(false)
        .build();
    assert!(plain.is_ok(), "a handler without `Tx` runs there");
}

/// An instance of a handler that takes `Tx` gets the same check, under the instance's name.
#[tokio::test]
async fn a_store_without_transactions_refuses_an_instance_of_a_tx_handler() {
    let error = Runtime::builder(NoTransactions(InMemoryStore::new()))
        .resources(Resources::new().with(Script::new(FakeClock::new(), &[])))
        .handler_instance::<EachHandler>("tx.each.eu", |o| o.routing_key("eu"))
        .only(["tx.each.eu"])
        .handle_signals(false)
        .read_environment(false)
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid configuration: handler `tx.each.eu` takes a `Tx`, but this store offers no \
         transactions (`Store::transactions` is `None`)"
    );
}

/// A store without the operations API cannot copy a handler's history or prune: a handler that
/// starts from its history, or retention, fails `build` naming what is missing.
#[tokio::test]
async fn a_store_without_operations_refuses_start_from_and_retention() {
    use osa_events::operations::{Retention, StartFrom};
    let builder = || {
        Runtime::builder(NoTransactions(InMemoryStore::new()))
            .resources(Resources::new().with(Received::default()))
            .only(["tx.follower"])
            .handle_signals(false)
    };
    let error = builder()
        .start_from("tx.follower", StartFrom::Beginning)
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid configuration: handler `tx.follower` starts from Beginning, but this store has \
         no operations API (`Store::operations` is `None`) to copy its history"
    );
    let error = builder()
        .retention(Retention::older_than(
            Duration::from_secs(60),
            Duration::from_secs(60),
        ))
        .build()
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("retention needs a store with the operations API"),
        "{error}"
    );
    assert!(builder().build().is_ok(), "without either it runs there");
}
