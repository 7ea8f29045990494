//! Rules of projections: one leader per name, batches in log order after the checkpoint, and a
//! checkpoint that moves only by its leader's commit or a reset.
//!
//! On PostgreSQL a projection reads only what every running transaction of the cluster has left
//! behind it (see `osa-events-postgres/src/projection/read.rs`), and a session ends a moment after its
//! connection closes, so the rules that wait for events or for a lock to go free wait up to
//! [`PATIENCE`] instead of asserting at once. The in-memory store passes them at once.

use std::time::Duration;

use osa_events::{Error, Event, ProjectionStatus, ResetTo};

use osa_events::store::{Leadership, OpenBatch, ProjectionStore};

use super::{Job, Other, StoreUnderTest, outgoing, publish_jobs};

/// The projection of the rules.
const NAME: &str = "contract.projection";
/// What it reads.
const TYPES: &[&str] = &[Job::NAME];
/// How long a rule waits for what PostgreSQL does a moment later.
const PATIENCE: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_millis(20);

/// Leads [`NAME`] as `holder`, waiting for the previous leader's session to end.
async fn lead<S: StoreUnderTest>(subject: &S, holder: &str) -> Box<dyn Leadership> {
    let started = tokio::time::Instant::now();
    loop {
        let attempt = subject.store().try_lead(NAME, holder, Duration::ZERO).await;
        if let Some(leadership) = attempt.expect("try to lead") {
            return leadership;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "`{holder}` could not lead `{NAME}` within {PATIENCE:?}"
        );
        tokio::time::sleep(RETRY).await;
    }
}

/// The next batch, once it holds `count` events (re-read while older transactions hold it back).
async fn read(leadership: &mut dyn Leadership, limit: u32, count: usize) -> OpenBatch {
    let started = tokio::time::Instant::now();
    loop {
        let batch = leadership
            .next_batch(TYPES, limit)
            .await
            .expect("read a batch");
        if batch.events.len() >= count || started.elapsed() >= PATIENCE {
            assert_eq!(batch.events.len(), count, "the batch's size");
            return batch;
        }
        drop(batch);
        tokio::time::sleep(RETRY).await;
    }
}

/// Reads the next batch of `count` events and commits it; returns its positions.
async fn apply(leadership: &mut dyn Leadership, count: usize) -> Vec<i64> {
    let limit = u32::try_from(count).expect("a small batch");
    let batch = read(leadership, limit, count).await;
    let applied = positions(&batch);
    leadership
        .commit(batch.advance, batch.transaction)
        .await
        .expect("commit a batch");
    applied
}

fn positions(batch: &OpenBatch) -> Vec<i64> {
    batch
        .events
        .iter()
        .map(|event| event.fence.position)
        .collect()
}

async fn status<S: StoreUnderTest>(subject: &S) -> ProjectionStatus {
    subject
        .store()
        .status(NAME, TYPES)
        .await
        .expect("projection status")
}

/// Waits until the status satisfies `condition`; returns it.
async fn status_when<S: StoreUnderTest>(
    subject: &S,
    what: &str,
    condition: impl Fn(&ProjectionStatus) -> bool,
) -> ProjectionStatus {
    let started = tokio::time::Instant::now();
    loop {
        let status = status(subject).await;
        if condition(&status) {
            return status;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}; last status {status:?}"
        );
        tokio::time::sleep(RETRY).await;
    }
}

/// While a leadership of a projection holds, nobody else can lead it; other projections are
/// independent.
pub async fn one_leader_per_projection<S: StoreUnderTest>(subject: &S) {
    let store = subject.store();
    let _first = lead(subject, "first").await;
    let second = store
        .try_lead(NAME, "second", Duration::ZERO)
        .await
        .expect("try to lead");
    assert!(second.is_none(), "a second leader of `{NAME}`");
    let other = store
        .try_lead("contract.elsewhere", "second", Duration::ZERO)
        .await;
    assert!(
        other.expect("try to lead").is_some(),
        "another projection has its own leader"
    );
    assert_eq!(status(subject).await.leader.as_deref(), Some("first"));
}

