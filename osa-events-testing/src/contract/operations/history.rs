//! Rules of replay and backfill: events of the log handed to a handler again, or for the first
//! time.

use std::time::Duration;

use osa_events::Event;
use osa_events::operations::{BackfillStep, Replay, ReplayStep, RetireMode, StartFrom};
use osa_events::store::{Store, SubscriptionId};

use super::super::{
    DeliveryStatus, Job, LONG, Other, StoreUnderTest, claim, outgoing, positions, publish_jobs,
    subscribe,
};
use super::{expect_config, fail, ops, store_now, subscribe_from};

/// How many steps a rule lets a backfill take before it fails.
const STEPS: usize = 100;
/// How long a rule waits before trying a backfill step that was waiting again.
const WAIT: Duration = Duration::from_millis(50);

/// Claims everything due and completes it; returns the positions, in claim order.
async fn work_off<S: StoreUnderTest>(subject: &S, subscription: SubscriptionId) -> Vec<i64> {
    let claimed = claim(subject, subscription, 1000, LONG).await;
    let fences: Vec<_> = claimed.iter().map(|delivery| delivery.fence).collect();
    let completed = subject
        .store()
        .complete(subscription, &fences)
        .await
        .expect("complete");
    assert_eq!(completed, fences.len() as u64);
    positions(&claimed)
}

/// Runs `replay` to its end; returns its steps.
async fn replay_all<S: StoreUnderTest>(subject: &S, replay: &Replay) -> Vec<ReplayStep> {
    let mut steps = Vec::new();
    let (mut after, mut end) = (replay.after_position, None);
    loop {
        let step = ops(subject)
            .replay(replay, after, end)
            .await
            .expect("a replay step");
        steps.push(step);
        if step.done {
            return steps;
        }
        assert!(steps.len() < STEPS, "the replay ends: {steps:?}");
        (after, end) = (step.through, Some(step.end));
    }
}

/// Runs the backfill of `handler` to [`BackfillStep::Done`], waiting when it waits; returns how
/// many deliveries it copied.
async fn backfill_all<S: StoreUnderTest>(subject: &S, handler: &str, chunk: u32) -> u64 {
    let mut copied = 0;
    for _ in 0..STEPS {
        match ops(subject)
            .backfill(handler, chunk)
            .await
            .expect("a backfill step")
        {
            BackfillStep::Done => return copied,
            BackfillStep::Copied { delivered, .. } => copied += delivered,
            BackfillStep::Waiting => subject.pass(WAIT).await,
        }
    }
    panic!("the backfill of `{handler}` did not end in {STEPS} steps");
}

/// A replay reads the log a chunk at a time, up to its end, and delivers the handler's events in
/// log order, due now; an event the handler still has a delivery of is skipped.
pub async fn replay_delivers_a_range_in_log_order_due_now_skipping_existing_rows<
    S: StoreUnderTest,
>(
    subject: &S,
) {
    let subscription = subscribe(subject, "replayed", None).await;
    let batch = [
        outgoing(&Job { n: 0 }),
        outgoing(&Other { n: 0 }),
        outgoing(&Job { n: 1 }),
        outgoing(&Job { n: 2 }),
        outgoing(&Job { n: 3 }),
        outgoing(&Job { n: 4 }),
    ];
    assert_eq!(subject.publish(&batch).await, 6);
    // Jobs at 1, 3, 4, 5 and 6: all handled but 4, which waits out a backoff.
    let claimed = claim(subject, subscription, 10, LONG).await;
    for delivery in &claimed {
        if delivery.fence.position == 4 {
            fail(subject, subscription, delivery, "later", Some(LONG)).await;
        } else {
            subject
                .store()
                .complete(subscription, &[delivery.fence])
                .await
                .unwrap();
        }
    }

    let replay = Replay {
        through_position: Some(5),
        chunk: 2,
        ..Replay::everything("replayed")
    };
    let steps = replay_all(subject, &replay).await;
    let summary: Vec<(u64, u64, i64, i64, bool)> = steps
        .iter()
        .map(|step| {
            (
                step.delivered,
                step.skipped,
                step.through,
                step.end,
                step.done,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(1, 0, 2, 5, false), (1, 1, 4, 5, false), (1, 0, 5, 5, true)],
        "(delivered, skipped, through, end, done) per step of two events"
    );
    assert_eq!(
        work_off(subject, subscription).await,
        [1, 3, 5],
        "due now, in log order; 4 still waits, 6 is past the end"
    );

    let to_head = replay_all(subject, &Replay::everything("replayed")).await;
    let last = to_head.last().unwrap();
    assert_eq!(
        (last.end, last.through, last.done),
        (6, 6, true),
        "the end is the head"
    );
    let delivered: u64 = to_head.iter().map(|step| step.delivered).sum();
    assert_eq!(delivered, 4);
}

/// A replay takes only events published in its time window, and with its routing key.
pub async fn replay_filters_by_publish_time_and_routing_key<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "replay.filters", None).await;
    let early = [
        outgoing(&Job { n: 1 }),
        outgoing(&Job { n: 2 }).with_routing_key("k"),
    ];
    assert_eq!(subject.publish(&early).await, 2);
    subject.pass(Duration::from_millis(200)).await;
    let mid = store_now(subject).await;
    subject.pass(Duration::from_millis(200)).await;
    let late = [
        outgoing(&Job { n: 3 }),
        outgoing(&Job { n: 4 }).with_routing_key("k"),
    ];
    assert_eq!(subject.publish(&late).await, 2);
    assert_eq!(work_off(subject, subscription).await, [1, 2, 3, 4]);

    let keyed = Replay {
        routing_key: Some("k".to_owned()),
        ..Replay::everything("replay.filters")
    };
    replay_all(subject, &keyed).await;
    assert_eq!(
        work_off(subject, subscription).await,
        [2, 4],
        "routing key `k`"
    );
    let after = Replay {
        published_after: Some(mid),
        ..Replay::everything("replay.filters")
    };
    replay_all(subject, &after).await;
    assert_eq!(
        work_off(subject, subscription).await,
        [3, 4],
        "published at or after"
    );
    let before = Replay {
        published_before: Some(mid),
        ..Replay::everything("replay.filters")
    };
    replay_all(subject, &before).await;
    assert_eq!(
        work_off(subject, subscription).await,
        [1, 2],
        "published before"
    );
}

