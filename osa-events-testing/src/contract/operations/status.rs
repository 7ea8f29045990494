//! Rules of status: the figures of each handler.

use std::time::Duration;

use osa_events::ResetTo;
use osa_events::operations::{Count, Liveness};
use osa_events::store::ProjectionStore;
use osa_events::store::Store;

use super::super::{
    EXPIRED, LONG, SHORT, StoreUnderTest, claim, claim_one, publish_jobs, subscribe,
};
use super::{fail, kill, ops};

/// Due counts what may be claimed now (an expired claim included), scheduled the retries
/// waiting out their backoff, claimed the live claims, dead the dead letters; every handler is
/// listed, by name, idle ones with zeros.
pub async fn status_counts_due_scheduled_claimed_and_dead<S: StoreUnderTest>(subject: &S) {
    let idle = subscribe(subject, "counts.idle", None).await;
    let subscription = subscribe(subject, "counts", None).await;
    publish_jobs(subject, 5).await;
    let _held = claim_one(subject, subscription, LONG).await;
    let retried = claim_one(subject, subscription, LONG).await;
    fail(subject, subscription, &retried, "later", Some(LONG)).await;
    kill(subject, subscription, "dead").await;
    let _expiring = claim_one(subject, subscription, SHORT).await;
    subject.pass(EXPIRED).await;
    // The idle handler's five deliveries are claimed and completed: it has nothing open.
    let done = claim(subject, idle, 10, LONG).await;
    let fences: Vec<_> = done.iter().map(|delivery| delivery.fence).collect();
    assert_eq!(subject.store().complete(idle, &fences).await.unwrap(), 5);

    let status = ops(subject).status().await.expect("status");
    assert_eq!(status.head, 5, "the head is the highest position");
    let names: Vec<&str> = status.handlers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["counts", "counts.idle"], "every handler, by name");
    let counts = status.handler("counts").expect("listed");
    assert_eq!(counts.id, subscription);
    assert_eq!(
        (counts.due, counts.scheduled, counts.claimed, counts.dead),
        (
            Count::Exact(2),
            Count::Exact(1),
            Count::Exact(1),
            Count::Exact(1)
        ),
        "(due: one fresh, one expired claim; scheduled; claimed; dead)"
    );
    let idle = status.handler("counts.idle").expect("listed");
    assert_eq!(
        (idle.due, idle.scheduled, idle.claimed, idle.dead),
        (
            Count::Exact(0),
            Count::Exact(0),
            Count::Exact(0),
            Count::Exact(0)
        ),
    );
    assert_eq!(
        (idle.lag_events, idle.lag),
        (0, Duration::ZERO),
        "nothing open, no lag"
    );
    assert_eq!(idle.oldest_due, None);
    assert_eq!(idle.oldest_claim, None);
    assert_eq!(idle.liveness, Liveness::Stopped, "no node runs anything");
}

/// Lag is measured at the next delivery to be claimed (positions behind the head, time since it
/// was published); oldest due and oldest claim are ages; claimed_by names the live claims'
/// workers, sorted; the latest error stays after its delivery completes.
pub async fn status_shows_lag_oldest_due_oldest_claim_claimed_by_and_last_error<
    S: StoreUnderTest,
>(
    subject: &S,
) {
    let subscription = subscribe(subject, "figures", None).await;
    publish_jobs(subject, 4).await;
    subject.pass(Duration::from_millis(300)).await;
    for worker in ["w-b", "w-a"] {
        let claimed = subject
            .store()
            .claim(osa_events::store::ClaimRequest {
                subscription,
                limit: 1,
                claim_timeout: LONG,
                worker,
            })
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
    }
    subject.pass(Duration::from_millis(200)).await;

    let status = ops(subject).status().await.expect("status");
    let figures = status.handler("figures").expect("listed");
    assert_eq!(
        figures.claimed_by,
        ["w-a", "w-b"],
        "the live claims' workers, sorted"
    );
    let oldest_claim = figures.oldest_claim.expect("two live claims");
    assert!(
        (Duration::from_millis(200)..LONG).contains(&oldest_claim),
        "the oldest claim was taken 200 ms ago, found {oldest_claim:?}"
    );
    let oldest_due = figures.oldest_due.expect("two due deliveries");
    assert!(
        (Duration::from_millis(500)..LONG).contains(&oldest_due),
        "the oldest due delivery is due since it was published 500 ms ago, found {oldest_due:?}"
    );
    assert_eq!(
        figures.lag_events, 1,
        "the next to be claimed is position 3, the head 4"
    );
    assert!(
        (Duration::from_millis(500)..LONG).contains(&figures.lag),
        "position 3 was published 500 ms ago, found {:?}",
        figures.lag
    );
    assert_eq!(figures.last_error, None, "nothing failed yet");

    let failing = claim_one(subject, subscription, LONG).await;
    fail(
        subject,
        subscription,
        &failing,
        "boom",
        Some(Duration::ZERO),
    )
    .await;
    let again = claim(subject, subscription, 10, LONG).await;
    assert!(
        again
            .iter()
            .any(|delivery| delivery.fence.position == failing.fence.position),
        "the failed delivery is due again"
    );
    let fences: Vec<_> = again.iter().map(|delivery| delivery.fence).collect();
    assert_eq!(
        subject
            .store()
            .complete(subscription, &fences)
            .await
            .unwrap(),
        2
    );
    let status = ops(subject).status().await.expect("status");
    let (error, at) = status
        .handler("figures")
        .and_then(|figures| figures.last_error.clone())
        .expect("the latest error is kept after its delivery completed");
    assert_eq!(error, "boom");
    let age = status.at.duration_since(at).unwrap_or(Duration::ZERO);
    assert!(
        age < LONG,
        "the error's time is store time, found {age:?} ago"
    );
}

/// Status lists every projection the store has a checkpoint of, whichever program runs it.
pub async fn status_lists_every_projection_with_a_checkpoint<S: StoreUnderTest>(subject: &S) {
    publish_jobs(subject, 2).await;
    for name in ["contract.listed.b", "contract.listed.a"] {
        subject
            .store()
            .reset(name, ResetTo::AfterPosition(1))
            .await
            .expect("a checkpoint after position 1");
    }
    let listed = ops(subject).projections().await.expect("projections");
    let ours: Vec<(&str, i64)> = listed
        .iter()
        .filter(|status| status.name.starts_with("contract.listed."))
        .map(|status| (status.name.as_str(), status.position))
        .collect();
    assert_eq!(
        ours,
        [("contract.listed.a", 1), ("contract.listed.b", 1)],
        "by name, at their checkpoints"
    );
    let status = ops(subject).status().await.expect("status");
    assert_eq!(status.projections, listed, "status shows the projections");
}