/// A resigned leadership, or a dropped one (a process that died), lets the next holder lead.
pub async fn a_leadership_that_ends_passes_on<S: StoreUnderTest>(subject: &S) {
    let first = lead(subject, "first").await;
    first.resign().await;
    let second = lead(subject, "second").await;
    assert_eq!(status(subject).await.leader.as_deref(), Some("second"));
    drop(second);
    let _third = lead(subject, "third").await;
    assert_eq!(status(subject).await.leader.as_deref(), Some("third"));
}

/// A candidate that waits for the leadership gives up when its wait is over while the leader
/// holds on, and takes over the moment the leadership ends, long before its wait is over.
pub async fn a_waiting_candidate_takes_over_when_the_leadership_ends<S: StoreUnderTest>(
    subject: &S,
) {
    let first = lead(subject, "first").await;
    let store = subject.store();
    let (gave_up, ()) = tokio::join!(
        store.try_lead(NAME, "second", Duration::from_millis(200)),
        subject.pass(Duration::from_millis(300)),
    );
    assert!(
        gave_up.expect("wait for the leadership").is_none(),
        "the leader still holds"
    );

    let started = tokio::time::Instant::now();
    let (second, ()) = tokio::join!(
        store.try_lead(NAME, "second", Duration::from_secs(60)),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            first.resign().await;
        }
    );
    let _second = second
        .expect("wait for the leadership")
        .expect("the waiting candidate leads once the leadership ends");
    assert!(
        started.elapsed() < PATIENCE,
        "took over only after {:?}",
        started.elapsed()
    );
    assert_eq!(status(subject).await.leader.as_deref(), Some("second"));
}

/// Batches hold the projection's event types only, in log order, at most `limit`, starting after
/// the checkpoint; a caught-up read is empty and moves nothing.
pub async fn batches_follow_the_log_after_the_checkpoint<S: StoreUnderTest>(subject: &S) {
    let mut first_publish: Vec<_> = (0..3).map(|n| outgoing(&Job { n })).collect();
    first_publish.push(outgoing(&Other { n: 99 }));
    first_publish.extend((3..5).map(|n| outgoing(&Job { n })));
    assert_eq!(subject.publish(&first_publish).await, 6);
    let second_publish: Vec<_> = (5..8).map(|n| outgoing(&Job { n })).collect();
    assert_eq!(subject.publish(&second_publish).await, 3);

    let mut leadership = lead(subject, "leader").await;
    let mut seen: Vec<u32> = Vec::new();
    let mut previous = osa_events::store::Checkpoint::default();
    for size in [3, 3, 2] {
        let batch = read(&mut *leadership, 3, size).await;
        assert_eq!(
            batch.advance.from, previous,
            "each batch starts at the checkpoint"
        );
        let last = batch.events.last().expect("a batch with events");
        assert_eq!(batch.advance.to.position, last.fence.position);
        assert!(batch.advance.to > batch.advance.from);
        assert!(
            positions(&batch).windows(2).all(|pair| pair[0] < pair[1]),
            "positions ascend within a batch: {:?}",
            positions(&batch)
        );
        for event in &batch.events {
            assert_eq!(event.event_type, Job::NAME, "only the projection's types");
            let job: Job = serde_json::from_str(&event.payload).expect("a job payload");
            seen.push(job.n);
        }
        previous = batch.advance.to;
        leadership
            .commit(batch.advance, batch.transaction)
            .await
            .expect("commit");
    }
    assert_eq!(seen, (0..8).collect::<Vec<_>>(), "every job once, in order");
    let caught_up = read(&mut *leadership, 3, 0).await;
    assert_eq!(caught_up.advance.from, previous);
    assert_eq!(
        caught_up.advance.to, previous,
        "an empty batch moves nothing"
    );
    assert_eq!(status(subject).await.position, previous.position);
}