/// A replay refuses an event type the handler cannot decode, a routing key it does not
/// receive, a retired handler, and a chunk out of 1..=100000.
pub async fn replay_refuses_another_event_type_a_retired_handler_and_a_bad_chunk<
    S: StoreUnderTest,
>(
    subject: &S,
) {
    subscribe(subject, "replay.keyed", Some("k")).await;
    publish_jobs(subject, 1).await;
    let ops = ops(subject);
    let typo = Replay {
        event_type: Some(Other::NAME.to_owned()),
        ..Replay::everything("replay.keyed")
    };
    let message = expect_config(ops.replay(&typo, 0, None).await, "another event type");
    assert!(
        message.contains(Other::NAME) && message.contains(Job::NAME),
        "the message names both types: {message}"
    );
    let own = Replay {
        event_type: Some(Job::NAME.to_owned()),
        routing_key: Some("k".to_owned()),
        ..Replay::everything("replay.keyed")
    };
    ops.replay(&own, 0, None)
        .await
        .expect("its own type and key");
    let other_key = Replay {
        routing_key: Some("j".to_owned()),
        ..Replay::everything("replay.keyed")
    };
    expect_config(ops.replay(&other_key, 0, None).await, "another routing key");
    for chunk in [0, 100_001] {
        let bad = Replay {
            chunk,
            ..Replay::everything("replay.keyed")
        };
        expect_config(ops.replay(&bad, 0, None).await, &format!("chunk {chunk}"));
    }
    ops.retire("replay.keyed", RetireMode::IfNotRunning)
        .await
        .unwrap();
    expect_config(
        ops.replay(&Replay::everything("replay.keyed"), 0, None)
            .await,
        "a retired handler",
    );
}

/// A new subscription starting from the beginning, or after a position, receives the history of
/// its type (and routing key) in log order, claimed before what was published after it was
/// registered.
pub async fn a_new_subscription_starting_from_its_history_is_backfilled_first_in_log_order<
    S: StoreUnderTest,
>(
    subject: &S,
) {
    let history = [
        outgoing(&Job { n: 1 }),
        outgoing(&Other { n: 2 }),
        outgoing(&Job { n: 3 }).with_routing_key("k"),
        outgoing(&Job { n: 4 }),
        outgoing(&Job { n: 5 }),
    ];
    assert_eq!(subject.publish(&history).await, 5);
    let everything = subscribe_from(subject, "history.all", None, StartFrom::Beginning).await;
    let later = subscribe_from(subject, "history.after", None, StartFrom::AfterPosition(3)).await;
    let keyed = subscribe_from(subject, "history.keyed", Some("k"), StartFrom::Beginning).await;
    let status = ops(subject).status().await.unwrap();
    assert_eq!(
        status
            .handler("history.all")
            .unwrap()
            .backfill
            .map(|(after, _)| after),
        Some(0),
        "pending, nothing copied yet"
    );
    subject.pass(Duration::from_millis(100)).await;
    publish_jobs(subject, 1).await; // position 6, delivered at once

    assert_eq!(backfill_all(subject, "history.all", 2).await, 4);
    assert_eq!(backfill_all(subject, "history.after", 2).await, 2);
    assert_eq!(backfill_all(subject, "history.keyed", 2).await, 1);
    assert_eq!(
        work_off(subject, everything).await,
        [1, 3, 4, 5, 6],
        "the history first, in log order"
    );
    assert_eq!(
        work_off(subject, later).await,
        [4, 5, 6],
        "after position 3"
    );
    assert_eq!(work_off(subject, keyed).await, [3], "its routing key only");
    let status = ops(subject).status().await.unwrap();
    assert_eq!(
        status.handler("history.all").unwrap().backfill,
        None,
        "done"
    );
}

