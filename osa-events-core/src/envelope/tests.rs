use serde_json::json;
use uuid::Uuid;

use super::cause::Cause;
use super::*;

fn stored(metadata: &Metadata) -> Value {
    serde_json::to_value(metadata).unwrap()
}

#[test]
fn known_fields_and_extras_are_stored_as_one_object() {
    let metadata = Metadata::new()
        .with_correlation_id("req-42")
        .with_causation_id("cmd-7")
        .with_trace_context(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            Some("vendor=x".into()),
        )
        .with_extra("tenant", "acme");
    assert_eq!(
        stored(&metadata),
        json!({
            "correlation_id": "req-42",
            "causation_id": "cmd-7",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=x",
            "tenant": "acme",
        })
    );
    let text = serde_json::to_string(&metadata).unwrap();
    assert_eq!(
        Metadata::from_stored(&text),
        metadata,
        "reads back as written"
    );
}

#[test]
fn reading_stored_metadata_never_fails() {
    assert_eq!(Metadata::from_stored("{}"), Metadata::new());
    assert_eq!(Metadata::from_stored("[1, 2]"), Metadata::new());
    assert_eq!(Metadata::from_stored("not json"), Metadata::new());
    // A known field that is not a string stays, as an extra field of that name.
    let odd = Metadata::from_stored(r#"{"correlation_id": 42, "trace": {"a": 1}}"#);
    assert_eq!(odd.correlation_id(), None);
    assert_eq!(odd.extra("correlation_id"), Some(&json!(42)));
    assert_eq!(
        stored(&odd),
        json!({ "correlation_id": 42, "trace": { "a": 1 } })
    );
}

#[test]
fn a_known_field_is_never_stored_twice() {
    let metadata = Metadata::new()
        .with_extra("correlation_id", 42)
        .with_correlation_id("req-1");
    assert_eq!(stored(&metadata), json!({ "correlation_id": "req-1" }));
    let metadata = Metadata::new()
        .with_correlation_id("req-1")
        .with_extra("correlation_id", json!({ "nested": true }));
    assert_eq!(metadata.correlation_id(), None);
    assert_eq!(
        stored(&metadata),
        json!({ "correlation_id": { "nested": true } })
    );
    let metadata = Metadata::new().with_extra("causation_id", "evt-1");
    assert_eq!(
        metadata.causation_id(),
        Some("evt-1"),
        "a string sets the field"
    );
    assert!(metadata.extras().is_empty());
}

#[test]
fn metadata_from_a_json_value_must_be_an_object() {
    let metadata = Metadata::try_from(json!({ "correlation_id": "c", "k": [1] })).unwrap();
    assert_eq!(metadata.correlation_id(), Some("c"));
    assert_eq!(metadata.extra("k"), Some(&json!([1])));
    let error = Metadata::try_from(json!("just text")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid configuration: event metadata must be a JSON object, found a string"
    );
}

#[test]
fn a_cause_fills_only_what_is_unset() {
    let event = Uuid::from_u128(7);
    let root = Cause::of_one(event, None);
    let filled = root.fill(Metadata::new());
    assert_eq!(filled.causation_id(), Some(event.to_string().as_str()));
    assert_eq!(
        filled.correlation_id(),
        Some(event.to_string().as_str()),
        "the first event of a chain is its correlation id"
    );

    let chained = Cause::of_one(event, Some("req-42"));
    let filled = chained.fill(Metadata::new().with_extra("tenant", "acme"));
    assert_eq!(filled.correlation_id(), Some("req-42"));
    assert_eq!(filled.extra("tenant"), Some(&json!("acme")));

    let own = chained.fill(
        Metadata::new()
            .with_correlation_id("mine")
            .with_causation_id("cmd-1"),
    );
    assert_eq!(
        own.correlation_id(),
        Some("mine"),
        "what the caller set wins"
    );
    assert_eq!(own.causation_id(), Some("cmd-1"));

    let odd = chained.fill(Metadata::new().with_extra("correlation_id", 5));
    assert_eq!(
        stored(&odd)["correlation_id"],
        json!(5),
        "a non-string value of a known name counts as set"
    );
}

fn delivery(id: u128, metadata: &str) -> crate::store::Delivery {
    crate::store::Delivery {
        fence: crate::store::Fence {
            position: i64::try_from(id).unwrap(),
            token: Uuid::nil(),
        },
        attempt: 1,
        last_error: None,
        event_id: Uuid::from_u128(id),
        event_type: "t".into(),
        event_version: 1,
        routing_key: None,
        payload: "{}".into(),
        metadata: metadata.into(),
        published_at: std::time::SystemTime::UNIX_EPOCH,
    }
}

#[test]
fn a_batch_names_its_cause_only_as_far_as_its_events_agree() {
    let one = [delivery(1, r#"{"correlation_id": "req-1"}"#)];
    assert_eq!(
        Cause::of_batch(one.iter()),
        Some(Cause::of_one(Uuid::from_u128(1), Some("req-1"))),
        "a batch of one is that event"
    );

    let same_chain = [
        delivery(1, r#"{"correlation_id": "req-1"}"#),
        delivery(2, r#"{"correlation_id": "req-1", "causation_id": "x"}"#),
    ];
    let filled = Cause::of_batch(same_chain.iter())
        .unwrap()
        .fill(Metadata::new());
    assert_eq!(filled.correlation_id(), Some("req-1"));
    assert_eq!(filled.causation_id(), None, "no one event caused it");

    let roots = [delivery(1, "{}"), delivery(2, "{}")];
    assert_eq!(
        Cause::of_batch(roots.iter()),
        None,
        "two chains: nothing shared"
    );
    assert_eq!(Cause::of_batch(std::iter::empty()), None);
}
