//! Decode errors without the payload's values.
//!
//! serde's messages quote the value they could not use (`invalid type: string
//! "4111-1111-1111-1111", expected u64`), and those messages end up in `last_error` and in ERROR
//! logs. [`decode_error`] keeps the shape of the error (where in the payload, what was found,
//! what was expected) and drops the value: `at $.card.number: invalid type: string, expected
//! u64`. Field names are kept: they come from the event's type, not from the data.
//!
//! serde_json reports where an error happened as a line and column of the text, which is useless
//! once PostgreSQL has normalised the payload; the path is found by scanning the text up to
//! that point ([`path_at`]).

use serde_json::error::Category;

/// Messages of serde's own errors that never quote a value, kept as they are.
const SAFE_PREFIXES: &[&str] = &[
    "missing field ",
    "duplicate field ",
    "unknown field ",
    "invalid length ",
    "data did not match any variant",
];

/// `error`, met while decoding `json`, as a message that names where and what, never a value.
pub(crate) fn decode_error(error: &serde_json::Error, json: &str) -> String {
    let full = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let message = full.strip_suffix(&position).unwrap_or(&full);
    let message = match error.classify() {
        // serde_json's own messages ("expected value", "trailing characters", "EOF while parsing
        // an object"): fixed text.
        Category::Syntax | Category::Eof | Category::Io => message.to_owned(),
        Category::Data => redact_data(message),
    };
    match byte_offset(json, error.line(), error.column()) {
        Some(offset) => format!("at {}: {message}", path_at(json, offset)),
        None => message,
    }
}

/// A data error's message with its value dropped.
fn redact_data(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // The value is quoted with `Debug` (strings) or backticks (numbers, booleans,
            // characters); what was expected comes from the type, after the last ", expected ".
            let (found, expected) = match rest.rfind(", expected ") {
                Some(at) => (&rest[..at], Some(&rest[at + 2..])),
                None => (rest, None),
            };
            let kind = found
                .split([' ', '`', '"'])
                .take_while(|word| !word.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            return match expected {
                Some(expected) => format!("{prefix}{kind}, {expected}"),
                None => format!("{prefix}{kind}"),
            };
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        // "unknown variant `gold`, expected one of `a`, `b`": the variant is the data's.
        let expected = rest.find("`, ").map_or("", |at| &rest[at + 1..]);
        return format!("unknown variant{expected}");
    }
    if SAFE_PREFIXES
        .iter()
        .any(|prefix| message.starts_with(prefix))
    {
        return message.to_owned();
    }
    // A custom message of a `Deserialize` impl: it may quote anything.
    "invalid value (the message of the type's `Deserialize` is withheld, as it may quote the payload)"
        .to_owned()
}

/// The byte offset of serde_json's 1-based `line` and `column` (bytes) in `json`.
fn byte_offset(json: &str, line: usize, column: usize) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let line_start = if line == 1 {
        0
    } else {
        json.match_indices('\n').nth(line - 2)?.0 + 1
    };
    Some((line_start + column).min(json.len()))
}

/// One open container while scanning.
enum Frame {
    /// An object, with the key of the member being read.
    Object(Option<String>),
    /// An array, with the index of the element being read.
    Array(usize),
}

/// The path (`$`, `$.a.b`, `$.items[2]`) of the value being read at byte `offset` of `json`:
/// the innermost open container and its current member. Scans the text as JSON tokens; it never
/// fails, and at worst names a container instead of its member.
pub(crate) fn path_at(json: &str, offset: usize) -> String {
    let bytes = json.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    let mut index = 0;
    // Whether the next string in an object is a key.
    let mut expect_key = false;
    while index < bytes.len().min(offset) {
        match bytes[index] {
            b'{' => {
                stack.push(Frame::Object(None));
                expect_key = true;
            }
            b'[' => stack.push(Frame::Array(0)),
            b'}' | b']' => {
                stack.pop();
                expect_key = false;
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array(element)) => *element += 1,
                Some(Frame::Object(_)) => expect_key = true,
                None => {}
            },
            b'"' => {
                let end = string_end(bytes, index);
                if expect_key {
                    let key = serde_json::from_str::<String>(&json[index..end]).unwrap_or_default();
                    if let Some(Frame::Object(current)) = stack.last_mut() {
                        *current = Some(key);
                    }
                    expect_key = false;
                }
                index = end;
                continue;
            }
            _ => {}
        }
        index += 1;
    }
    let mut path = String::from("$");
    for frame in &stack {
        match frame {
            Frame::Object(Some(key)) => push_key(&mut path, key),
            Frame::Object(None) => {}
            Frame::Array(element) => path.push_str(&format!("[{element}]")),
        }
    }
    path
}

/// The index just after the string that starts (with its quote) at `start`.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut index = start + 1;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' => index += 2,
            b'"' => return index + 1,
            _ => index += 1,
        }
    }
    bytes.len()
}

/// `.name` for a plain identifier, else `["..."]` (JSON-escaped).
pub(crate) fn push_key(path: &mut String, key: &str) {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        path.push('.');
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&serde_json::Value::String(key.to_owned()).to_string());
        path.push(']');
    }
}

#[cfg(test)]
mod tests;
