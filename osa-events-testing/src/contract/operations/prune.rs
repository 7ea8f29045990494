//! Rules of retention: which old events a prune deletes, and which it keeps.

use std::time::{Duration, SystemTime};

use osa_events::ResetTo;
use osa_events::operations::{Prune, PruneStep};
use osa_events::store::{ProjectionStore, Store};

use super::super::{Job, LONG, Other, StoreUnderTest, claim_one, outgoing, subscribe};
use super::{expect_config, kill, ops, store_now};

/// What the rules prune: events older than this...
const OLDER_THAN: Duration = Duration::from_millis(200);
/// ...once this much time has passed since they were published.
const AGED: Duration = Duration::from_millis(400);

/// A prune whose cutoff lies [`OLDER_THAN`] before `boundary`, a store time after the old events
/// and before the young ones, however long the steps before took (a step on PostgreSQL may take
/// a good part of [`OLDER_THAN`] on a busy machine).
async fn prune_before<S: StoreUnderTest>(subject: &S, boundary: SystemTime, prune: Prune) -> Prune {
    let since = store_now(subject)
        .await
        .duration_since(boundary)
        .unwrap_or(Duration::ZERO);
    Prune {
        older_than: since + OLDER_THAN,
        ..prune
    }
}

/// The counts of a step: (events, dead, kept, through, done).
fn counts(step: PruneStep) -> (u64, u64, u64, i64, bool) {
    (step.events, step.dead, step.kept, step.through, step.done)
}

/// A prune deletes the old events no delivery refers to, keeps those with open deliveries or
/// dead letters (and, with `include_dead`, deletes the dead letters and then the event), works a
/// batch at a time, and stops at the first event younger than its cutoff.
pub async fn prune_deletes_old_events_nothing_refers_to_and_stops_at_younger_ones<
    S: StoreUnderTest,
>(
    subject: &S,
) {
    let subscription = subscribe(subject, "pruned", None).await;
    let old = [
        outgoing(&Job { n: 1 }),
        outgoing(&Job { n: 2 }),
        outgoing(&Job { n: 3 }),
        outgoing(&Other { n: 4 }),
        outgoing(&Job { n: 5 }),
    ];
    assert_eq!(subject.publish(&old).await, 5);
    let done = claim_one(subject, subscription, LONG).await; // 1: completed
    subject
        .store()
        .complete(subscription, &[done.fence])
        .await
        .unwrap();
    let _open = claim_one(subject, subscription, LONG).await; // 2: claimed
    kill(subject, subscription, "dead").await; // 3: a dead letter; 4: nobody's; 5: pending
    subject.pass(AGED).await;
    let boundary = store_now(subject).await;
    assert_eq!(subject.publish(&[outgoing(&Job { n: 6 })]).await, 1);
    let ops = ops(subject);

    let one = Prune {
        batch: 1,
        ..Prune::older_than(OLDER_THAN)
    };
    let prune = prune_before(subject, boundary, one).await;
    let first = ops.prune(&prune, 0).await.expect("a prune step");
    assert_eq!(
        counts(first),
        (1, 0, 0, 1, false),
        "one event per step of one"
    );
    assert!(!first.busy);
    let rest = prune_before(subject, boundary, Prune::older_than(OLDER_THAN)).await;
    let step = ops.prune(&rest, first.through).await.expect("a prune step");
    assert_eq!(
        counts(step),
        (1, 0, 3, 5, true),
        "4 deleted; 2, 3 and 5 kept; done at 6, which is younger"
    );
    assert_eq!(subject.event_count().await, 4);

    let with_dead = Prune {
        include_dead: true,
        ..Prune::older_than(OLDER_THAN)
    };
    let with_dead = prune_before(subject, boundary, with_dead).await;
    let step = ops.prune(&with_dead, 0).await.expect("a prune step");
    assert_eq!(
        counts(step),
        (1, 1, 2, 5, true),
        "3 and its dead letter deleted; 2 and 5 still open"
    );
    assert_eq!(subject.event_count().await, 3);
    let rows: Vec<i64> = subject
        .rows(subscription)
        .await
        .iter()
        .map(|row| row.position)
        .collect();
    assert_eq!(rows, [2, 5, 6], "open work is never pruned");

    for batch in [0, 100_001] {
        let bad = Prune {
            batch,
            ..Prune::older_than(OLDER_THAN)
        };
        expect_config(ops.prune(&bad, 0).await, &format!("batch {batch}"));
    }
}

/// A prune keeps the events a projection's checkpoint has not passed yet.
pub async fn prune_keeps_events_a_projection_has_not_passed<S: StoreUnderTest>(subject: &S) {
    let events: Vec<_> = (0..4).map(|n| outgoing(&Other { n })).collect();
    assert_eq!(subject.publish(&events).await, 4);
    subject
        .store()
        .reset("contract.pruning.projection", ResetTo::AfterPosition(2))
        .await
        .expect("a checkpoint after position 2");
    subject.pass(AGED).await;
    let step = ops(subject)
        .prune(&Prune::older_than(OLDER_THAN), 0)
        .await
        .expect("a prune step");
    assert_eq!(
        counts(step),
        (2, 0, 2, 4, true),
        "1 and 2 deleted; 3 and 4 kept for the projection"
    );
    assert_eq!(subject.event_count().await, 2);
}
