//! Rules of the claim protocol: who gets what, when, and how often.

use std::collections::HashSet;
use std::time::Duration;

use osa_events::Event;

use osa_events::store::{ClaimRequest, Failure, Fence, Store};

use super::{
    DeliveryStatus, EXPIRED, Job, LONG, Row, SHORT, StoreUnderTest, claim, claim_one, outgoing,
    positions, publish_jobs, subscribe,
};

/// Eight claimers racing over 300 deliveries, 7 at a time: every delivery is claimed exactly once.
pub async fn claims_never_overlap_under_concurrency<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "racers", None).await;
    publish_jobs(subject, 300).await;
    let claimers: Vec<_> = (0..8)
        .map(|_| {
            let store = subject.store().clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let request = ClaimRequest {
                        subscription,
                        limit: 7,
                        claim_timeout: LONG,
                        worker: "racer",
                    };
                    let batch = store.claim(request).await.expect("claim");
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(positions(&batch));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for claimer in claimers {
        for position in claimer.await.expect("claimer does not panic") {
            assert!(seen.insert(position), "position {position} claimed twice");
        }
    }
    assert_eq!(seen.len(), 300, "every delivery claimed once");
}

/// A claimed delivery is not handed out again while its claim lasts.
pub async fn a_held_claim_is_not_claimed_again<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "held", None).await;
    publish_jobs(subject, 2).await;
    let first = claim(subject, subscription, 1, LONG).await;
    let second = claim(subject, subscription, 10, LONG).await;
    assert_eq!(first.len() + second.len(), 2);
    assert_ne!(positions(&first), positions(&second));
    assert!(claim(subject, subscription, 10, LONG).await.is_empty());
}

/// A delivery carries its event: id, type, version, routing key, payload and metadata.
pub async fn a_claim_carries_the_event<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "carried", None).await;
    let draft = outgoing(&Job { n: 42 })
        .with_routing_key("k")
        .with_metadata(osa_events::Metadata::new().with_correlation_id("c-1"))
        .expect("metadata without NUL");
    let bare = outgoing(&Job { n: 43 });
    assert_eq!(subject.publish(&[draft.clone(), bare]).await, 2);

    let claimed = claim(subject, subscription, 10, LONG).await;
    assert_eq!(claimed.len(), 2);
    let delivery = &claimed[0];
    assert_eq!(delivery.event_id, draft.id());
    assert_eq!(delivery.event_type, Job::NAME);
    assert_eq!(delivery.event_version, 3);
    assert_eq!(delivery.routing_key.as_deref(), Some("k"));
    assert_eq!(delivery.last_error, None);
    let payload: Job = serde_json::from_str(&delivery.payload).expect("payload decodes");
    assert_eq!(payload, Job { n: 42 });
    let metadata: serde_json::Value = serde_json::from_str(&delivery.metadata).unwrap();
    assert_eq!(metadata["correlation_id"], "c-1");
    let metadata: serde_json::Value = serde_json::from_str(&claimed[1].metadata).unwrap();
    assert_eq!(metadata, serde_json::json!({}), "no metadata reads as {{}}");
    assert_eq!(claimed[1].routing_key, None);
}

/// The attempt is counted when claimed, whatever ends the claim: the first claim is attempt 1.
pub async fn attempts_are_counted_at_claim<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "counted", None).await;
    publish_jobs(subject, 1).await;
    let first = claim_one(subject, subscription, LONG).await;
    assert_eq!(first.attempt, 1);
    let rows = subject.rows(subscription).await;
    assert_eq!(
        (rows[0].status, rows[0].attempts),
        (DeliveryStatus::Claimed, 1)
    );

    let retry = Failure {
        fence: first.fence,
        error: "try again".into(),
        retry_in: Some(Duration::ZERO),
    };
    assert_eq!(
        subject.store().fail(subscription, &[retry]).await.unwrap(),
        1
    );
    assert_eq!(
        subject.rows(subscription).await[0].attempts,
        1,
        "failing does not count again"
    );
    let second = claim_one(subject, subscription, SHORT).await;
    assert_eq!(second.attempt, 2);
    assert_eq!(second.last_error.as_deref(), Some("try again"));

    subject.pass(EXPIRED).await; // a crashed worker: its claim expires unanswered
    let third = claim_one(subject, subscription, LONG).await;
    assert_eq!(third.attempt, 3);
}

