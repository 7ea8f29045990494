//! Event versions on PostgreSQL: a handler of version 2 handles the version-1 rows old code
//! published, upcast; during a rolling deploy, old code defers the version-2 events it cannot
//! read (pending, attempt not counted, never dead) until new code takes them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use osa_events::prelude::*;
use serde::{Deserialize, Serialize};

use crate::support::{Db, eventually};

const WAIT: Duration = Duration::from_secs(20);

/// Version 1, as old code published it.
#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.versions.placed")]
struct PlacedV1 {
    id: u64,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "test.versions.placed", version = 2, previous = PlacedV1)]
struct Placed {
    id: u64,
    currency: String,
}

impl From<PlacedV1> for Placed {
    fn from(v1: PlacedV1) -> Self {
        Self {
            id: v1.id,
            currency: "EUR".into(),
        }
    }
}

/// What each handler saw: the event and the attempt.
struct Seen<E>(Mutex<Vec<(E, u32)>>);

impl<E> Default for Seen<E> {
    fn default() -> Self {
        Self(Mutex::new(Vec::new()))
    }
}

impl<E: Clone> Seen<E> {
    fn record(&self, event: &E, ctx: &Ctx) {
        self.0.lock().unwrap().push((event.clone(), ctx.attempt()));
    }

    fn all(&self) -> Vec<(E, u32)> {
        self.0.lock().unwrap().clone()
    }
}

#[event_handler(name = "versions.placed", poll = "20ms")]
async fn on_placed(
    placed: Placed,
    seen: State<Seen<Placed>>,
    ctx: Ctx,
) -> Result<(), HandlerError> {
    seen.record(&placed, &ctx);
    Ok(())
}

#[tokio::test]
async fn a_handler_of_version_2_handles_version_1_rows_upcast() {
    let db = Db::new().await;
    let seen = Arc::new(Seen::<Placed>::default());
    let running = db
        .start(
            &["versions.placed"],
            Resources::new().with_arc(seen.clone()),
        )
        .await;
    let old = osa_events::Outgoing::new(&PlacedV1 { id: 1 }).unwrap();
    assert_eq!(old.event_version(), 1);
    osa_events::publish_batch(db.pool(), &[old]).await.unwrap();
    osa_events::publish(
        db.pool(),
        &Placed {
            id: 2,
            currency: "USD".into(),
        },
    )
    .await
    .unwrap();
    eventually(WAIT, "both events handled", || async {
        db.deliveries(None).await == 0 && seen.all().len() == 2
    })
    .await;
    running.stop().await;
    let versions: Vec<i32> =
        sqlx::query_scalar("select event_version from osa_events.events order by position")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(versions, [1, 2], "the log keeps what was published");
    let mut handled = seen.all();
    handled.sort_by_key(|(placed, _)| placed.id);
    let placed = |id, currency: &str| Placed {
        id,
        currency: currency.into(),
    };
    assert_eq!(handled, [(placed(1, "EUR"), 1), (placed(2, "USD"), 1)]);
}

/// What the old code knows.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "test.versions.shipped")]
struct ShippedV1 {
    id: u64,
}

/// What the new code publishes and reads.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "test.versions.shipped", version = 2, previous = ShippedV1)]
struct Shipped {
    id: u64,
    carrier: String,
}

impl From<ShippedV1> for Shipped {
    fn from(v1: ShippedV1) -> Self {
        Self {
            id: v1.id,
            carrier: "unknown".into(),
        }
    }
}

#[event_handler(name = "versions.old", retries = 0, backoff = "50ms", poll = "20ms")]
async fn old_code(
    shipped: ShippedV1,
    seen: State<Seen<ShippedV1>>,
    ctx: Ctx,
) -> Result<(), HandlerError> {
    seen.record(&shipped, &ctx);
    Ok(())
}

#[event_handler(name = "versions.new", retries = 0, poll = "20ms")]
async fn new_code(
    shipped: Shipped,
    seen: State<Seen<Shipped>>,
    ctx: Ctx,
) -> Result<(), HandlerError> {
    seen.record(&shipped, &ctx);
    Ok(())
}

/// `(status, attempts, last_error)` of the one delivery.
async fn delivery(db: &Db) -> (String, i32, Option<String>) {
    sqlx::query_as("select status, attempts, last_error from osa_events.deliveries")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn during_a_rolling_deploy_old_code_defers_a_newer_version_until_new_code_takes_it() {
    let db = Db::new().await;
    let old_seen = Arc::new(Seen::<ShippedV1>::default());
    let old = db
        .start(
            &["versions.old"],
            Resources::new().with_arc(old_seen.clone()),
        )
        .await;
    let shipped = Shipped {
        id: 7,
        carrier: "post".into(),
    };
    osa_events::publish(db.pool(), &shipped).await.unwrap();
    eventually(WAIT, "the old code deferred the event", || async {
        delivery(&db).await.2.is_some()
    })
    .await;
    // With `retries = 0` a counted failure would be dead at once; let it be claimed a few times.
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.stop().await;
    let (status, attempts, error) = delivery(&db).await;
    let error = error.unwrap();
    assert_eq!(status, "pending", "{error}");
    assert_eq!(attempts, 0, "deferrals are not counted: {error}");
    assert!(
        error.contains(
            "version 2 of `test.versions.shipped` is newer than this handler's version 1"
        ) && error.contains("a deploy in progress?"),
        "{error}"
    );
    assert!(old_seen.all().is_empty(), "the old handler never ran");

    // The deploy completes: the new code takes over the same subscription.
    sqlx::query(
        "update osa_events.subscriptions set name = 'versions.new' where name = 'versions.old'",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let new_seen = Arc::new(Seen::<Shipped>::default());
    let new = db
        .start(
            &["versions.new"],
            Resources::new().with_arc(new_seen.clone()),
        )
        .await;
    eventually(WAIT, "the new code handled the event", || async {
        db.deliveries(None).await == 0
    })
    .await;
    new.stop().await;
    assert_eq!(
        new_seen.all(),
        [(shipped, 1)],
        "handled at its first counted attempt"
    );
}
