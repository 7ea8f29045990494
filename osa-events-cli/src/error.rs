//! [`CliError`]: what the tool reports on failure, one line on stderr, and its exit code.
//!
//! Every message passes through [`Secrets::scrub`], so a password given in the url never
//! reaches the terminal or a log, whatever a driver error happens to quote.

use std::process::ExitCode;
use std::sync::OnceLock;

/// A failure: its one-line message and exit code.
#[derive(Debug)]
pub(crate) struct CliError {
    message: String,
    code: u8,
}

impl CliError {
    /// An operation failed (exit code 1).
    pub(crate) fn op(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }

    /// The command line is wrong (exit code 2, as clap's own errors).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 2,
        }
    }

    /// The message as printed: one line, secrets scrubbed.
    pub(crate) fn line(&self) -> String {
        one_line(&Secrets::scrub(&self.message))
    }

    /// The exit code.
    pub(crate) fn code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl From<osa_events::Error> for CliError {
    fn from(error: osa_events::Error) -> Self {
        let mut message = error.to_string();
        // The schema is missing: the one fix is a command of ours.
        if message.contains("osa_events") && message.contains("does not exist") {
            message.push_str(" (is the schema migrated? run `osa-events migrate`)");
        }
        Self::op(message)
    }
}

/// `text` on one line: line breaks and the indentation after them become one space.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The secrets of this run (the url's password), kept out of every message.
#[derive(Debug)]
pub(crate) struct Secrets;

static PASSWORD: OnceLock<String> = OnceLock::new();

impl Secrets {
    /// Remembers the password of `url`, if it has one, so [`scrub`](Self::scrub) removes it.
    pub(crate) fn remember_url(url: &str) {
        if let Some(range) = password_range(url) {
            let password = &url[range];
            if !password.is_empty() {
                let _ = PASSWORD.set(password.to_owned());
            }
        }
    }

    /// `text` with the remembered password (raw or percent-decoded) replaced by `***`.
    pub(crate) fn scrub(text: &str) -> String {
        let Some(password) = PASSWORD.get() else {
            return text.to_owned();
        };
        let decoded = percent_decode(password);
        let mut text = text.replace(password.as_str(), "***");
        if !decoded.is_empty() && decoded != *password {
            text = text.replace(decoded.as_str(), "***");
        }
        text
    }
}

/// `url` with its password, if any, replaced by `***`: the only form of a url the tool prints.
pub(crate) fn redact(url: &str) -> String {
    match password_range(url) {
        Some(range) => format!("{}***{}", &url[..range.start], &url[range.end..]),
        None => url.to_owned(),
    }
}

/// The byte range of the password in `scheme://user:password@host/...`.
fn password_range(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://").map_or(0, |at| at + 3);
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let at = authority.rfind('@')?;
    let colon = authority[..at].find(':')?;
    Some(start + colon + 1..start + at)
}

/// `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password_only() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/app?sslmode=require"),
            "postgres://app:***@db:5432/app?sslmode=require"
        );
        assert_eq!(redact("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(redact("postgres://db/app"), "postgres://db/app");
        assert_eq!(redact("postgres://a:p@ss@db/x"), "postgres://a:***@db/x");
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("p%40ss%2"), "p@ss%2");
        assert_eq!(percent_decode("%41%4a"), "AJ");
    }

    #[test]
    fn messages_are_one_line() {
        assert_eq!(one_line("a\n   b\r\n\nc"), "a b c");
    }
}