/// Every claim gets a token of its own, also a claim of the same delivery again.
pub async fn every_claim_gets_a_fresh_token<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "tokens", None).await;
    publish_jobs(subject, 3).await;
    let none = claim(subject, subscription, 0, LONG).await;
    assert!(none.is_empty(), "a limit of 0 claims nothing");
    let mut tokens = HashSet::new();
    for delivery in claim(subject, subscription, 10, LONG).await {
        assert!(tokens.insert(delivery.fence.token));
    }
    assert_eq!(tokens.len(), 3);

    // The same delivery, claimed again after a release, a retry and an expiry.
    let subscription = subscribe(subject, "tokens-again", None).await;
    publish_jobs(subject, 1).await;
    let claimed = claim_one(subject, subscription, LONG).await;
    assert!(tokens.insert(claimed.fence.token));
    let store = subject.store();
    assert_eq!(
        store.release(subscription, &[claimed.fence]).await.unwrap(),
        1
    );
    let claimed = claim_one(subject, subscription, LONG).await;
    assert!(
        tokens.insert(claimed.fence.token),
        "new token after a release"
    );
    let retry = Failure {
        fence: claimed.fence,
        error: "again".into(),
        retry_in: Some(Duration::ZERO),
    };
    assert_eq!(store.fail(subscription, &[retry]).await.unwrap(), 1);
    let claimed = claim_one(subject, subscription, SHORT).await;
    assert!(
        tokens.insert(claimed.fence.token),
        "new token after a retry"
    );
    subject.pass(EXPIRED).await;
    let claimed = claim_one(subject, subscription, LONG).await;
    assert!(
        tokens.insert(claimed.fence.token),
        "new token after an expiry"
    );
}

/// A claim that expires unanswered is claimed again, as the next attempt, with a new token.
pub async fn an_expired_claim_is_claimed_again_with_the_next_attempt<S: StoreUnderTest>(
    subject: &S,
) {
    let subscription = subscribe(subject, "expired", None).await;
    publish_jobs(subject, 1).await;
    let lost = claim_one(subject, subscription, SHORT).await;
    subject.pass(EXPIRED).await;
    let rescued = claim_one(subject, subscription, LONG).await;
    assert_eq!(rescued.fence.position, lost.fence.position);
    assert_ne!(rescued.fence.token, lost.fence.token);
    assert_eq!(rescued.attempt, 2);
}

/// A heartbeat (extend) keeps a claim from expiring; once the heartbeats stop, it expires.
pub async fn extending_a_claim_keeps_it_from_expiring<S: StoreUnderTest>(subject: &S) {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let subscription = subscribe(subject, "extended", None).await;
    publish_jobs(subject, 1).await;
    let held = claim_one(subject, subscription, TIMEOUT).await;
    for _ in 0..4 {
        subject.pass(TIMEOUT / 2).await;
        let extended = subject
            .store()
            .extend(subscription, &[held.fence], TIMEOUT)
            .await
            .unwrap();
        assert_eq!(extended, vec![held.fence.position]);
        assert!(
            claim(subject, subscription, 1, LONG).await.is_empty(),
            "an extended claim is not claimed again"
        );
    }
    subject.pass(TIMEOUT + TIMEOUT / 2).await;
    assert_eq!(claim_one(subject, subscription, LONG).await.attempt, 2);
}

