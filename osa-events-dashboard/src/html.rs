//! [`Html`]: markup built so that what comes from the store is always text.
//!
//! Payloads, error messages, handler names and everything else the store returns can hold `<`,
//! `&` or quotes (a payload with `<script>` must show as those characters). So markup goes in
//! only as `&'static str`, written here in the source, and every other string goes in through
//! [`Html::text`] or [`Html::attr`], which escape it. There is no way to insert a runtime string
//! unescaped.

use std::fmt::{Display, Write};

/// A piece of HTML under construction.
#[derive(Debug, Default)]
pub(crate) struct Html(String);

impl Html {
    /// An empty piece.
    pub(crate) fn new() -> Self {
        Self(String::with_capacity(4096))
    }

    /// Markup written in this crate's source.
    pub(crate) fn raw(&mut self, markup: &'static str) -> &mut Self {
        self.0.push_str(markup);
        self
    }

    /// `text`, escaped.
    pub(crate) fn text(&mut self, text: &str) -> &mut Self {
        escape_into(&mut self.0, text);
        self
    }

    /// `value` as [`Display`] prints it, escaped.
    pub(crate) fn display(&mut self, value: impl Display) -> &mut Self {
        let mut printed = String::new();
        let _ = write!(printed, "{value}");
        self.text(&printed)
    }

    /// ` name="value"`, the value escaped.
    pub(crate) fn attr(&mut self, name: &'static str, value: &str) -> &mut Self {
        self.0.push(' ');
        self.0.push_str(name);
        self.0.push_str("=\"");
        escape_into(&mut self.0, value);
        self.0.push('"');
        self
    }

    /// `<tag class="class">text</tag>`, the text escaped (no class when `class` is empty).
    pub(crate) fn element(&mut self, tag: &'static str, class: &str, text: &str) -> &mut Self {
        self.0.push('<');
        self.0.push_str(tag);
        if !class.is_empty() {
            self.attr("class", class);
        }
        self.0.push('>');
        self.text(text);
        self.0.push_str("</");
        self.0.push_str(tag);
        self.0.push('>');
        self
    }

    /// `<a href="href">text</a>`.
    pub(crate) fn link(&mut self, href: &str, text: &str) -> &mut Self {
        self.raw("<a")
            .attr("href", href)
            .raw(">")
            .text(text)
            .raw("</a>")
    }

    /// Another piece, already built (and so already safe).
    pub(crate) fn append(&mut self, other: Html) -> &mut Self {
        self.0.push_str(&other.0);
        self
    }

    /// The markup.
    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

/// Appends `text` to `out` with `&`, `<`, `>`, `"` and `'` replaced by their entities: safe in
/// element content and in quoted attribute values alike.
fn escape_into(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            _ => "&#39;",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// `text` percent-encoded for a path segment or a query value: everything but unreserved
/// characters (RFC 3986), so a handler name with `@`, `/` or `?` stays one segment.
pub(crate) fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped() {
        let mut html = Html::new();
        html.raw("<p")
            .attr("title", "\"quoted\" & 'single'")
            .raw(">")
            .text("<script>alert(1)</script>")
            .raw("</p>");
        assert_eq!(
            html.into_string(),
            "<p title=\"&quot;quoted&quot; &amp; &#39;single&#39;\">\
             &lt;script&gt;alert(1)&lt;/script&gt;</p>"
        );
    }

    #[test]
    fn text_without_special_characters_is_unchanged() {
        let mut html = Html::new();
        html.text("index.vector — ünïcode");
        assert_eq!(html.into_string(), "index.vector — ünïcode");
    }

    #[test]
    fn url_encoding_keeps_a_name_one_segment() {
        assert_eq!(url_encode("billing@index.vector"), "billing%40index.vector");
        assert_eq!(url_encode("a/b?c=d e"), "a%2Fb%3Fc%3Dd%20e");
        assert_eq!(url_encode("é"), "%C3%A9");
    }
}
