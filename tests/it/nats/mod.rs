//! NATS JetStream: the relay (PostgreSQL → JetStream) and the JetStream store (JetStream → the
//! same handlers), against a throwaway `nats-server -js` of each test's own (never the machine's
//! shared one): its own port and store directory, removed afterwards. Under `CI=true` a test
//! fails when no `nats-server` can be had; elsewhere it skips with a note.

mod relay;
mod source;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use osa_events::nats::{Connect, Subjects};
use osa_events_fixtures::nats::{NatsServer, nats_server_or_skip};

/// A test's own JetStream: the server, and a client of it for the test's checks.
pub(crate) struct Nats {
    pub(crate) server: NatsServer,
    pub(crate) context: jetstream::Context,
}

impl Nats {
    /// A fresh server (`None`: skipped, see the module docs).
    pub(crate) async fn start() -> Option<Nats> {
        let server = nats_server_or_skip().await?;
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(server.url())
            .await
            .expect("connect to the test's nats-server");
        Some(Nats {
            server,
            context: jetstream::new(client),
        })
    }

    pub(crate) fn connect(&self) -> Connect {
        Connect::url(self.server.url())
    }

    /// The stream `EVENTS`, taking `osa.>` and the dead letters `osa-dead.>`.
    pub(crate) async fn events_stream(&self) -> stream::Stream {
        self.context
            .create_stream(stream::Config {
                name: "EVENTS".into(),
                subjects: vec![Subjects::default().all(), "osa-dead.>".into()],
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .expect("create the stream")
    }

    /// Every message of `stream`, in stream order.
    pub(crate) async fn messages(&self, name: &str) -> Vec<jetstream::message::StreamMessage> {
        let mut stream = self.context.get_stream(name).await.expect("the stream");
        let state = stream.info().await.expect("stream info").state.clone();
        let mut messages = Vec::new();
        for sequence in state.first_sequence..=state.last_sequence {
            if state.messages == 0 {
                break;
            }
            if let Ok(message) = stream.get_raw_message(sequence).await {
                messages.push(message);
            }
        }
        messages
    }

    /// How many messages `stream` holds.
    pub(crate) async fn count(&self, name: &str) -> u64 {
        let mut stream = self.context.get_stream(name).await.expect("the stream");
        stream.info().await.expect("stream info").state.messages
    }
}

/// A header of `message` as text.
pub(crate) fn header<'a>(
    message: &'a jetstream::message::StreamMessage,
    name: &str,
) -> Option<&'a str> {
    message.headers.get(name).map(|value| value.as_str())
}
