//! Rules of transactions ([`Store::transactions`]): what a `Tx` handler's or projection's writes
//! and the completion of its deliveries do together. A store without transactions skips them.
//!
//! The runtime uses a transaction in one way only, and these rules follow it: it opens one per
//! call, the handler publishes through it, then the runtime completes the call's deliveries in it
//! and commits only when every claim was still held; otherwise it drops it.

use osa_events::store::{Fence, Store, Transaction, Transactions};
use uuid::Uuid;

use super::{
    DeliveryStatus, EXPIRED, Job, LONG, Other, Row, SHORT, StoreUnderTest, claim, claim_one,
    outgoing, positions, publish_jobs, subscribe,
};

/// The store's transactions, or `None` after noting that `rule` does not apply to it.
fn transactions<'s, S: StoreUnderTest>(subject: &'s S, rule: &str) -> Option<&'s dyn Transactions> {
    let transactions = subject.store().transactions();
    if transactions.is_none() {
        eprintln!("contract rule `{rule}` skipped: the store offers no transactions");
    }
    transactions
}

async fn begin(transactions: &dyn Transactions) -> Box<dyn Transaction> {
    transactions.begin().await.expect("begin a transaction")
}

/// What a transaction publishes exists for no one else until it commits, and then once: the
/// event and its deliveries. An id published twice in one transaction counts once.
pub async fn a_transactions_publishes_appear_once_when_it_commits<S: StoreUnderTest>(subject: &S) {
    let Some(transactions) = transactions(
        subject,
        "a_transactions_publishes_appear_once_when_it_commits",
    ) else {
        return;
    };
    let subscription = subscribe(subject, "tx-published", None).await;
    let event = outgoing(&Job { n: 1 });
    let mut tx = begin(transactions).await;
    let published = tx
        .publish(&[event.clone(), event.clone()])
        .await
        .expect("publish in a transaction");
    assert_eq!(
        (published.events, published.deliveries),
        (1, 1),
        "one event, one delivery"
    );
    let again = tx
        .publish(std::slice::from_ref(&event))
        .await
        .expect("publish in a transaction");
    assert_eq!(again.events, 0, "published in this transaction already");

    assert_eq!(subject.event_count().await, 0, "not before the commit");
    assert_eq!(subject.rows(subscription).await, []);
    assert!(claim(subject, subscription, 10, LONG).await.is_empty());

    tx.commit().await.expect("commit");
    assert_eq!(subject.event_count().await, 1, "once, after the commit");
    let claimed = claim(subject, subscription, 10, LONG).await;
    assert_eq!(claimed.len(), 1, "its one delivery");
    assert_eq!(claimed[0].event_id, event.id());
    assert_eq!(subject.publish(&[event]).await, 0, "the id is taken");
}

/// A transaction dropped without a commit leaves no trace: what it published does not exist, and
/// the claims it completed are still held.
pub async fn a_dropped_transaction_publishes_and_completes_nothing<S: StoreUnderTest>(subject: &S) {
    let Some(transactions) = transactions(
        subject,
        "a_dropped_transaction_publishes_and_completes_nothing",
    ) else {
        return;
    };
    let subscription = subscribe(subject, "tx-dropped", None).await;
    publish_jobs(subject, 1).await;
    let held = claim_one(subject, subscription, LONG).await;
    let mut tx = begin(transactions).await;
    let completed = tx.complete(subscription, &[held.fence]).await;
    assert_eq!(completed.expect("complete in a transaction"), 1);
    tx.publish(&[outgoing(&Job { n: 2 })])
        .await
        .expect("publish in a transaction");
    drop(tx);

    assert_eq!(
        subject.event_count().await,
        1,
        "the dropped publish is gone"
    );
    let claimed = Row {
        position: held.fence.position,
        status: DeliveryStatus::Claimed,
        attempts: 1,
        last_error: None,
    };
    assert_eq!(subject.rows(subscription).await, [claimed]);
    let store = subject.store();
    assert_eq!(
        store.complete(subscription, &[held.fence]).await.unwrap(),
        1,
        "the claim is still held: the dropped completion was rolled back"
    );
}

