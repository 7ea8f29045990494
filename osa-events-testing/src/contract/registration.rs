//! Rules of registration: a stored subscription's event type and routing key change only when
//! re-pointed at a higher revision, so an older process cannot revert a newer one's registration.

use osa_events::{Error, Event, SubscriptionConflict};

use osa_events::store::{Store, Subscription};

use super::{Job, Other, StoreUnderTest, outgoing, publish_jobs};

/// A subscription `name` to `event_type` with `routing_key` at `revision`.
fn subscription(
    name: &str,
    event_type: &str,
    routing_key: Option<&str>,
    revision: u32,
) -> Subscription {
    Subscription {
        name: name.to_owned(),
        event_type: event_type.to_owned(),
        routing_key: routing_key.map(str::to_owned),
        config: serde_json::json!({ "revision": revision }),
        revision,
        start_from: Default::default(),
        ordered: None,
    }
}

/// Registering a known name with another event type or routing key at the same revision fails
/// with [`Error::SubscriptionConflict`] naming both sides, and changes nothing: not the stored
/// subscription, nor any other subscription of the same call.
pub async fn a_conflicting_registration_is_refused_and_changes_nothing<S: StoreUnderTest>(
    subject: &S,
) {
    let store = subject.store();
    let ids = store
        .register(&[subscription("orders", Job::NAME, None, 1)])
        .await
        .unwrap();

    for conflicting in [
        subscription("orders", Other::NAME, None, 1),
        subscription("orders", Job::NAME, Some("eu"), 1),
    ] {
        // `fresh` comes first: the store must undo it when `orders` conflicts.
        let refused = store
            .register(&[
                subscription("fresh", Job::NAME, None, 1),
                conflicting.clone(),
            ])
            .await;
        match refused {
            Err(Error::SubscriptionConflict(conflict)) => assert_eq!(
                *conflict,
                SubscriptionConflict {
                    handler: "orders".to_owned(),
                    stored_event_type: Job::NAME.to_owned(),
                    stored_routing_key: None,
                    stored_revision: 1,
                    event_type: conflicting.event_type,
                    routing_key: conflicting.routing_key,
                    revision: 1,
                },
                "both sides"
            ),
            other => panic!("expected a subscription conflict, got {other:?}"),
        }
    }

    publish_jobs(subject, 1).await;
    assert_eq!(
        subject.rows(ids[0]).await.len(),
        1,
        "`orders` still receives every job"
    );
    let fresh = store
        .register(&[subscription("fresh", Job::NAME, None, 1)])
        .await
        .unwrap();
    assert_eq!(
        subject.rows(fresh[0]).await.len(),
        0,
        "`fresh` did not exist when the job was published: the refused call created nothing"
    );
    let again = store
        .register(&[subscription("orders", Job::NAME, None, 1)])
        .await
        .unwrap();
    assert_eq!(
        again, ids,
        "the same registration is still accepted, same id"
    );
}

/// A higher revision re-points a subscription (same id, open deliveries kept); a lower revision
/// can never revert it (a conflict naming the stored revision), and one that agrees with it is
/// accepted without lowering the stored revision.
pub async fn a_higher_revision_repoints_and_a_lower_one_cannot_revert<S: StoreUnderTest>(
    subject: &S,
) {
    let store = subject.store();
    let ids = store
        .register(&[subscription("orders", Job::NAME, None, 1)])
        .await
        .unwrap();
    publish_jobs(subject, 1).await;

    let repointed = store
        .register(&[subscription("orders", Job::NAME, Some("eu"), 2)])
        .await
        .unwrap();
    assert_eq!(repointed, ids, "re-pointed in place");
    assert_eq!(
        subject.rows(ids[0]).await.len(),
        1,
        "its open delivery stays"
    );
    let eu = outgoing(&Job { n: 7 }).with_routing_key("eu");
    assert_eq!(subject.publish(&[eu, outgoing(&Job { n: 8 })]).await, 2);
    assert_eq!(
        subject.rows(ids[0]).await.len(),
        2,
        "now only `eu` jobs are delivered"
    );

    match store
        .register(&[subscription("orders", Job::NAME, None, 1)])
        .await
    {
        Err(Error::SubscriptionConflict(conflict))
            if conflict.stored_revision == 2
                && conflict.revision == 1
                && conflict.stored_routing_key.as_deref() == Some("eu")
                && conflict.routing_key.is_none() => {}
        other => panic!("an older registration must not revert the subscription: {other:?}"),
    }
    let agreeing = store
        .register(&[subscription("orders", Job::NAME, Some("eu"), 1)])
        .await
        .unwrap();
    assert_eq!(
        agreeing, ids,
        "an older registration that agrees is accepted"
    );
    assert!(
        matches!(
            store
                .register(&[subscription("orders", Job::NAME, None, 2)])
                .await,
            Err(Error::SubscriptionConflict(conflict)) if conflict.stored_revision == 2
        ),
        "the stored revision is still 2: the same revision cannot re-point"
    );
    let eu = outgoing(&Job { n: 9 }).with_routing_key("eu");
    assert_eq!(subject.publish(&[eu, outgoing(&Job { n: 10 })]).await, 2);
    assert_eq!(
        subject.rows(ids[0]).await.len(),
        3,
        "still re-pointed at `eu` after the refused and the agreeing registrations"
    );
}
