//! Rules of a subscription's life: unknown names, pause and resume, retirement.

use std::time::Duration;

use osa_events::Error;
use osa_events::operations::{
    BackfillStep, DeliveryQuery, Replay, RetireMode, Retired, Selector, StartFrom,
};
use osa_events::store::{ClaimRequest, Store};

use super::super::{
    Job, LONG, StoreUnderTest, claim, claim_one, outgoing, publish_jobs, subscribe,
};
use super::{expect_config, kill, node, ops, subscribe_from};

/// Every method that takes a handler name refuses an unknown one with
/// [`Error::UnknownHandler`], naming the stored ones, sorted.
pub async fn an_unknown_handler_is_refused_naming_the_known_ones<S: StoreUnderTest>(subject: &S) {
    subscribe(subject, "known.b", None).await;
    subscribe(subject, "known.a", None).await;
    let ops = ops(subject);
    let selector = Selector::handler("nope");
    let query = DeliveryQuery {
        selector: selector.clone(),
        ..DeliveryQuery::default()
    };
    let replay = Replay::everything("nope");
    let outcomes: Vec<(&str, osa_events::Result<()>)> = vec![
        ("deliveries", ops.deliveries(&query).await.map(drop)),
        ("delivery", ops.delivery("nope", 1).await.map(drop)),
        ("retry_dead", ops.retry_dead(&selector).await.map(drop)),
        ("purge_dead", ops.purge_dead(&selector).await.map(drop)),
        (
            "cancel_pending",
            ops.cancel_pending(&selector).await.map(drop),
        ),
        ("replay", ops.replay(&replay, 0, None).await.map(drop)),
        ("pause", ops.pause("nope").await.map(drop)),
        ("resume", ops.resume("nope").await.map(drop)),
        ("backfill", ops.backfill("nope", 10).await.map(drop)),
        (
            "retire",
            ops.retire("nope", RetireMode::EvenIfRunning)
                .await
                .map(drop),
        ),
    ];
    for (method, outcome) in outcomes {
        match outcome {
            Err(Error::UnknownHandler { name, known }) => {
                assert_eq!(name, "nope", "{method} names the unknown handler");
                assert_eq!(
                    known, "known.a, known.b",
                    "{method} names the known ones, sorted"
                );
            }
            other => panic!("{method}: expected Error::UnknownHandler, got {other:?}"),
        }
    }
}

/// A paused handler claims nothing, while publishing goes on adding its deliveries; a claim held
/// when it was paused still completes; resumed, it claims what accumulated. Pause and resume
/// say whether they changed anything.
pub async fn a_paused_handler_claims_nothing_until_resumed<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "paused", None).await;
    publish_jobs(subject, 2).await;
    let held = claim_one(subject, subscription, LONG).await;
    let ops = ops(subject);
    assert!(ops.pause("paused").await.unwrap(), "it was running");
    assert!(!ops.pause("paused").await.unwrap(), "paused already");
    assert!(
        claim(subject, subscription, 10, LONG).await.is_empty(),
        "paused: no claim"
    );
    publish_jobs(subject, 1).await;
    assert_eq!(
        subject.rows(subscription).await.len(),
        3,
        "publishing goes on"
    );
    let request = ClaimRequest {
        subscription,
        limit: 10,
        claim_timeout: LONG,
        worker: "contract",
    };
    let (completed, claimed) = subject
        .store()
        .complete_and_claim(&[held.fence], request)
        .await
        .expect("complete and claim");
    assert_eq!(completed, 1, "the held claim's completion lands");
    assert!(claimed.is_empty(), "but nothing new is claimed");
    let status = ops.status().await.unwrap();
    assert!(status.handler("paused").unwrap().paused_at.is_some());
    let listed = ops.subscriptions().await.unwrap();
    assert!(listed[0].paused_at.is_some(), "listed as paused");

    assert!(ops.resume("paused").await.unwrap(), "it was paused");
    assert!(!ops.resume("paused").await.unwrap(), "running already");
    let claimed = claim(subject, subscription, 10, LONG).await;
    assert_eq!(super::super::positions(&claimed), [2, 3]);
    let status = ops.status().await.unwrap();
    assert_eq!(status.handler("paused").unwrap().paused_at, None);
}

/// A retired subscription receives no new delivery, loses its open deliveries and dead letters
/// (their counts returned), and claims nothing; retiring it again removes nothing.
pub async fn a_retired_subscription_gets_nothing_loses_its_deliveries_and_claims_nothing<
    S: StoreUnderTest,