/// Due deliveries come oldest `run_at` first, then by position, and a limit takes the first ones.
pub async fn claims_come_in_run_at_then_position_order<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "ordered", None).await;
    publish_jobs(subject, 4).await;
    let first_two = claim(subject, subscription, 2, LONG).await;
    let last_two = claim(subject, subscription, 10, LONG).await;
    let published = [positions(&first_two), positions(&last_two)].concat();
    assert!(
        published.is_sorted(),
        "equal run_at: by position, got {published:?}"
    );
    assert_eq!(published.len(), 4);

    let delays_ms = [300, 100, 200, 100];
    let failures: Vec<Failure> = first_two
        .iter()
        .chain(&last_two)
        .zip(delays_ms)
        .map(|(delivery, ms)| Failure {
            fence: delivery.fence,
            error: format!("retry in {ms} ms"),
            retry_in: Some(Duration::from_millis(ms)),
        })
        .collect();
    assert_eq!(
        subject.store().fail(subscription, &failures).await.unwrap(),
        4
    );
    subject.pass(Duration::from_millis(400)).await;

    let expected = [published[1], published[3], published[2], published[0]];
    let earliest = claim(subject, subscription, 2, LONG).await;
    assert_eq!(positions(&earliest), expected[..2], "earliest run_at first");
    let rest = claim(subject, subscription, 10, LONG).await;
    assert_eq!(positions(&rest), expected[2..]);
}

/// A failure with `retry_in` makes the delivery pending, but not due before its backoff ends.
pub async fn backoff_delays_the_next_claim<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "backoff", None).await;
    publish_jobs(subject, 1).await;
    let delivery = claim_one(subject, subscription, LONG).await;
    let retry = Failure {
        fence: delivery.fence,
        error: "busy".into(),
        retry_in: Some(Duration::from_millis(400)),
    };
    assert_eq!(
        subject.store().fail(subscription, &[retry]).await.unwrap(),
        1
    );
    let rows = subject.rows(subscription).await;
    assert_eq!(rows[0].status, DeliveryStatus::Pending);
    assert!(
        claim(subject, subscription, 1, LONG).await.is_empty(),
        "not due during its backoff"
    );
    subject.pass(Duration::from_millis(500)).await;
    let again = claim_one(subject, subscription, LONG).await;
    assert_eq!(
        (again.attempt, again.last_error.as_deref()),
        (2, Some("busy"))
    );
}

/// A failure without `retry_in` is a dead letter: its error is kept and it is never claimed.
pub async fn dead_deliveries_keep_their_error_and_are_never_claimed<S: StoreUnderTest>(
    subject: &S,
) {
    let subscription = subscribe(subject, "dead", None).await;
    publish_jobs(subject, 2).await;
    let claimed = claim(subject, subscription, 1, SHORT).await;
    let dead = Failure {
        fence: claimed[0].fence,
        error: "poison".into(),
        retry_in: None,
    };
    assert_eq!(
        subject.store().fail(subscription, &[dead]).await.unwrap(),
        1
    );
    subject.pass(EXPIRED).await;
    let next = claim(subject, subscription, 10, LONG).await;
    assert_ne!(
        positions(&next),
        positions(&claimed),
        "the dead one is skipped"
    );
    assert_eq!(next.len(), 1);
    subject.pass(EXPIRED).await;
    assert!(claim(subject, subscription, 10, LONG).await.is_empty());
    let dead_row = Row {
        position: claimed[0].fence.position,
        status: DeliveryStatus::Dead,
        attempts: 1,
        last_error: Some("poison".into()),
    };
    assert_eq!(subject.rows(subscription).await[0], dead_row);
}

/// A release makes the delivery pending and due now, and gives the attempt back.
pub async fn release_gives_back_the_attempt_and_makes_the_delivery_due_now<S: StoreUnderTest>(
    subject: &S,
) {
    let subscription = subscribe(subject, "released", None).await;
    publish_jobs(subject, 1).await;
    let held = claim_one(subject, subscription, LONG).await;
    assert_eq!(
        subject
            .store()
            .release(subscription, &[held.fence])
            .await
            .unwrap(),
        1
    );
    let rows = subject.rows(subscription).await;
    assert_eq!(
        (rows[0].status, rows[0].attempts),
        (DeliveryStatus::Pending, 0)
    );
    let again = claim_one(subject, subscription, LONG).await; // no waiting for LONG
    assert_eq!(again.fence.position, held.fence.position);
    assert_eq!(again.attempt, 1, "the released attempt was not counted");
}

