use std::collections::HashMap;

use serde::Deserialize;

use super::{decode_error, path_at};

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Payment {
    card: Card,
    tier: Tier,
    items: Vec<Item>,
    tags: HashMap<String, u32>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Card {
    number: u64,
    holder: String,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
enum Tier {
    Basic,
    Premium,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Item {
    sku: String,
    cents: u8,
    id: Option<Id>,
}

/// A type whose `Deserialize` quotes its input in a custom message, as many do.
#[derive(Debug)]
struct Id;

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Err(serde::de::Error::custom(format!("`{text}` is not an id")))
    }
}

/// The redacted message of decoding `json` as a `Payment`.
fn redacted(json: &str) -> String {
    let error = serde_json::from_str::<Payment>(json).unwrap_err();
    decode_error(&error, json)
}

const SECRET: &str = "4111-1111-1111-1111";

#[test]
fn a_wrong_type_keeps_the_path_and_the_expected_type_but_not_the_value() {
    let json = format!(r#"{{"card": {{"holder": "Ada", "number": "{SECRET}"}}, "tier": "Basic"}}"#);
    let serde = serde_json::from_str::<Payment>(&json)
        .unwrap_err()
        .to_string();
    assert!(serde.contains(SECRET), "serde itself quotes it: {serde}");
    assert_eq!(
        redacted(&json),
        "at $.card.number: invalid type: string, expected u64"
    );
}

#[test]
fn numbers_booleans_and_unknown_variants_are_dropped_too() {
    assert_eq!(
        redacted(r#"{"card": {"number": true}}"#),
        "at $.card.number: invalid type: boolean, expected u64"
    );
    assert_eq!(
        redacted(r#"{"card": {"number": 1, "holder": "x"}, "tier": "Gold1234"}"#),
        "at $.tier: unknown variant, expected `Basic` or `Premium`"
    );
    let json = r#"{"card": {"number": 1, "holder": "x"}, "tier": "Basic",
        "items": [{"sku": "a", "cents": 1}, {"sku": "b", "cents": 912}]}"#;
    assert_eq!(
        redacted(json),
        "at $.items[1].cents: invalid value: integer, expected u8"
    );
}

#[test]
fn a_custom_message_is_withheld() {
    let json = format!(
        r#"{{"card": {{"number": 1, "holder": "x"}}, "tier": "Basic", "items": [{{"sku": "a", "cents": 1, "id": "{SECRET}"}}]}}"#
    );
    let message = redacted(&json);
    assert!(!message.contains(SECRET), "{message}");
    assert!(
        // serde_json places a custom error at the end of the object that holds it.
        message.starts_with("at $.items[0]: invalid value (the message of the type's"),
        "{message}"
    );
}

#[test]
fn messages_without_values_are_kept() {
    assert_eq!(
        redacted(r#"{"card": {"holder": "x"}}"#),
        "at $.card: missing field `number`"
    );
    assert_eq!(
        redacted(r#"{"card": {"number": 1, "holder": "x"}, "tier": "Basic", "tags": {"a": -1}}"#),
        "at $.tags.a: invalid value: integer, expected u32"
    );
    assert_eq!(
        redacted(r#"{"card": "#),
        "at $.card: EOF while parsing a value"
    );
    // A struct also decodes from an array of its fields, in order.
    assert_eq!(
        redacted("[1, 2]"),
        "at $[0]: invalid type: integer, expected struct Card"
    );
}

#[test]
fn keys_that_are_not_identifiers_are_quoted_in_the_path() {
    let json = r#"{"a b": {"c\"d": [0, {"e": 1}]}}"#;
    let at = json.find("1}").unwrap() + 1;
    assert_eq!(path_at(json, at), r#"$["a b"]["c\"d"][1].e"#);
}

#[test]
fn a_multi_line_payload_is_located_by_line_and_column() {
    let json = format!("{{\n  \"card\": {{\n    \"number\": \"{SECRET}\"\n  }}\n}}");
    assert_eq!(
        redacted(&json),
        "at $.card.number: invalid type: string, expected u64"
    );
}