/// A batch that is not committed (dropped, or failed and recorded) leaves the checkpoint where it
/// was: the next read returns the same events. A commit clears the recorded error.
pub async fn an_uncommitted_batch_leaves_the_checkpoint<S: StoreUnderTest>(subject: &S) {
    publish_jobs(subject, 3).await;
    let mut leadership = lead(subject, "leader").await;
    let abandoned = read(&mut *leadership, 2, 2).await;
    let first_read = positions(&abandoned);
    drop(abandoned);
    leadership
        .record_failure("the read model is down")
        .await
        .expect("record a failure");
    let failed = status(subject).await;
    assert_eq!(failed.position, 0, "a failed batch moves nothing");
    assert_eq!(failed.last_error.as_deref(), Some("the read model is down"));

    let again = read(&mut *leadership, 2, 2).await;
    assert_eq!(positions(&again), first_read, "the same events again");
    let to = again.advance.to;
    leadership
        .commit(again.advance, again.transaction)
        .await
        .expect("commit");
    let committed = status(subject).await;
    assert_eq!(committed.position, to.position);
    assert_eq!(committed.commit_seq, to.commit_seq);
    assert_eq!(committed.last_error, None, "a commit clears the last error");
}

/// A new leader continues from the checkpoint its predecessor committed.
pub async fn a_new_leader_resumes_from_the_checkpoint<S: StoreUnderTest>(subject: &S) {
    publish_jobs(subject, 5).await;
    let mut first = lead(subject, "first").await;
    let batch = read(&mut *first, 2, 2).await;
    first
        .commit(batch.advance, batch.transaction)
        .await
        .expect("commit");
    let uncommitted = read(&mut *first, 2, 2).await;
    let expected_next = positions(&uncommitted);
    // The leader dies with a batch in hand.
    drop(uncommitted);
    drop(first);
    let mut second = lead(subject, "second").await;
    let rest = apply(&mut *second, 3).await;
    assert_eq!(
        rest[..2],
        expected_next,
        "resumes right after the checkpoint"
    );
}

/// A deposed leader (its session ended) can neither commit the batch it holds nor read another;
/// the next leader reads that batch again.
pub async fn a_deposed_leader_writes_nothing<S: StoreUnderTest>(subject: &S) {
    publish_jobs(subject, 4).await;
    let mut deposed = lead(subject, "deposed").await;
    let committed = apply(&mut *deposed, 2).await;
    let held = read(&mut *deposed, 2, 2).await;
    let held_positions = positions(&held);
    assert!(subject.depose(NAME).await, "somebody led `{NAME}`");

    let refused = deposed.commit(held.advance, held.transaction).await;
    assert!(refused.is_err(), "a deposed leader's commit is refused");
    let read_again = deposed.next_batch(TYPES, 2).await;
    assert!(
        read_again.is_err(),
        "a deposed leader cannot read: {read_again:?}"
    );
    assert_eq!(status(subject).await.position, committed[1]);

    let mut next = lead(subject, "next").await;
    assert_eq!(apply(&mut *next, 2).await, held_positions);
}

/// A reset rewinds the checkpoint to the beginning or to just after a position, and refuses a
/// position with no event.
pub async fn a_reset_rewinds_the_checkpoint<S: StoreUnderTest>(subject: &S) {
    publish_jobs(subject, 4).await;
    let mut leadership = lead(subject, "leader").await;
    let all = apply(&mut *leadership, 4).await;
    let store = subject.store();

    store
        .reset(NAME, ResetTo::AfterPosition(all[1]))
        .await
        .expect("reset after a position");
    assert_eq!(status(subject).await.position, all[1]);
    assert_eq!(positions(&read(&mut *leadership, 10, 2).await), all[2..]);

    store
        .reset(NAME, ResetTo::Beginning)
        .await
        .expect("reset to the beginning");
    assert_eq!(status(subject).await.position, 0);
    assert_eq!(positions(&read(&mut *leadership, 10, 4).await), all);

    let nowhere = store
        .reset(NAME, ResetTo::AfterPosition(all[3] + 1_000))
        .await;
    assert!(
        matches!(nowhere, Err(Error::Config(_))),
        "a reset to no event is refused: {nowhere:?}"
    );
}

