//! NATS JetStream for osa-events: the scale-out path past one database.
//!
//! - **The relay** ([`Relay`]) moves a store's log into JetStream: services publish into their own
//!   database (inside their own transaction, as always), and one relay per log publishes each
//!   event to a subject of its type, in the log's order, with no gap and no duplicate. Other
//!   services, in any language, consume the stream.
//! - **The JetStream store** ([`JetStreamStore`]) runs the same `#[event_handler]`s against
//!   durable pull consumers of a stream, with the runtime you already use.
//!
//! Subjects are `<prefix>.<event type>.<routing key>` (see [`Subjects`]); the envelope travels
//! in headers (see [`headers`]) and the body is the payload JSON, unchanged.
//!
//! What differs from the database stores is written down in the [`source`] module's docs.

pub mod headers;
pub mod relay;
pub mod source;
pub mod stream;
pub mod subjects;

mod connect;

pub use connect::Connect;
pub use relay::{Relay, RelayBuilder, RelayError};
pub use source::{JetStreamStore, JetStreamStoreBuilder};

pub use subjects::Subjects;