/// Completing in a transaction counts the claims still held, each once (a fence with another
/// token, or completed earlier in the same transaction, counts nothing), and the commit removes
/// exactly those deliveries.
pub async fn completing_in_a_transaction_counts_only_held_claims<S: StoreUnderTest>(subject: &S) {
    let Some(transactions) = transactions(
        subject,
        "completing_in_a_transaction_counts_only_held_claims",
    ) else {
        return;
    };
    let subscription = subscribe(subject, "tx-completed", None).await;
    publish_jobs(subject, 3).await;
    let claimed = claim(subject, subscription, 2, LONG).await;
    assert_eq!(claimed.len(), 2);
    let pending = subject.rows(subscription).await[2].position;
    let never_claimed = Fence {
        position: pending,
        token: Uuid::new_v4(),
    };
    let mut done: Vec<Fence> = claimed.iter().map(|delivery| delivery.fence).collect();
    done.push(never_claimed);

    let mut tx = begin(transactions).await;
    let completed = tx.complete(subscription, &done).await;
    assert_eq!(
        completed.expect("complete in a transaction"),
        2,
        "the held claims"
    );
    let twice = tx.complete(subscription, &done[..1]).await;
    assert_eq!(
        twice.expect("complete in a transaction"),
        0,
        "completed in this transaction already"
    );
    assert_eq!(
        subject.rows(subscription).await.len(),
        3,
        "nothing is gone before the commit"
    );
    tx.commit().await.expect("commit");

    let left = Row {
        position: pending,
        status: DeliveryStatus::Pending,
        attempts: 0,
        last_error: None,
    };
    assert_eq!(subject.rows(subscription).await, [left]);
    let store = subject.store();
    assert_eq!(
        store.complete(subscription, &done[..2]).await.unwrap(),
        0,
        "completed deliveries are gone"
    );
}

/// A claim taken over before the runtime completes it in the handler's transaction counts
/// nothing there; the runtime then drops the transaction, and nothing the handler wrote in it
/// takes effect. The new claimer's claim is untouched.
pub async fn a_claim_lost_before_its_completion_rolls_the_transaction_back<S: StoreUnderTest>(
    subject: &S,
) {
    let Some(transactions) = transactions(
        subject,
        "a_claim_lost_before_its_completion_rolls_the_transaction_back",
    ) else {
        return;
    };
    let subscription = subscribe(subject, "tx-lost", None).await;
    publish_jobs(subject, 1).await;
    let stale = claim_one(subject, subscription, SHORT).await;
    let mut tx = begin(transactions).await;
    tx.publish(&[outgoing(&Other { n: 1 })])
        .await
        .expect("the handler publishes in its transaction");
    subject.pass(EXPIRED).await;
    let fresh = claim_one(subject, subscription, LONG).await;
    assert_eq!(fresh.fence.position, stale.fence.position, "taken over");

    let completed = tx.complete(subscription, &[stale.fence]).await;
    assert_eq!(
        completed.expect("complete in a transaction"),
        0,
        "the claim is lost"
    );
    drop(tx); // as the runtime does when fewer claims were held than it completed

    assert_eq!(
        subject.event_count().await,
        1,
        "the handler's publish is gone"
    );
    let fresh_row = Row {
        position: fresh.fence.position,
        status: DeliveryStatus::Claimed,
        attempts: 2,
        last_error: None,
    };
    assert_eq!(subject.rows(subscription).await, [fresh_row]);
    let store = subject.store();
    assert_eq!(
        store.complete(subscription, &[fresh.fence]).await.unwrap(),
        1,
        "the new claimer completes it"
    );
}