/// A deferral makes the delivery pending, keeps its reason, gives the attempt back, and is not due
/// before its delay ends; the old holder's token no longer defers it.
pub async fn defer_gives_back_the_attempt_and_delays_the_next_claim<S: StoreUnderTest>(
    subject: &S,
) {
    let subscription = subscribe(subject, "deferred", None).await;
    publish_jobs(subject, 1).await;
    let held = claim_one(subject, subscription, LONG).await;
    let deferral = Failure {
        fence: held.fence,
        error: "version 2 is newer than this handler's 1".into(),
        retry_in: Some(Duration::from_millis(400)),
    };
    let store = subject.store();
    let deferred = std::slice::from_ref(&deferral);
    assert_eq!(store.defer(subscription, deferred).await.unwrap(), 1);
    assert_eq!(
        store.defer(subscription, deferred).await.unwrap(),
        0,
        "a deferred claim is no longer held"
    );
    let rows = subject.rows(subscription).await;
    assert_eq!(
        (
            rows[0].status,
            rows[0].attempts,
            rows[0].last_error.as_deref()
        ),
        (DeliveryStatus::Pending, 0, Some(deferral.error.as_str()))
    );
    assert!(
        claim(subject, subscription, 1, LONG).await.is_empty(),
        "not due during its delay"
    );
    subject.pass(Duration::from_millis(500)).await;
    let again = claim_one(subject, subscription, LONG).await;
    assert_eq!(again.fence.position, held.fence.position);
    assert_eq!(again.attempt, 1, "the deferred attempt was not counted");
}

/// A deferral without a delay (how a fatal handler error gives its deliveries back) makes the
/// delivery pending and due now, gives the attempt back and keeps its reason as the last error.
pub async fn defer_without_a_delay_makes_the_delivery_due_now_and_keeps_its_error<
    S: StoreUnderTest,
>(
    subject: &S,
) {
    let subscription = subscribe(subject, "given_back", None).await;
    publish_jobs(subject, 1).await;
    let held = claim_one(subject, subscription, LONG).await;
    let given_back = Failure {
        fence: held.fence,
        error: "handler `given_back` stopped the runtime with a fatal error: schema mismatch"
            .into(),
        retry_in: None,
    };
    let store = subject.store();
    assert_eq!(
        store
            .defer(subscription, std::slice::from_ref(&given_back))
            .await
            .unwrap(),
        1
    );
    let rows = subject.rows(subscription).await;
    assert_eq!(
        (
            rows[0].status,
            rows[0].attempts,
            rows[0].last_error.as_deref()
        ),
        (DeliveryStatus::Pending, 0, Some(given_back.error.as_str()))
    );
    let again = claim_one(subject, subscription, LONG).await; // no waiting
    assert_eq!(again.fence.position, held.fence.position);
    assert_eq!(again.attempt, 1, "the given-back attempt was not counted");
    assert_eq!(again.last_error.as_deref(), Some(given_back.error.as_str()));
}

/// A completed delivery is removed: not claimable, not in the table; its event stays logged.
pub async fn completed_deliveries_are_gone<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "completed", None).await;
    publish_jobs(subject, 1).await;
    let delivery = claim_one(subject, subscription, SHORT).await;
    let store = subject.store();
    assert_eq!(
        store
            .complete(subscription, &[delivery.fence])
            .await
            .unwrap(),
        1
    );
    assert_eq!(subject.rows(subscription).await, []);
    subject.pass(EXPIRED).await;
    assert!(claim(subject, subscription, 10, LONG).await.is_empty());
    assert_eq!(
        store
            .complete(subscription, &[delivery.fence])
            .await
            .unwrap(),
        0
    );
    assert_eq!(subject.event_count().await, 1);
}

