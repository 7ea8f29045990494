//! Hostile inputs on the in-memory store: payloads whose decode error would quote a secret, and
//! error text with NUL characters (issue 12, items 9 and 10).

use osa_events::prelude::*;
use osa_events::store::ProjectionStore;
use osa_events_testing::{Harness, RawEvent};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "inputs.charge")]
struct Charge {
    card: Card,
}

#[derive(Serialize, Deserialize, Debug)]
struct Card {
    number: u64,
}

#[event_handler(name = "inputs.charge")]
async fn charge(charge: Charge) -> Result<(), HandlerError> {
    let _ = charge.card.number;
    Ok(())
}

const SECRET: &str = "4111-1111-1111-1111";

/// A regression test: the dead letter of a payload that does not decode quoted serde's message,
/// value included (`invalid type: string "4111-1111-1111-1111", expected u64`), in `last_error`
/// and the ERROR log. Now it says where and what, never the value.
#[tokio::test]
async fn a_decode_error_names_the_field_and_type_but_not_the_value() {
    let mut harness = Harness::builder()
        .only(["inputs.charge"])
        .build()
        .await
        .expect("a harness");
    let payload = format!(r#"{{"card": {{"number": "{SECRET}"}}}}"#);
    harness
        .store()
        .publish_raw(&[RawEvent::from_json(Charge::NAME, 1, payload)]);
    harness.drain().await;
    let dead = harness.deliveries("inputs.charge");
    assert_eq!(dead.len(), 1);
    let error = dead[0]
        .last_error
        .as_deref()
        .expect("the dead letter's error");
    assert!(!error.contains(SECRET), "the value leaked: {error}");
    assert!(
        error.ends_with(
            "the payload does not decode as `it::inputs::Charge` (version 1): at $.card.number: \
             invalid type: string, expected u64"
        ),
        "{error}"
    );
}

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "inputs.line")]
struct Line {
    text: String,
}

#[projection(name = "inputs.lines")]
async fn lines(lines: Batch<Line>) -> Result<(), HandlerError> {
    let first = lines.iter().next().map_or("", |line| line.text.as_str());
    Err(HandlerError::retry(format!("cannot store {first}\0 today")))
}

/// A projection's failure is recorded with each NUL replaced, as PostgreSQL must store it.
#[tokio::test]
async fn a_projection_error_with_nul_is_recorded_with_a_replacement() {
    let mut harness = Harness::builder()
        .only(["inputs.lines"])
        .build()
        .await
        .expect("a harness");
    harness.publish(&Line { text: "a".into() });
    harness.project("inputs.lines").await.unwrap_err();
    let status = harness
        .store()
        .status("inputs.lines", &[Line::NAME])
        .await
        .unwrap();
    let last_error = status.last_error.expect("the failure is recorded");
    assert!(!last_error.contains('\0'), "{last_error:?}");
    assert!(
        last_error.ends_with("cannot store a\u{fffd} today"),
        "{last_error:?}"
    );
}
