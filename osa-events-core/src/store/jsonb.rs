//! JSON text normalised as PostgreSQL's `jsonb` returns it, so every store (the in-memory one,
//! SQLite) hands handlers the same text a `PgStore` does.
//!
//! `jsonb` parses its input and prints its own form
//! ([PostgreSQL manual, 8.14](https://www.postgresql.org/docs/current/datatype-json.html)):
//! object keys ordered by length, then bytewise; of duplicate keys only the last kept; numbers as
//! `numeric` prints them (`1e2` as `100`, `1.50` as `1.50`, `-0` as `0`, never an exponent); one
//! space after each `:` and `,`; strings re-escaped (`\u00e9` as `é`, control characters as
//! `\n` or `\u001f`). A payload can decode on one form and fail on the other (a duplicate field,
//! `1e2` for a `u64`), so every store must hand out the same one.

/// `json` in `jsonb`'s output form, or `None` when it is not valid JSON (PostgreSQL would refuse
/// to store it).
pub fn jsonb_text(json: &str) -> Option<String> {
    let mut parser = Parser {
        bytes: json.as_bytes(),
        text: json,
        at: 0,
    };
    let node = parser.value(0)?;
    parser.skip_whitespace();
    if parser.at != parser.bytes.len() {
        return None;
    }
    let mut out = String::with_capacity(json.len());
    node.write(&mut out);
    Some(out)
}

/// The most nesting accepted (PostgreSQL stops at its stack depth limit; serde_json at 128).
const MAX_DEPTH: usize = 512;
/// The largest exponent normalised; PostgreSQL's `numeric` refuses far smaller ones anyway.
const MAX_EXPONENT: i64 = 1 << 20;

enum Node {
    Literal(&'static str),
    Number(String),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    fn write(&self, out: &mut String) {
        match self {
            Node::Literal(text) => out.push_str(text),
            Node::Number(text) => out.push_str(text),
            Node::String(text) => write_string(text, out),
            Node::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Node::Object(fields) => {
                out.push('{');
                for (index, (key, value)) in fields.iter().enumerate() {
                    if index > 0 {
                        out.push_str(", ");
                    }
                    write_string(key, out);
                    out.push_str(": ");
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// A string as PostgreSQL's `escape_json` writes it.
fn write_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

struct Parser<'a> {
    bytes: &'a [u8],
    text: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn skip_whitespace(&mut self) {
        while matches!(self.bytes.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<Node> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_whitespace();
        match *self.bytes.get(self.at)? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string().map(Node::String),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            _ => self.number(),
        }
    }

    fn literal(&mut self, word: &'static str) -> Option<Node> {
        self.text[self.at..].starts_with(word).then(|| {
            self.at += word.len();
            Node::Literal(word)
        })
    }

    fn object(&mut self, depth: usize) -> Option<Node> {
        self.at += 1;
        let mut fields: Vec<(String, Node)> = Vec::new();
        if !self.eat(b'}') {
            loop {
                self.skip_whitespace();
                let key = self.string()?;
                if !self.eat(b':') {
                    return None;
                }
                let value = self.value(depth + 1)?;
                // Of duplicate keys, the last one wins.
                match fields.iter_mut().find(|(known, _)| *known == key) {
                    Some(field) => field.1 = value,
                    None => fields.push((key, value)),
                }
                if self.eat(b'}') {
                    break;
                }
                if !self.eat(b',') {
                    return None;
                }
            }
        }
        fields.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        Some(Node::Object(fields))
    }

    fn array(&mut self, depth: usize) -> Option<Node> {
        self.at += 1;
        let mut items = Vec::new();
        if !self.eat(b']') {
            loop {
                items.push(self.value(depth + 1)?);
                if self.eat(b']') {
                    break;
                }
                if !self.eat(b',') {
                    return None;
                }
            }
        }
        Some(Node::Array(items))
    }

    /// A string token, decoded (serde_json does the escapes).
    fn string(&mut self) -> Option<String> {
        if self.bytes.get(self.at) != Some(&b'"') {
            return None;
        }
        let start = self.at;
        let mut index = start + 1;
        loop {
            match *self.bytes.get(index)? {
                b'\\' => index += 2,
                b'"' => break,
                _ => index += 1,
            }
        }
        self.at = index + 1;
        serde_json::from_str(&self.text[start..self.at]).ok()
    }

    /// A number token, printed as `numeric` prints it.
    fn number(&mut self) -> Option<Node> {
        let start = self.at;
        let negative = self.bytes.get(self.at) == Some(&b'-');
        if negative {
            self.at += 1;
        }
        let integer = self.digits();
        if integer.is_empty() || (integer.len() > 1 && integer.starts_with('0')) {
            return None;
        }
        let mut fraction = "";
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            fraction = self.digits();
            if fraction.is_empty() {
                return None;
            }
        }
        let mut exponent: i64 = 0;
        if matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            let sign = match self.bytes.get(self.at) {
                Some(b'-') => {
                    self.at += 1;
                    -1
                }
                Some(b'+') => {
                    self.at += 1;
                    1
                }
                _ => 1,
            };
            let digits = self.digits();
            if digits.is_empty() {
                return None;
            }
            exponent = sign
                * digits
                    .parse::<i64>()
                    .unwrap_or(i64::MAX)
                    .min(MAX_EXPONENT + 1);
            if exponent.abs() > MAX_EXPONENT {
                // Left as written: `numeric` would refuse it.
                return Some(Node::Number(self.text[start..self.at].to_owned()));
            }
        }
        Some(Node::Number(numeric(negative, integer, fraction, exponent)))
    }

    fn digits(&mut self) -> &'a str {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        &self.text[start..self.at]
    }
}

/// `numeric`'s text for `±integer.fraction × 10^exponent`: every digit, the scale of the input
/// (fraction digits minus the exponent, at least 0), no exponent, no negative zero.
fn numeric(negative: bool, integer: &str, fraction: &str, exponent: i64) -> String {
    let digits = format!("{integer}{fraction}");
    let len = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    // Where the decimal point falls in `digits`.
    let point = i64::try_from(integer.len()).unwrap_or(i64::MAX) + exponent;
    let whole = if point <= 0 {
        String::new()
    } else if point >= len {
        format!(
            "{digits}{}",
            "0".repeat(usize::try_from(point - len).unwrap_or(0))
        )
    } else {
        digits[..usize::try_from(point).unwrap_or(0)].to_owned()
    };
    let part = if point >= len {
        String::new()
    } else if point <= 0 {
        format!(
            "{}{digits}",
            "0".repeat(usize::try_from(-point).unwrap_or(0))
        )
    } else {
        digits[usize::try_from(point).unwrap_or(0)..].to_owned()
    };
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let zero = whole == "0" && part.bytes().all(|digit| digit == b'0');
    let sign = if negative && !zero { "-" } else { "" };
    if part.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{part}")
    }
}

#[cfg(test)]
mod tests {
    use super::jsonb_text as normalise;

