//! How the relay and the JetStream store reach NATS: a server URL and the client options.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::ConnectOptions;
use async_nats::jetstream;

use crate::relay::RelayError;

/// How long a connection attempt, a JetStream request or a PubAck may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where the relay's connections reconnect to: an address that refuses every connection (no
/// socket listens on port 0), so that a lost connection stays lost (see
/// `Connect::open_for_relay`).
const NOWHERE: &str = "nats://127.0.0.1:0";

/// Where NATS is and how to connect to it: the server URL(s) and, optionally, the client's
/// options (credentials, TLS, a name), made fresh for each connection.
///
/// # Examples
///
/// ```
/// use osa_events_nats::Connect;
///
/// let plain = Connect::url("nats://127.0.0.1:4222");
/// let named = Connect::url("nats://127.0.0.1:4222")
///     .with_options(|| async_nats::ConnectOptions::new().name("orders-relay"));
/// # let _ = (plain, named);
/// ```
#[derive(Clone)]
pub struct Connect {
    url: String,
    options: Arc<dyn Fn() -> ConnectOptions + Send + Sync>,
}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connect")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Connect {
    /// The server at `url` (`nats://host:port`, or several separated by commas), with the
    /// client's default options.
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            options: Arc::new(ConnectOptions::new),
        }
    }

    /// Makes each connection's options with `options` (the relay then turns reconnection off on
    /// them, see the [relay's docs](crate::relay)).
    pub fn with_options(
        mut self,
        options: impl Fn() -> ConnectOptions + Send + Sync + 'static,
    ) -> Self {
        self.options = Arc::new(options);
        self
    }

    /// The server URL(s).
    pub fn server_url(&self) -> &str {
        &self.url
    }

    /// A new connection for the relay: no reconnection, so nothing it buffered is sent after a
    /// reconnect; at most `window` PubAcks in flight, waiting rather than failing beyond that.
    ///
    /// A client that reconnected would send, on the new connection, the publishes still queued
    /// for the old one, ahead of those lost with it, which the relay sends again only when their
    /// PubAcks time out: out of order (`reliability::nats_faults::connection_cut`). async-nats
    /// cannot be told to make no reconnect attempt (`max_reconnects(0)` means no limit), so the
    /// one attempt it makes is sent to [`NOWHERE`], which refuses it: the client then closes,
    /// its queued publishes fail, and the relay opens a new connection and re-sends from its
    /// checkpoint. Servers the cluster advertises are ignored, since they would be tried too.
    pub(crate) async fn open_for_relay(
        &self,
        window: usize,
    ) -> Result<jetstream::Context, RelayError> {
        let unavailable = |error: &dyn fmt::Display| {
            RelayError::Unavailable(format!("cannot connect to {}: {error}", self.url))
        };
        let client = (self.options)()
            // One attempt, to `NOWHERE`, and then the client closes.
            .max_reconnects(1)
            .ignore_discovered_servers()
            .connection_timeout(TIMEOUT)
            .connect(self.url.as_str())
            .await
            .map_err(|error| unavailable(&error))?;
        // Until this returns the relay has published nothing, so a reconnect before it is harmless.
        client
            .set_server_pool(NOWHERE)
            .await
            .map_err(|error| unavailable(&error))?;
        Ok(jetstream::ContextBuilder::new()
            .timeout(TIMEOUT)
            .max_ack_inflight(window)
            .backpressure_on_inflight(true)
            .build(client))
    }

    /// A connection for a long-lived consumer, which reconnects by itself (unbounded, with the
    /// client's backoff) and retries its first connection.
    pub(crate) async fn open_reconnecting(
        &self,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        (self.options)()
            .connection_timeout(TIMEOUT)
            .retry_on_initial_connect()
            .connect(self.url.as_str())
            .await
    }
}
