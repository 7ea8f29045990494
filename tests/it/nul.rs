//! NUL characters, which PostgreSQL cannot store in `jsonb` or `text`: refused at publish with a
//! clear error, replaced in stored error text (issue 12, item 9).

use std::sync::Arc;
use std::time::Duration;

use osa_events::prelude::*;
use osa_events::{Error, Outgoing};
use serde::{Deserialize, Serialize};

use crate::support::{Db, eventually};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.nul.note")]
struct Note {
    title: String,
    tags: Vec<String>,
}

/// A regression test: serde_json writes NUL as `\u0000`, which the cast to `jsonb` refuses, so
/// `publish` failed with the server's "unsupported Unicode escape sequence" and aborted the
/// caller's transaction. Now it is refused before anything is sent, naming the event and the
/// field, and the transaction goes on.
#[tokio::test]
async fn a_nul_in_a_payload_is_refused_before_anything_is_written() {
    let db = Db::new().await;
    let mut tx = db.pool().begin().await.unwrap();
    let note = Note {
        title: "fine".into(),
        tags: vec!["ok".into(), "bad\0tag".into()],
    };
    let error = osa_events::publish(&mut *tx, &note).await.unwrap_err();
    assert!(
        matches!(
            &error,
            Error::NulCharacter { event_type: "test.nul.note", part: "payload", path }
                if path == "$.tags[1]"
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "cannot publish `test.nul.note`: its payload holds a NUL character (\\u0000) at \
         `$.tags[1]`, which PostgreSQL cannot store in jsonb (remove or replace it before publishing)"
    );
    let (alive,): (i32,) = sqlx::query_as("select 1")
        .fetch_one(&mut *tx)
        .await
        .expect("the caller's transaction is not aborted");
    assert_eq!(alive, 1);
    tx.commit().await.unwrap();
    let (events,): (i64,) = sqlx::query_as("select count(*) from osa_events.events")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(events, 0);
}

#[test]
fn a_nul_in_metadata_is_refused_with_its_path() {
    let outgoing = Outgoing::new(&Note {
        title: "fine".into(),
        tags: Vec::new(),
    })
    .unwrap();
    let error = outgoing
        .with_metadata(
            osa_events::Metadata::new().with_extra("trace", serde_json::json!({ "span\0id": "1" })),
        )
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::NulCharacter { part: "metadata", path, .. } if path == r#"$.trace["span\u0000id"]"#
        ),
        "{error:?}"
    );
}

/// The handler's error quotes a NUL byte of its input.
#[event_handler(name = "test.nul.rejects", retries = 0)]
async fn rejects(
    note: Note,
    seen: State<std::sync::atomic::AtomicUsize>,
) -> Result<(), HandlerError> {
    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Err(HandlerError::permanent(format!(
        "cannot parse {}\0 input",
        note.title
    )))
}

/// A regression test: a handler error holding a NUL made the batch's failure statement fail
/// ("invalid byte sequence for encoding UTF8: 0x00"), so the delivery was never dead-lettered and
/// ran again at every claim expiry. Now it is dead at once, with the NUL replaced.
#[tokio::test]
async fn a_handler_error_with_nul_is_dead_lettered_with_a_replacement() {
    let db = Db::new().await;
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let running = db
        .start(
            &["test.nul.rejects"],
            Resources::new().with_arc(Arc::clone(&seen)),
        )
        .await;
    osa_events::publish(
        db.pool(),
        &Note {
            title: "t".into(),
            tags: Vec::new(),
        },
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "a dead letter", || async {
        db.deliveries(Some("dead")).await == 1
    })
    .await;
    running.stop().await;
    let dead = db.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].1.ends_with("cannot parse t\u{fffd} input"),
        "{:?}",
        dead[0].1
    );
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
}
