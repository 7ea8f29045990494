//! Rules of the activity history: counts add up per kind, name and minute of the store's clock,
//! nothing is written for nothing, concurrent calls lose no count, and buckets older than
//! [`ACTIVITY_KEPT`] go.
//!
//! The store's minute may turn between two calls on a store on real time, so the rules that
//! add up compare totals over minutes, and check each bucket's minute against the store's now
//! read around the calls. The rule about hours of store time runs only where the store's clock
//! can [leap](StoreUnderTest::leap) (in memory), and is skipped elsewhere.

use std::time::{Duration, SystemTime};

use osa_events::operations::{
    ACTIVITY_BUCKET, ACTIVITY_KEPT, ActivityBucket, ActivityDelta, ActivityKind,
};
use osa_events::store::Store;

use super::super::StoreUnderTest;
use super::{ops, store_now};

/// A delta of `kind` and `name`.
fn delta(kind: ActivityKind, name: &str, handled: u64, failed: u64, dead: u64) -> ActivityDelta {
    ActivityDelta {
        kind,
        name: name.to_owned(),
        handled,
        failed,
        dead,
    }
}

fn handler(name: &str, handled: u64, failed: u64, dead: u64) -> ActivityDelta {
    delta(ActivityKind::Handler, name, handled, failed, dead)
}

fn projection(name: &str, handled: u64, failed: u64) -> ActivityDelta {
    delta(ActivityKind::Projection, name, handled, failed, 0)
}

/// (kind, name, handled, failed, dead), summed over the minutes, in the listing's order.
type Total = (&'static str, String, u64, u64, u64);

fn totals(buckets: &[ActivityBucket]) -> Vec<Total> {
    let mut totals: Vec<Total> = Vec::new();
    for bucket in buckets {
        match totals.last_mut() {
            Some((kind, name, handled, failed, dead))
                if *kind == bucket.kind.as_str() && *name == bucket.name =>
            {
                *handled += bucket.handled;
                *failed += bucket.failed;
                *dead += bucket.dead;
            }
            _ => totals.push((
                bucket.kind.as_str(),
                bucket.name.clone(),
                bucket.handled,
                bucket.failed,
                bucket.dead,
            )),
        }
    }
    totals
}

fn total(kind: &'static str, name: &str, handled: u64, failed: u64, dead: u64) -> Total {
    (kind, name.to_owned(), handled, failed, dead)
}

/// Every bucket the store keeps.
async fn everything<S: StoreUnderTest>(subject: &S) -> Vec<ActivityBucket> {
    ops(subject)
        .activity(SystemTime::UNIX_EPOCH)
        .await
        .expect("activity")
}

/// Seconds since the Unix epoch.
fn epoch(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .expect("store times are after 1970")
        .as_secs()
}

/// The start of the minute of `time`.
fn minute_of(time: SystemTime) -> SystemTime {
    let seconds = epoch(time);
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds - seconds % ACTIVITY_BUCKET.as_secs())
}

/// Records `deltas`, or panics.
async fn record<S: StoreUnderTest>(subject: &S, deltas: &[ActivityDelta]) {
    ops(subject)
        .record_activity(deltas)
        .await
        .expect("record activity");
}