/// A backfill keeps at most two chunks of copied deliveries open: it waits until the handler
/// works them off (completed, or dead letters, which wait for an operator), then goes on, and
/// ends with [`BackfillStep::Done`].
pub async fn backfill_keeps_at_most_two_chunks_open_and_ends_with_done<S: StoreUnderTest>(
    subject: &S,
) {
    publish_jobs(subject, 16).await;
    let subscription = subscribe_from(subject, "flood", None, StartFrom::Beginning).await;
    let chunk = 2;
    let mut copied = 0;
    let mut waits = 0;
    for _ in 0..STEPS {
        match ops(subject)
            .backfill("flood", chunk)
            .await
            .expect("a backfill step")
        {
            BackfillStep::Done => break,
            BackfillStep::Copied { delivered, end, .. } => {
                copied += delivered;
                assert_eq!(end, 16, "the history ends at the head at creation");
            }
            BackfillStep::Waiting if copied == 0 => subject.pass(WAIT).await,
            BackfillStep::Waiting => {
                let rows = subject.rows(subscription).await;
                let open = rows
                    .iter()
                    .filter(|row| row.status != DeliveryStatus::Dead)
                    .count();
                assert!(
                    (5..=6).contains(&open),
                    "it waits with more than two chunks of two open, and copies none beyond \
                     that: {open} open"
                );
                waits += 1;
                if waits == 1 {
                    work_off(subject, subscription).await;
                } else {
                    for delivery in claim(subject, subscription, 1000, LONG).await {
                        fail(subject, subscription, &delivery, "dead", None).await;
                    }
                }
            }
        }
    }
    assert_eq!(
        waits, 2,
        "sixteen events in chunks of two wait for the handler twice"
    );
    assert_eq!(copied, 16, "the whole history");
    assert_eq!(
        ops(subject).backfill("flood", chunk).await.unwrap(),
        BackfillStep::Done,
        "done stays done"
    );
}

/// A subscription that starts from now has no history to receive.
pub async fn a_start_from_now_subscription_has_no_backfill<S: StoreUnderTest>(subject: &S) {
    publish_jobs(subject, 3).await;
    let subscription = subscribe(subject, "from.now", None).await;
    assert_eq!(
        ops(subject).backfill("from.now", 10).await.unwrap(),
        BackfillStep::Done
    );
    let status = ops(subject).status().await.unwrap();
    assert_eq!(status.handler("from.now").unwrap().backfill, None);
    assert!(subject.rows(subscription).await.is_empty());
}

/// A copy of the history (the backfill of a new subscription, a replay) never delivers a delayed
/// event before its own due time: the copy is due at the later of the two. An event without a
/// delay, or whose time has passed, is due as any copied event.
pub async fn a_copy_of_a_delayed_event_is_not_due_before_its_time<S: StoreUnderTest>(subject: &S) {
    const DELAY: Duration = Duration::from_millis(1500);
    let history = [
        outgoing(&Job { n: 1 }).deliver_after(DELAY).unwrap(),
        outgoing(&Job { n: 2 }),
        outgoing(&Job { n: 3 })
            .deliver_at(std::time::SystemTime::now() - Duration::from_secs(60))
            .unwrap(),
    ];
    assert_eq!(subject.publish(&history).await, 3);
    let backfilled = subscribe_from(subject, "delayed.history", None, StartFrom::Beginning).await;
    let replayed = subscribe(subject, "delayed.replayed", None).await;
    assert_eq!(backfill_all(subject, "delayed.history", 10).await, 3);
    let replay = replay_all(subject, &Replay::everything("delayed.replayed")).await;
    assert_eq!(replay.iter().map(|step| step.delivered).sum::<u64>(), 3);
    for subscription in [backfilled, replayed] {
        assert_eq!(
            work_off(subject, subscription).await,
            [2, 3],
            "the delayed event is not due yet"
        );
    }
    subject.pass(DELAY + Duration::from_millis(200)).await;
    for subscription in [backfilled, replayed] {
        assert_eq!(
            work_off(subject, subscription).await,
            [1],
            "due at its time"
        );
    }
}
