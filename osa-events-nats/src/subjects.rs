//! Which JetStream subject an event goes to, and which subjects a handler reads.
//!
//! An event of type `order.placed` with routing key `eu` goes to `osa.order.placed.eu`: the
//! prefix, the event type's tokens, then one token for the routing key (`_` when it has none).
//! The relay publishes there and a JetStream handler filters on it, so both sides must agree: they
//! share one [`Subjects`].
//!
//! The routing key is always exactly one token, so the subjects of two event types never overlap
//! (`order.placed.*` cannot match an event of type `order.placed.eu`: its subjects have one token
//! more). A key is written as it is unless it holds a character a subject token cannot
//! (`.`, `*`, `>`, whitespace, control characters, non-ASCII) or `%`: those are percent-encoded
//! (`eu.west` → `eu%2Ewest`), so the mapping is lossless and never fails. A key that is literally
//! `_` is written `%5F`, so it cannot be mistaken for "no key". The key itself travels unencoded
//! in the `Osa-Routing-Key` header (see [`crate::headers`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use osa_events_core::{Error, Result};

/// The prefix of [`Subjects::default`].
pub const DEFAULT_PREFIX: &str = "osa";

/// The token for an event published without a routing key.
const NO_KEY: &str = "_";

/// How event types and routing keys map to subjects: a prefix, and optionally another name for
/// some event types. One value is shared by the relay and the JetStream source.
///
/// # Examples
///
/// ```
/// use osa_events_nats::Subjects;
///
/// let subjects = Subjects::new("shop")?.rename("order.placed", "orders.placed.v1")?;
/// assert_eq!(subjects.subject("order.placed", Some("eu")), "shop.orders.placed.v1.eu");
/// assert_eq!(subjects.subject("payment.taken", None), "shop.payment.taken._");
/// assert_eq!(subjects.filter("order.placed", None), "shop.orders.placed.v1.*");
/// assert_eq!(subjects.filter("order.placed", Some("eu.west")), "shop.orders.placed.v1.eu%2Ewest");
/// # Ok::<(), osa_events_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
    renames: BTreeMap<String, String>,
}

impl Default for Subjects {
    /// The prefix `osa`, no renames.
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            renames: BTreeMap::new(),
        }
    }
}

impl Subjects {
    /// Subjects under `prefix` (one or more tokens, such as `shop` or `acme.shop`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `prefix` is not a valid literal subject (empty, an empty token, a
    /// wildcard, whitespace).
    pub fn new(prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        check_literal("the subject prefix", &prefix)?;
        Ok(Self {
            prefix,
            renames: BTreeMap::new(),
        })
    }