    fn jsonb(json: &str) -> String {
        normalise(json).unwrap_or_else(|| panic!("{json} is JSON"))
    }

    #[test]
    fn keys_are_ordered_by_length_then_bytes_and_the_last_duplicate_wins() {
        assert_eq!(
            jsonb(r#"{"bb":1,"a":2,"ab":3,"a":4,"c":{"z":1,"yy":2}}"#),
            r#"{"a": 4, "c": {"z": 1, "yy": 2}, "ab": 3, "bb": 1}"#
        );
    }

    #[test]
    fn numbers_print_as_numeric_does() {
        let cases = [
            ("1e2", "100"),
            ("1E+2", "100"),
            ("1.50", "1.50"),
            ("0.10e1", "1.0"),
            ("1e-2", "0.01"),
            ("-0", "0"),
            ("-0.0", "0.0"),
            ("-1.5e-3", "-0.0015"),
            ("12345678901234567890123", "12345678901234567890123"),
            ("1.5e20", "150000000000000000000"),
            ("0", "0"),
            ("-7", "-7"),
        ];
        for (input, expected) in cases {
            assert_eq!(jsonb(input), expected, "{input}");
        }
    }

    #[test]
    fn strings_are_re_escaped_and_spacing_is_jsonb_s() {
        assert_eq!(
            jsonb("[ \"\\u00e9\\/\\u001F\\n\" ,true,null , [] ,{} ]"),
            "[\"é/\\u001f\\n\", true, null, [], {}]"
        );
    }

    #[test]
    fn invalid_json_is_refused() {
        for input in [
            "",
            "{",
            "[1,]",
            "01",
            "1.",
            "{\"a\" 1}",
            "nul",
            "1 2",
            "\"a",
        ] {
            assert_eq!(normalise(input), None, "{input}");
        }
    }
}
