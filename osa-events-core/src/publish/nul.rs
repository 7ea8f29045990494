//! Finding NUL characters in serialized JSON before PostgreSQL refuses it.
//!
//! `jsonb` cannot store the character U+0000: serde_json writes it as `\u0000`, and the cast to
//! `jsonb` fails with "unsupported Unicode escape sequence", aborting the caller's transaction.
//! [`find`] reports where the first one is, as a path such as `$.items[2].name`, so publishing can
//! refuse the event with a clear error before anything is sent.

use std::fmt::Write as _;

use serde_json::Value;

use crate::redact::push_key;

/// The path of the first string (value or object key) in `json` that holds a NUL character, or
/// `None` when there is none. Only text that contains the escape is parsed again.
pub(crate) fn find(json: &str) -> Option<String> {
    if !json.contains("\\u0000") {
        return None;
    }
    // The escape may also be the text `\\u0000` (an escaped backslash, then `u0000`): the walk
    // below decides. The JSON was just serialized, so it parses.
    let value: Value = serde_json::from_str(json).ok()?;
    let mut path = String::from("$");
    walk(&value, &mut path).then_some(path)
}

/// Whether `value` holds a NUL; if so, `path` is extended to where.
fn walk(value: &Value, path: &mut String) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().enumerate().any(|(index, item)| {
            let len = path.len();
            let _ = write!(path, "[{index}]");
            walk(item, path) || {
                path.truncate(len);
                false
            }
        }),
        Value::Object(fields) => fields.iter().any(|(key, item)| {
            let len = path.len();
            push_key(path, key);
            key.contains('\0') || walk(item, path) || {
                path.truncate(len);
                false
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::find;

    fn json(value: serde_json::Value) -> String {
        value.to_string()
    }

    #[test]
    fn finds_the_path_of_a_nul_in_a_nested_string() {
        let text = json(serde_json::json!({
            "srn": "ok",
            "items": [{ "name": "fine" }, { "name": "bad\u{0}name" }],
        }));
        assert_eq!(find(&text).as_deref(), Some("$.items[1].name"));
    }

    #[test]
    fn finds_a_nul_in_a_key_and_escapes_it() {
        let text = json(serde_json::json!({ "tags": { "a\u{0}b": 1 } }));
        assert_eq!(find(&text).as_deref(), Some(r#"$.tags["a\u0000b"]"#));
    }

    #[test]
    fn finds_a_nul_in_a_top_level_string() {
        assert_eq!(find(&json("\u{0}".into())).as_deref(), Some("$"));
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_not_a_nul() {
        let text = json(serde_json::json!({ "path": r"C:\u0000" }));
        assert!(text.contains(r"\\u0000"));
        assert_eq!(find(&text), None);
    }

    #[test]
    fn text_without_nul_is_not_parsed() {
        assert_eq!(find(r#"{"a": "b"}"#), None);
        // Not even JSON: without the escape, nothing is parsed.
        assert_eq!(find("not json"), None);
    }
}