    /// Publishes events of `event_type` under `name` instead of their type name (after the
    /// prefix, before the routing key), e.g. to keep a subject stable across a rename of the type.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `name` is not a valid literal subject.
    pub fn rename(
        mut self,
        event_type: impl Into<String>,
        name: impl Into<String>,
    ) -> Result<Self> {
        let name = name.into();
        check_literal("a renamed event type's subject", &name)?;
        self.renames.insert(event_type.into(), name);
        Ok(self)
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The subject of an event of `event_type` published with `routing_key`.
    pub fn subject(&self, event_type: &str, routing_key: Option<&str>) -> String {
        let mut subject = self.type_subject(event_type);
        subject.push('.');
        match routing_key {
            None => subject.push_str(NO_KEY),
            Some(key) => push_key_token(&mut subject, key),
        }
        subject
    }

    /// The subject filter of a handler of `event_type`: its events with `routing_key`, or with
    /// any key (and none) when `None`.
    pub fn filter(&self, event_type: &str, routing_key: Option<&str>) -> String {
        match routing_key {
            Some(_) => self.subject(event_type, routing_key),
            None => format!("{}.*", self.type_subject(event_type)),
        }
    }

    /// Every subject under the prefix (`osa.>`), for a stream that takes all of them.
    pub fn all(&self) -> String {
        format!("{}.>", self.prefix)
    }

    /// Checks that events of `event_type` have valid subjects (its name, or its rename, is made
    /// of valid tokens): the relay and the source check every type they handle at start-up.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the type and the way out ([`rename`](Self::rename)).
    pub fn check_event_type(&self, event_type: &str) -> Result<()> {
        if self.renames.contains_key(event_type) {
            return Ok(());
        }
        check_literal(&format!("event type `{event_type}`"), event_type).map_err(|error| {
            Error::Config(
                format!(
                    "{error}; give it a subject with `Subjects::rename(\"{event_type}\", \"...\")`"
                )
                .into(),
            )
        })
    }

    fn type_subject(&self, event_type: &str) -> String {
        let name = self
            .renames
            .get(event_type)
            .map_or(event_type, String::as_str);
        format!("{}.{name}", self.prefix)
    }
}

/// Appends `key` as one subject token (see the module docs).
fn push_key_token(subject: &mut String, key: &str) {
    if key == NO_KEY {
        subject.push_str("%5F");
        return;
    }
    if key.is_empty() {
        // `%` alone: every literal `%` of a key is encoded, so this is no other key.
        subject.push('%');
        return;
    }
    for character in key.chars() {
        if plain_token_char(character) {
            subject.push(character);
        } else {
            let mut bytes = [0; 4];
            for byte in character.encode_utf8(&mut bytes).bytes() {
                let _ = write!(subject, "%{byte:02X}");
            }
        }
    }
}

/// A character a subject token may hold as it is (and that is not `%`, the escape).
fn plain_token_char(character: char) -> bool {
    character.is_ascii_graphic() && !matches!(character, '.' | '*' | '>' | '%')
}

/// Checks that `subject` is a literal subject: non-empty tokens of printable ASCII, no
/// wildcards.
fn check_literal(what: &str, subject: &str) -> Result<()> {
    let bad = if subject.is_empty() {
        Some("it is empty")
    } else if subject.split('.').any(str::is_empty) {
        Some("it has an empty token (a leading, trailing or doubled `.`)")
    } else if subject.split('.').any(|token| token == "*" || token == ">") {
        Some("it has a wildcard token (`*` or `>`)")
    } else if !subject.chars().all(|c| c.is_ascii_graphic()) {
        Some("it has whitespace, a control character or a non-ASCII character")
    } else {
        None
    };
    match bad {
        None => Ok(()),
        Some(why) => Err(Error::Config(
            format!("{what} cannot be a NATS subject (`{subject}`): {why}").into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_token_and_never_collide() {
        let subjects = Subjects::default();
        let keys = [
            None,
            Some("_"),
            Some(""),
            Some("%"),
            Some("eu"),
            Some("eu.west"),
            Some("eu%2Ewest"),
            Some("a b"),
            Some("*"),
            Some(">"),
            Some("zürich"),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for key in keys {
            let subject = subjects.subject("order.placed", key);
            let token = subject.strip_prefix("osa.order.placed.").unwrap();
            assert!(
                !token.is_empty() && !token.contains('.'),
                "{key:?}: {subject}"
            );
            assert!(
                token.chars().all(|c| c.is_ascii_graphic()),
                "{key:?}: {subject}"
            );
            assert!(token != "*" && token != ">", "{key:?}: {subject}");
            assert!(seen.insert(subject.clone()), "{key:?} collides: {subject}");
        }
        assert_eq!(
            subjects.subject("order.placed", Some("zürich")),
            "osa.order.placed.z%C3%BCrich"
        );
    }

    #[test]
    fn a_filter_without_a_key_takes_every_key_of_its_type_only() {
        let subjects = Subjects::default();
        assert_eq!(subjects.filter("order.placed", None), "osa.order.placed.*");
        // An event type one token longer has subjects two tokens longer than the filter's.
        assert_eq!(
            subjects.subject("order.placed.eu", None),
            "osa.order.placed.eu._"
        );
        assert_eq!(subjects.all(), "osa.>");
    }

    #[test]
    fn invalid_prefixes_and_types_are_refused_with_the_reason() {
        for (prefix, why) in [
            ("", "empty"),
            ("a..b", "empty token"),
            ("a.", "empty token"),
            ("a.*", "wildcard"),
            ("a.>", "wildcard"),
            ("a b", "whitespace"),
        ] {
            let error = Subjects::new(prefix).unwrap_err().to_string();
            assert!(error.contains(why), "{prefix:?}: {error}");
        }
        let subjects = Subjects::default();
        let error = subjects
            .check_event_type("order placed")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("event type `order placed`") && error.contains("rename"),
            "{error}"
        );
        let renamed = subjects.rename("order placed", "order.placed").unwrap();
        renamed.check_event_type("order placed").unwrap();
        assert_eq!(renamed.subject("order placed", None), "osa.order.placed._");
    }
}

/// Whether the stream subject `pattern` (which may hold wildcards) takes every subject that
/// `filter` matches: `osa.>` covers `osa.order.placed.*`, `osa.order.*.*` covers it too,
/// `osa.order.placed.eu` does not.
pub fn covers(pattern: &str, filter: &str) -> bool {
    let mut pattern = pattern.split('.');
    let mut filter = filter.split('.');
    loop {
        match (pattern.next(), filter.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(token)) if token != ">" => {}
            (Some(wanted), Some(token)) if wanted == token => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod covers_tests {
    use super::covers;

    #[test]
    fn a_pattern_covers_only_filters_it_takes_whole() {
        assert!(covers("osa.>", "osa.order.placed.*"));
        assert!(covers("osa.order.*.*", "osa.order.placed.*"));
        assert!(covers("osa.order.placed.*", "osa.order.placed.*"));
        assert!(covers("osa.order.placed.eu", "osa.order.placed.eu"));
        assert!(!covers("osa.order.placed.eu", "osa.order.placed.*"));
        assert!(!covers("osa.*", "osa.order.placed.*"));
        assert!(!covers("osa.order.placed.*", "osa.order.>"));
        assert!(!covers("shop.>", "osa.order.placed.*"));
        assert!(!covers("osa.>", "osa"));
    }
}