/// A batch write changes exactly the rows of its fences; empty batches change nothing.
pub async fn batch_writes_touch_only_their_own_fences<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "batched", None).await;
    publish_jobs(subject, 12).await;
    let claimed = claim(subject, subscription, 10, LONG).await;
    let fences: Vec<Fence> = claimed.iter().map(|delivery| delivery.fence).collect();
    let store = subject.store();
    assert_eq!(store.complete(subscription, &fences[..6]).await.unwrap(), 6);
    let failures: Vec<Failure> = fences[6..]
        .iter()
        .map(|fence| Failure {
            fence: *fence,
            error: "x".into(),
            retry_in: Some(LONG),
        })
        .collect();
    assert_eq!(store.fail(subscription, &failures).await.unwrap(), 4);
    let pending = subject.rows(subscription).await;
    assert_eq!(pending.len(), 6, "4 backing off and 2 never claimed");
    assert!(
        pending
            .iter()
            .all(|row| row.status == DeliveryStatus::Pending)
    );

    assert_eq!(store.complete(subscription, &[]).await.unwrap(), 0);
    assert_eq!(store.fail(subscription, &[]).await.unwrap(), 0);
    assert_eq!(store.release(subscription, &[]).await.unwrap(), 0);
    assert!(
        store
            .extend(subscription, &[], LONG)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `complete_and_claim` completes first, then claims: what it completes is never handed out
/// again, even when the claim had expired (a late but uncontested completion still counts).
pub async fn complete_and_claim_completes_then_claims<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "pipelined", None).await;
    publish_jobs(subject, 3).await;
    let late = claim_one(subject, subscription, SHORT).await;
    let held = claim_one(subject, subscription, LONG).await;
    subject.pass(EXPIRED).await;
    let forged = Fence {
        position: held.fence.position,
        token: uuid::Uuid::new_v4(),
    };
    let request = ClaimRequest {
        subscription,
        limit: 10,
        claim_timeout: LONG,
        worker: "contract",
    };
    let store = subject.store();
    let (completed, claimed) = store
        .complete_and_claim(&[late.fence, forged], request)
        .await
        .unwrap();
    assert_eq!(
        completed, 1,
        "the late completion counts, the forged one does not"
    );
    assert_eq!(
        claimed.len(),
        1,
        "neither the completed nor the held delivery: {claimed:?}"
    );
    assert!(![late.fence.position, held.fence.position].contains(&claimed[0].fence.position));
    let rows = subject.rows(subscription).await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|row| row.status == DeliveryStatus::Claimed));

    let (completed, claimed) = store.complete_and_claim(&[], request).await.unwrap();
    assert_eq!((completed, claimed.len()), (0, 0));
}

/// A failure's error is kept with each NUL character replaced by U+FFFD: PostgreSQL `text` cannot
/// hold NUL, and a handler error that quotes one must not make the failure's write fail (the
/// delivery would then be re-run without its backoff, or never dead-lettered).
pub async fn a_failure_error_with_nul_is_kept_with_a_replacement_character<S: StoreUnderTest>(
    subject: &S,
) {
    let subscription = subscribe(subject, "nul", None).await;
    publish_jobs(subject, 1).await;
    let claimed = claim_one(subject, subscription, LONG).await;
    let dead = Failure {
        fence: claimed.fence,
        error: "bad byte \0 in the input".into(),
        retry_in: None,
    };
    assert_eq!(
        subject.store().fail(subscription, &[dead]).await.unwrap(),
        1,
        "the failure is written"
    );
    assert_eq!(
        subject.rows(subscription).await,
        [Row {
            position: claimed.fence.position,
            status: DeliveryStatus::Dead,
            attempts: 1,
            last_error: Some("bad byte \u{fffd} in the input".into()),
        }]
    );
}
