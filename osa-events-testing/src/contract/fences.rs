//! Rules of fencing: a write about a delivery counts only with the token of its current claim.

use std::time::Duration;

use osa_events::store::{Delivery, Failure, Fence, Store, SubscriptionId};
use uuid::Uuid;

use super::{
    DeliveryStatus, EXPIRED, LONG, Row, SHORT, StoreUnderTest, claim, claim_one, publish_jobs,
    subscribe,
};

/// A delivery whose first claim expired and was taken over: `(subscription, stale, fresh)`.
async fn taken_over<S: StoreUnderTest>(subject: &S) -> (SubscriptionId, Delivery, Delivery) {
    let subscription = subscribe(subject, "fenced", None).await;
    publish_jobs(subject, 1).await;
    let stale = claim_one(subject, subscription, SHORT).await;
    subject.pass(EXPIRED).await;
    let fresh = claim_one(subject, subscription, LONG).await;
    assert_eq!(fresh.fence.position, stale.fence.position);
    (subscription, stale, fresh)
}

/// The fresh claim is untouched by the stale write, and can still complete.
async fn fresh_claim_untouched<S: StoreUnderTest>(
    subject: &S,
    subscription: SubscriptionId,
    fresh: &Delivery,
) {
    let untouched = Row {
        position: fresh.fence.position,
        status: DeliveryStatus::Claimed,
        attempts: 2,
        last_error: None,
    };
    assert_eq!(subject.rows(subscription).await, [untouched]);
    assert!(
        claim(subject, subscription, 1, LONG).await.is_empty(),
        "the fresh claim is still held"
    );
    let store = subject.store();
    assert_eq!(
        store.complete(subscription, &[fresh.fence]).await.unwrap(),
        1
    );
    assert_eq!(subject.rows(subscription).await, []);
}

/// The old holder of a taken-over claim cannot complete it.
pub async fn a_stale_complete_is_refused<S: StoreUnderTest>(subject: &S) {
    let (subscription, stale, fresh) = taken_over(subject).await;
    let refused = subject.store().complete(subscription, &[stale.fence]).await;
    assert_eq!(refused.unwrap(), 0, "stale completion refused");
    fresh_claim_untouched(subject, subscription, &fresh).await;
}

/// The old holder of a taken-over claim cannot fail it, neither to retry nor to dead-letter it.
pub async fn a_stale_fail_is_refused<S: StoreUnderTest>(subject: &S) {
    let (subscription, stale, fresh) = taken_over(subject).await;
    let failures = [None, Some(Duration::ZERO)].map(|retry_in| Failure {
        fence: stale.fence,
        error: "late".into(),
        retry_in,
    });
    let refused = subject.store().fail(subscription, &failures).await;
    assert_eq!(refused.unwrap(), 0, "stale failures refused");
    fresh_claim_untouched(subject, subscription, &fresh).await;
}

/// The old holder of a taken-over claim cannot extend it.
pub async fn a_stale_extend_is_refused<S: StoreUnderTest>(subject: &S) {
    let (subscription, stale, fresh) = taken_over(subject).await;
    let held = subject
        .store()
        .extend(subscription, &[stale.fence], LONG)
        .await;
    assert!(held.unwrap().is_empty(), "stale heartbeat refused");
    fresh_claim_untouched(subject, subscription, &fresh).await;
}

/// The old holder of a taken-over claim cannot release it (nor give back the new attempt).
pub async fn a_stale_release_is_refused<S: StoreUnderTest>(subject: &S) {
    let (subscription, stale, fresh) = taken_over(subject).await;
    let refused = subject.store().release(subscription, &[stale.fence]).await;
    assert_eq!(refused.unwrap(), 0, "stale release refused");
    fresh_claim_untouched(subject, subscription, &fresh).await;
}

/// Every fenced write needs a claimed delivery: once a claim ended (completed, retried,
/// dead-lettered or released), its token is refused, and so is a token never handed out.
pub async fn writes_need_a_claimed_delivery<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "ended", None).await;
    publish_jobs(subject, 4).await;
    let claimed = claim(subject, subscription, 4, LONG).await;
    let store = subject.store();
    let [completed, retried, dead, released] = [0, 1, 2, 3].map(|i| claimed[i].fence);
    store.complete(subscription, &[completed]).await.unwrap();
    let failures = [(retried, Some(LONG)), (dead, None)].map(|(fence, retry_in)| Failure {
        fence,
        error: "ended".into(),
        retry_in,
    });
    assert_eq!(store.fail(subscription, &failures).await.unwrap(), 2);
    store.release(subscription, &[released]).await.unwrap();
    let before = subject.rows(subscription).await;

    let forged = Fence {
        position: claimed[0].fence.position,
        token: Uuid::new_v4(),
    };
    let ended = [completed, retried, dead, released, forged];
    assert_eq!(store.complete(subscription, &ended).await.unwrap(), 0);
    assert!(
        store
            .extend(subscription, &ended, LONG)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.release(subscription, &ended).await.unwrap(), 0);
    let failures = ended.map(|fence| Failure {
        fence,
        error: "too late".into(),
        retry_in: Some(Duration::ZERO),
    });
    assert_eq!(store.fail(subscription, &failures).await.unwrap(), 0);
    assert_eq!(subject.rows(subscription).await, before, "nothing changed");
}

/// A fence is valid only for its own subscription and position.
pub async fn fences_belong_to_their_subscription<S: StoreUnderTest>(subject: &S) {
    let first = subscribe(subject, "first", None).await;
    let second = subscribe(subject, "second", None).await;
    publish_jobs(subject, 2).await;
    let mine = claim(subject, first, 2, LONG).await;
    let theirs = claim_one(subject, second, LONG).await;
    assert_eq!(theirs.fence.position, mine[0].fence.position);
    let store = subject.store();

    let crossed = [mine[0].fence];
    assert_eq!(store.complete(second, &crossed).await.unwrap(), 0);
    assert!(
        store
            .extend(second, &crossed, LONG)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.release(second, &crossed).await.unwrap(), 0);
    let moved = Fence {
        position: mine[1].fence.position,
        token: mine[0].fence.token,
    };
    assert_eq!(store.complete(first, &[moved]).await.unwrap(), 0);

    assert_eq!(subject.rows(first).await.len(), 2);
    assert_eq!(store.complete(second, &[theirs.fence]).await.unwrap(), 1);
    assert_eq!(store.complete(first, &[mine[0].fence]).await.unwrap(), 1);
}