/// A reset made while a batch is being applied stands: the batch's commit does not overwrite it.
pub async fn a_reset_during_a_batch_stands<S: StoreUnderTest>(subject: &S) {
    publish_jobs(subject, 3).await;
    let mut leadership = lead(subject, "leader").await;
    let batch = read(&mut *leadership, 10, 3).await;
    let store = subject.store();
    // PostgreSQL: the reset waits for the batch's lock on the checkpoint, then overwrites it.
    // In memory: the reset goes first, and the commit leaves it alone.
    let (reset, committed) = tokio::join!(store.reset(NAME, ResetTo::Beginning), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        leadership.commit(batch.advance, batch.transaction).await
    });
    reset.expect("reset");
    committed.expect("the batch's commit");
    assert_eq!(status(subject).await.position, 0, "the reset stands");
    assert_eq!(read(&mut *leadership, 10, 3).await.events.len(), 3);
}

/// The status shows the checkpoint, the lag (events of its types not applied, and the age of the
/// oldest), the leader and the last error, also before the projection ever ran.
pub async fn the_status_shows_checkpoint_lag_and_leader<S: StoreUnderTest>(subject: &S) {
    let mut batch: Vec<_> = (0..3).map(|n| outgoing(&Job { n })).collect();
    batch.push(outgoing(&Other { n: 3 }));
    assert_eq!(subject.publish(&batch).await, 4);

    let before = status_when(subject, "lag of a projection that never ran", |status| {
        status.lag == 3
    })
    .await;
    assert_eq!(
        (before.position, before.leader.as_deref()),
        (0, None),
        "never ran"
    );
    assert!(
        before.oldest_unapplied.is_some(),
        "the age of its oldest unapplied event"
    );

    let mut leadership = lead(subject, "leader").await;
    assert_eq!(status(subject).await.leader.as_deref(), Some("leader"));
    let applied = apply(&mut *leadership, 3).await;
    let after = status(subject).await;
    assert_eq!((after.position, after.lag), (applied[2], 0));
    assert_eq!(after.oldest_unapplied, None, "caught up: nothing waits");
    leadership.record_failure("boom").await.expect("record");
    assert_eq!(status(subject).await.last_error.as_deref(), Some("boom"));

    leadership.resign().await;
    status_when(subject, "no leader after resigning", |status| {
        status.leader.is_none()
    })
    .await;
}

/// A projection's event types are recorded with its checkpoint: a projection at the beginning
/// takes a new set as it is; one past the beginning is refused another set (the events of an added
/// type before its checkpoint were never applied), until a reset or an acknowledgement.
pub async fn a_changed_event_type_set_is_refused_until_reset_or_acknowledged<S: StoreUnderTest>(
    subject: &S,
) {
    const WIDER: &[&str] = &[Job::NAME, "contract.other"];
    let store = subject.store();
    store
        .record_event_types(NAME, WIDER)
        .await
        .expect("a new projection records its set");
    store
        .record_event_types(NAME, TYPES)
        .await
        .expect("at the beginning, another set is taken as it is");
    publish_jobs(subject, 2).await;
    let mut leadership = lead(subject, "leader").await;
    apply(&mut *leadership, 2).await;
    leadership.resign().await;
    store
        .record_event_types(NAME, TYPES)
        .await
        .expect("the same set again");
    let refused = store.record_event_types(NAME, WIDER).await;
    match refused {
        Err(Error::ProjectionEventTypesChanged { stored, now, .. }) => {
            assert_eq!(stored, [Job::NAME]);
            assert_eq!(now, [Job::NAME, "contract.other"], "sorted");
        }
        other => panic!("a changed set past the beginning is refused: {other:?}"),
    }
    store
        .acknowledge_event_types(NAME)
        .await
        .expect("acknowledge");
    store
        .record_event_types(NAME, WIDER)
        .await
        .expect("an acknowledged change is recorded");
    assert_eq!(
        status(subject).await.position,
        2,
        "acknowledging does not move the checkpoint"
    );
    assert!(store.record_event_types(NAME, TYPES).await.is_err());
    store
        .reset(NAME, ResetTo::AfterPosition(1))
        .await
        .expect("reset");
    store
        .record_event_types(NAME, TYPES)
        .await
        .expect("after a reset, the new set is recorded");
}