>(
    subject: &S,
) {
    let subscription = subscribe(subject, "retired", None).await;
    let neighbour = subscribe(subject, "retired.neighbour", None).await;
    publish_jobs(subject, 3).await;
    kill(subject, subscription, "dead").await;
    let held = claim_one(subject, subscription, LONG).await;
    let ops = ops(subject);
    let retired = ops
        .retire("retired", RetireMode::IfNotRunning)
        .await
        .expect("retire a handler no node runs");
    assert_eq!(retired, Retired { open: 2, dead: 1 });
    assert!(
        subject.rows(subscription).await.is_empty(),
        "every row is gone"
    );
    assert_eq!(
        subject.rows(neighbour).await.len(),
        3,
        "another handler keeps its own"
    );

    publish_jobs(subject, 1).await;
    assert!(
        subject.rows(subscription).await.is_empty(),
        "no new delivery"
    );
    assert_eq!(subject.rows(neighbour).await.len(), 4);
    if let Some(transactions) = subject.store().transactions() {
        let mut tx = transactions.begin().await.expect("begin a transaction");
        let published = tx
            .publish(&[outgoing(&Job { n: 9 })])
            .await
            .expect("publish in a transaction");
        assert_eq!(
            published.deliveries, 1,
            "only the neighbour counts as routed; the transaction is dropped"
        );
    }
    assert!(claim(subject, subscription, 10, LONG).await.is_empty());
    assert_eq!(
        subject
            .store()
            .complete(subscription, &[held.fence])
            .await
            .unwrap(),
        0,
        "the held claim's row is gone"
    );
    let again = ops
        .retire("retired", RetireMode::IfNotRunning)
        .await
        .unwrap();
    assert_eq!(again, Retired { open: 0, dead: 0 });

    let status = ops.status().await.unwrap();
    assert!(
        status
            .handler("retired")
            .expect("still listed")
            .retired_at
            .is_some()
    );
    let listed = ops.subscriptions().await.unwrap();
    let info = listed
        .iter()
        .find(|info| info.name == "retired")
        .expect("listed");
    assert!(info.retired_at.is_some());
    assert_eq!((info.open, info.dead), (0, 0));
}

/// A handler a live node runs is retired only with [`RetireMode::EvenIfRunning`].
pub async fn retiring_a_handler_a_live_node_runs_needs_even_if_running<S: StoreUnderTest>(
    subject: &S,
) {
    let subscription = subscribe(subject, "running", None).await;
    publish_jobs(subject, 1).await;
    let ops = ops(subject);
    let runner = node("runner", None, &["running"], Duration::from_secs(60));
    ops.record_node(&runner).await.expect("record a node");
    let message = expect_config(
        ops.retire("running", RetireMode::IfNotRunning).await,
        "retiring a running handler",
    );
    assert!(
        message.contains("running"),
        "the message names the handler: {message}"
    );
    assert_eq!(subject.rows(subscription).await.len(), 1, "nothing retired");
    let retired = ops
        .retire("running", RetireMode::EvenIfRunning)
        .await
        .expect("retire it anyway");
    assert_eq!(retired, Retired { open: 1, dead: 0 });
}

/// A retired handler registered again starts afresh: no longer retired, and its `start_from`
/// applies again, as for a new one.
pub async fn a_retired_handler_registered_again_starts_afresh<S: StoreUnderTest>(subject: &S) {
    let first = subscribe(subject, "reborn", None).await;
    publish_jobs(subject, 2).await;
    let ops = ops(subject);
    ops.retire("reborn", RetireMode::IfNotRunning)
        .await
        .unwrap();
    publish_jobs(subject, 1).await;
    let again = subscribe_from(subject, "reborn", None, StartFrom::Beginning).await;
    assert_eq!(again, first, "the name keeps its id");
    let status = ops.status().await.unwrap();
    let reborn = status.handler("reborn").unwrap();
    assert_eq!(reborn.retired_at, None, "no longer retired");
    assert!(reborn.backfill.is_some(), "its history is pending");
    let mut copied = 0;
    for _ in 0..50 {
        match ops.backfill("reborn", 100).await.expect("backfill") {
            BackfillStep::Done => break,
            BackfillStep::Copied { delivered, .. } => copied += delivered,
            BackfillStep::Waiting => subject.pass(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(copied, 3, "the whole history, as for a new handler");
    publish_jobs(subject, 1).await;
    assert_eq!(subject.rows(first).await.len(), 4, "it receives again");
}
