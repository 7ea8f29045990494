//! The [`Event`] trait: a serde type with a stable name and version.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A type that can be published and handled: a serde type with a stable name and version.
///
/// Derive it with [`#[derive(Event)]`](macro@crate::Event) rather than implementing it by hand.
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
}