/// Counts add up per kind and name: across calls, and for the same name twice in one call. A
/// handler and a projection of the same name are kept apart, and so are two names. Each bucket is
/// a whole minute of the store's clock, the one the counts were added in.
pub async fn recorded_activity_adds_up_per_kind_and_name<S: StoreUnderTest>(subject: &S) {
    let before = store_now(subject).await;
    record(subject, &[handler("a", 3, 1, 0), handler("b", 1, 0, 0)]).await;
    record(
        subject,
        &[
            handler("a", 2, 0, 1),
            projection("a", 5, 1),
            handler("a", 1, 0, 0),
        ],
    )
    .await;
    record(subject, &[projection("a", 4, 0)]).await;
    let after = store_now(subject).await;

    let buckets = everything(subject).await;
    assert_eq!(
        totals(&buckets),
        [
            total("handler", "a", 6, 1, 1),
            total("handler", "b", 1, 0, 0),
            total("projection", "a", 9, 1, 0),
        ],
        "(kind, name, handled, failed, dead) over {buckets:#?}"
    );
    for bucket in &buckets {
        assert_eq!(
            epoch(bucket.minute) % ACTIVITY_BUCKET.as_secs(),
            0,
            "a bucket starts at a whole minute: {bucket:?}"
        );
        assert!(
            minute_of(before) <= bucket.minute && bucket.minute <= after,
            "a bucket of the minutes the calls ran in ({before:?} to {after:?}): {bucket:?}"
        );
    }
    if minute_of(before) == minute_of(after) {
        assert_eq!(
            buckets.len(),
            3,
            "one bucket each in one minute: {buckets:#?}"
        );
    }
}

/// An empty call, and deltas whose counts are all zero, write nothing; zero deltas beside others
/// leave no bucket of their own.
pub async fn empty_and_all_zero_deltas_write_nothing<S: StoreUnderTest>(subject: &S) {
    record(subject, &[]).await;
    record(
        subject,
        &[handler("idle", 0, 0, 0), projection("idle", 0, 0)],
    )
    .await;
    assert_eq!(everything(subject).await, [], "nothing recorded");

    record(
        subject,
        &[handler("idle", 0, 0, 0), handler("busy", 0, 0, 2)],
    )
    .await;
    assert_eq!(
        totals(&everything(subject).await),
        [total("handler", "busy", 0, 0, 2)],
        "only the delta with a count"
    );
}

/// `activity(since)` lists the buckets from the minute of `since` on (`since` truncated down to
/// its minute), by kind (handlers first), then name (byte order, so `B` before `a`), then minute.
pub async fn activity_since_filters_by_minute_and_orders_by_kind_name_minute<S: StoreUnderTest>(
    subject: &S,
) {
    record(
        subject,
        &[
            projection("b", 1, 0),
            handler("b", 2, 0, 0),
            projection("a", 3, 0),
            handler("a", 4, 0, 0),
            handler("B", 5, 0, 0),
        ],
    )
    .await;
    let listed = everything(subject).await;
    let order: Vec<(ActivityKind, &str)> = listed
        .iter()
        .map(|bucket| (bucket.kind, bucket.name.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            (ActivityKind::Handler, "B"),
            (ActivityKind::Handler, "a"),
            (ActivityKind::Handler, "b"),
            (ActivityKind::Projection, "a"),
            (ActivityKind::Projection, "b"),
        ],
        "one call, one minute: by kind, then name"
    );
    let minute = listed[0].minute;
    let since = |offset: Duration| ops(subject).activity(minute + offset);
    assert_eq!(
        since(Duration::ZERO).await.expect("activity"),
        listed,
        "from its very minute"
    );
    assert_eq!(
        since(ACTIVITY_BUCKET - Duration::from_millis(1))
            .await
            .expect("activity"),
        listed,
        "`since` late in the minute still includes it"
    );
    assert_eq!(
        since(ACTIVITY_BUCKET).await.expect("activity"),
        [],
        "nothing from the next minute on"
    );

    if subject.leap(ACTIVITY_BUCKET).await {
        record(subject, &[handler("a", 10, 0, 0)]).await;
        let a: Vec<(SystemTime, u64)> = everything(subject)
            .await
            .iter()
            .filter(|bucket| bucket.kind == ActivityKind::Handler && bucket.name == "a")
            .map(|bucket| (bucket.minute, bucket.handled))
            .collect();
        let next = minute + ACTIVITY_BUCKET;
        assert_eq!(
            a,
            [(minute, 4), (next, 10)],
            "a new minute, a new bucket, in order"
        );
        assert_eq!(
            since(ACTIVITY_BUCKET).await.expect("activity"),
            [ActivityBucket {
                kind: ActivityKind::Handler,
                name: "a".to_owned(),
                minute: next,
                handled: 10,
                failed: 0,
                dead: 0,
            }],
            "only the later minute's bucket"
        );
    }
}

