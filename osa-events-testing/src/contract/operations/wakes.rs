//! Rules of wake-ups: the operations that give a handler work tell its workers.

use std::time::Duration;

use osa_events::operations::{Replay, Selector};
use osa_events::store::{Store, SubscriptionId, WakeUps};

use super::super::{LONG, StoreUnderTest, claim_one, publish_jobs, subscribe};
use super::{kill, ops};

/// Waits up to 5 s for a hint naming `subscription` (other hints pass by).
async fn woken(wake_ups: &mut WakeUps, subscription: SubscriptionId, by: &str) {
    let wait = async {
        loop {
            let hint = wake_ups.next().await.expect("the wake-up source works");
            if hint == Some(subscription) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| panic!("{by} wakes the handler's workers within 5 s"));
}

/// Retrying dead letters, resuming and replaying each wake the handler's listening workers.
pub async fn retry_resume_and_replay_wake_listening_workers<S: StoreUnderTest>(subject: &S) {
    let subscription = subscribe(subject, "wakes", None).await;
    publish_jobs(subject, 1).await;
    kill(subject, subscription, "dead").await;
    let Some(listening) = subject.store().wake_ups() else {
        return; // polling alone is allowed
    };
    let mut wake_ups = listening.await.expect("start listening");
    let ops = ops(subject);

    assert_eq!(ops.retry_dead(&Selector::default()).await.unwrap(), 1);
    woken(&mut wake_ups, subscription, "retrying a dead letter").await;

    assert!(ops.pause("wakes").await.unwrap());
    assert!(ops.resume("wakes").await.unwrap());
    woken(&mut wake_ups, subscription, "resuming").await;

    let delivery = claim_one(subject, subscription, LONG).await;
    let completed = subject
        .store()
        .complete(subscription, &[delivery.fence])
        .await
        .unwrap();
    assert_eq!(completed, 1);
    let step = ops
        .replay(&Replay::everything("wakes"), 0, None)
        .await
        .unwrap();
    assert_eq!(step.delivered, 1);
    woken(&mut wake_ups, subscription, "a replay that delivers").await;
}