/// A delivery completed in a transaction that has not committed yet is handled once whatever
/// happens meanwhile: when its claim expires before the commit, either no one can claim it (the
/// transaction holds the row, as in PostgreSQL) and the commit removes it, or someone claims it
/// and the commit fails, writing nothing. Never both.
pub async fn a_delivery_completed_in_an_open_transaction_is_not_handled_twice<S: StoreUnderTest>(
    subject: &S,
) {
    let Some(transactions) = transactions(
        subject,
        "a_delivery_completed_in_an_open_transaction_is_not_handled_twice",
    ) else {
        return;
    };
    let subscription = subscribe(subject, "tx-racing", None).await;
    publish_jobs(subject, 1).await;
    let first = claim_one(subject, subscription, SHORT).await;
    let mut tx = begin(transactions).await;
    tx.publish(&[outgoing(&Other { n: 1 })])
        .await
        .expect("the handler publishes in its transaction");
    let completed = tx.complete(subscription, &[first.fence]).await;
    assert_eq!(completed.expect("complete in a transaction"), 1);
    subject.pass(EXPIRED).await;
    let second = claim(subject, subscription, 1, LONG).await;
    let committed = tx.commit().await;

    match (second.as_slice(), committed) {
        ([], Ok(())) => {
            assert_eq!(subject.rows(subscription).await, [], "completed");
            assert_eq!(subject.event_count().await, 2, "and published");
        }
        ([taken], Err(_)) => {
            assert_eq!(taken.fence.position, first.fence.position);
            assert_eq!(subject.event_count().await, 1, "nothing was published");
            let store = subject.store();
            assert_eq!(
                store.complete(subscription, &[taken.fence]).await.unwrap(),
                1,
                "the new claimer completes it"
            );
        }
        (taken, Ok(())) => panic!(
            "the delivery was claimed again ({:?}) and its completion committed: handled twice",
            positions(taken)
        ),
        (taken, Err(error)) => panic!(
            "the commit failed ({error}) though no one else claimed the delivery ({:?})",
            positions(taken)
        ),
    }
}

/// A `Tx` batch whose claims are partly taken over while its handler runs commits nothing: the
/// completion in its transaction counts fewer than the batch, so the runtime drops it. The
/// deliveries still held stay claimed by the batch's worker (which then records their failure),
/// the taken-over one by its new claimer, and none of the batch's follow-up events exist.
pub async fn a_tx_batch_whose_claims_are_taken_over_while_it_runs_commits_nothing<
    S: StoreUnderTest,
>(
    subject: &S,
) {
    let Some(transactions) = transactions(
        subject,
        "a_tx_batch_whose_claims_are_taken_over_while_it_runs_commits_nothing",
    ) else {
        return;
    };
    let subscription = subscribe(subject, "tx-batch", None).await;
    publish_jobs(subject, 3).await;
    let batch = claim(subject, subscription, 3, SHORT).await;
    assert_eq!(batch.len(), 3);
    let fences: Vec<Fence> = batch.iter().map(|delivery| delivery.fence).collect();
    let mut tx = begin(transactions).await;
    let follow_ups: Vec<_> = (0..3).map(|n| outgoing(&Other { n })).collect();
    tx.publish(&follow_ups)
        .await
        .expect("the handler publishes in its transaction");
    // The handler outlives the claims (a stalled heartbeat); another worker takes one over.
    subject.pass(EXPIRED).await;
    let taker = claim_one(subject, subscription, LONG).await;

    let completed = tx.complete(subscription, &fences).await;
    assert_eq!(
        completed.expect("complete in a transaction"),
        2,
        "one claim of the batch is lost"
    );
    drop(tx);

    assert_eq!(
        subject.event_count().await,
        3,
        "none of the batch's follow-ups exist"
    );
    let rows = subject.rows(subscription).await;
    assert_eq!(rows.len(), 3, "no delivery was completed");
    let store = subject.store();
    let still_held: Vec<Fence> = fences
        .iter()
        .copied()
        .filter(|fence| fence.position != taker.fence.position)
        .collect();
    assert_eq!(
        store.complete(subscription, &still_held).await.unwrap(),
        2,
        "the batch's worker still holds the claims it kept"
    );
    assert_eq!(
        store.complete(subscription, &[taker.fence]).await.unwrap(),
        1,
        "the new claimer holds the one it took"
    );
}