/// Calls of many tasks at once, into the same buckets, lose no count (8 tasks × 50 calls).
pub async fn concurrent_records_lose_no_counts<S: StoreUnderTest>(subject: &S) {
    const TASKS: u64 = 8;
    const CALLS: u64 = 50;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = subject.store().clone();
            tokio::spawn(async move {
                let operations = store.operations().expect("the operations API");
                let own = format!("own.{task}");
                for _ in 0..CALLS {
                    let deltas = [
                        handler("shared", 1, 0, 0),
                        handler(&own, 1, 1, 0),
                        projection("shared", 2, 0),
                    ];
                    operations
                        .record_activity(&deltas)
                        .await
                        .expect("record activity");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a recording task");
    }
    let mut expected: Vec<Total> = (0..TASKS)
        .map(|task| total("handler", &format!("own.{task}"), CALLS, CALLS, 0))
        .collect();
    expected.push(total("handler", "shared", TASKS * CALLS, 0, 0));
    expected.push(total("projection", "shared", 2 * TASKS * CALLS, 0, 0));
    assert_eq!(totals(&everything(subject).await), expected);
}

/// A call deletes every bucket older than [`ACTIVITY_KEPT`] before the store's now, so a name
/// keeps at most 121 buckets (two hours of minutes and the current one), and a name recorded no
/// more disappears. Needs a store whose clock can leap two hours; skipped on the others.
pub async fn buckets_older_than_kept_are_deleted_by_the_next_record<S: StoreUnderTest>(
    subject: &S,
) {
    let now = store_now(subject).await;
    let to_next_minute = minute_of(now) + ACTIVITY_BUCKET;
    if !subject
        .leap(to_next_minute.duration_since(now).unwrap_or_default())
        .await
    {
        eprintln!(
            "contract rule `buckets_older_than_kept_are_deleted_by_the_next_record` skipped: \
             the store's clock cannot leap two hours"
        );
        return;
    }
    let first = store_now(subject).await;
    assert_eq!(first, minute_of(first), "at a whole minute");
    record(subject, &[handler("gone", 1, 0, 0)]).await;
    let minutes = u32::try_from(ACTIVITY_KEPT.as_secs() / ACTIVITY_BUCKET.as_secs()).unwrap();
    for _ in 0..minutes + 10 {
        record(subject, &[handler("kept", 1, 0, 0)]).await;
        assert!(subject.leap(ACTIVITY_BUCKET).await);
    }
    record(subject, &[handler("kept", 1, 0, 0)]).await;
    let last = store_now(subject).await;

    let kept = everything(subject).await;
    let names: Vec<&str> = kept.iter().map(|bucket| bucket.name.as_str()).collect();
    assert!(
        names.iter().all(|name| *name == "kept"),
        "`gone`'s bucket went two hours after its minute: {names:?}"
    );
    assert_eq!(
        kept.len(),
        usize::try_from(minutes).unwrap() + 1,
        "at a whole minute, the bucket exactly two hours old is kept"
    );
    assert_eq!(kept[0].minute, last - ACTIVITY_KEPT);
    assert_eq!(kept[kept.len() - 1].minute, last);

    assert!(subject.leap(Duration::from_secs(1)).await);
    record(subject, &[handler("kept", 1, 0, 0)]).await;
    let kept = everything(subject).await;
    assert_eq!(
        kept.len(),
        usize::try_from(minutes).unwrap(),
        "a second later, it is older than two hours"
    );
    assert_eq!(kept[0].minute, last - ACTIVITY_KEPT + ACTIVITY_BUCKET);
    assert_eq!(
        kept[kept.len() - 1].handled,
        2,
        "the current minute's, twice"
    );
}
