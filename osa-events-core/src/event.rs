//! The [`Event`] trait: a serde type with a stable name and version.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A type that can be published and handled: a serde type with a stable name and version.
///
/// Derive it with `#[derive(Event)]` (re-exported by `osa-events`) rather than implementing it by hand.
/// The name and version are stored with every published event and select the handlers that
/// receive it, so changing them is a change of the wire format.
///
/// # Examples
///
/// ```
/// use osa_events::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize, Debug)]
/// #[event(name = "record.published", version = 2)]
/// struct RecordPublished {
///     srn: String,
/// }
///
/// assert_eq!(<RecordPublished as Event>::NAME, "record.published");
/// assert_eq!(<RecordPublished as Event>::VERSION, 2);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an osa-events event",
    label = "not an `Event`",
    note = "derive it: `#[derive(osa_events::Event, Serialize, Deserialize)]` with `#[event(name = \"...\")]`"
)]
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable name of the event type, stored in `events.event_type` (e.g. `"record.published"`).
    const NAME: &'static str;
    /// The version of the payload's shape, stored in `events.event_version`. Starts at 1.
    const VERSION: u32;

    /// Decodes a payload stored as `version` of this event: [`VERSION`](Self::VERSION) as `Self`,
    /// an older version through the type declared with `#[event(previous = ...)]`, then
    /// converted with `From` (following that type's own `previous`, so v1 → v2 → v3).
    ///
    /// Returns `None` when this type accepts no such version. The derive implements it; the
    /// default accepts only `VERSION`.
    ///
    /// # Errors
    ///
    /// A [`PayloadError`] when the payload does not decode as the Rust type of its version.
    fn decode_version(version: u32, payload: &str) -> Option<Result<Self, PayloadError>> {
        (version == Self::VERSION).then(|| decode_as::<Self>(payload))
    }

    /// The versions [`decode_version`](Self::decode_version) accepts, newest first.
    fn accepted_versions() -> Vec<u32> {
        vec![Self::VERSION]
    }

    /// The key whose events an `ordered` handler takes one at a time, in publish order: the
    /// entity the event is about (an order id, an account). `None` (the default): no key, and
    /// even an ordered handler takes the event whenever it is due.
    ///
    /// Derive it from a field with `#[event(ordering_key = "order_id")]` (any field that
    /// implements `Display`), or set it per publish with
    /// [`Outgoing::with_ordering_key`](crate::Outgoing::with_ordering_key), which overrides it.
    /// See the ordering guide (`osa_events::ordering`).
    fn ordering_key(&self) -> Option<String> {
        None
    }
}

/// Decodes `payload` as `E` itself (its current version), keeping `E`'s name for the error.
pub(crate) fn decode_as<E: Event>(payload: &str) -> Result<E, PayloadError> {
    serde_json::from_str(payload).map_err(|source| PayloadError {
        type_name: std::any::type_name::<E>(),
        version: E::VERSION,
        source,
    })
}

/// A stored payload that did not decode as the Rust type of its version.
#[derive(Debug)]
pub struct PayloadError {
    type_name: &'static str,
    version: u32,
    source: serde_json::Error,
}

impl PayloadError {
    /// The Rust type the payload was decoded as: the current type, or an older one it upcasts from.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The event version of that type.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// serde's error.
    pub fn serde_error(&self) -> &serde_json::Error {
        &self.source
    }
}

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the payload of version {} does not decode as `{}`: {}",
            self.version, self.type_name, self.source
        )
    }
}

impl std::error::Error for PayloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Not public API: how an event `E` declared with `#[event(previous = P)]` reads older versions,
/// built in a `const` by [`previous`], so the bounds and the checks are reported once, there.
#[doc(hidden)]
pub struct Previous<E> {
    decode: fn(u32, &str) -> Option<Result<E, PayloadError>>,
    versions: fn() -> Vec<u32>,
}

impl<E> std::fmt::Debug for Previous<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Previous").finish_non_exhaustive()
    }
}

impl<E> Previous<E> {
    /// `E::decode_version`: `E`'s own version, else the previous type's versions, upcast.
    pub fn decode_version(&self, version: u32, payload: &str) -> Option<Result<E, PayloadError>> {
        (self.decode)(version, payload)
    }

    /// `E::accepted_versions`: `E`'s version, then the previous type's.
    pub fn accepted_versions(&self) -> Vec<u32> {
        (self.versions)()
    }
}

/// Not public API: the [`Previous`] of `E` declared with `#[event(previous = P)]`; evaluated in a
/// `const`, it fails to compile unless `P` is an older version of the same event.
pub const fn previous<E, P>() -> Previous<E>
where
    E: Event + From<P>,
    P: Event,
{
    check_previous(E::NAME, E::VERSION, P::NAME, P::VERSION);
    Previous {
        decode: upcast::<E, P>,
        versions: accepted_versions::<E, P>,
    }
}

fn upcast<E, P>(version: u32, payload: &str) -> Option<Result<E, PayloadError>>
where
    E: Event + From<P>,
    P: Event,
{
    if version == E::VERSION {
        return Some(decode_as::<E>(payload));
    }
    P::decode_version(version, payload).map(|decoded| decoded.map(E::from))
}

fn accepted_versions<E: Event, P: Event>() -> Vec<u32> {
    let mut versions = vec![E::VERSION];
    versions.extend(P::accepted_versions());
    versions
}

/// The check that `previous` names an older version of the same event.
const fn check_previous(name: &str, version: u32, previous_name: &str, previous_version: u32) {
    let (a, b) = (name.as_bytes(), previous_name.as_bytes());
    let mut same = a.len() == b.len();
    let mut i = 0;
    while same && i < a.len() {
        same = a[i] == b[i];
        i += 1;
    }
    assert!(
        same,
        "`previous` must be an older version of the same event: its `name` differs"
    );
    assert!(
        previous_version < version,
        "`previous` must be an older version of the same event: its `version` must be lower"
    );
}
