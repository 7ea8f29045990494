//! JetStream as a source: the same `#[event_handler]`s, run by the same runtime, on durable pull
//! consumers of a stream.
//!
//! [`JetStreamStore`] implements the runtime's `Store`, so `Runtime::builder(store)` and
//! `run_all_handlers(store, ..)` work on it unchanged. Each handler gets one durable pull
//! consumer on the stream, named after it (see [`consumer_name`]), configured from its options:
//!
//! | handler option | consumer |
//! | --- | --- |
//! | `routing_key` | `filter_subject`: `<prefix>.<event type>.<key>`, or `.*` for every key |
//! | `claim_timeout` | `ack_wait` |
//! | `retries` | `max_deliver` = `retries + 2` (see below) |
//! | `batch` | the fetch size |
//! | `start_from` | `deliver_policy` of a new consumer: `new`, `all`, or by start sequence |
//!
//! and the outcomes map to acknowledgements:
//!
//! | outcome | JetStream |
//! | --- | --- |
//! | success | `ack` |
//! | retryable error | `nak` with the handler's backoff as the delay |
//! | permanent error, or the last attempt failed | published to the dead-letter subject (see [`dead`]), then `term` |
//! | still running (the heartbeat) | in-progress ack (`+WPI`), which restarts the ack wait |
//! | shutdown before finishing | `nak` without delay |
//! | an event version newer than the code | `nak` with a delay |
//! | `HandlerError::retry_after` | `nak` with the handler's delay (at most 24 h) |
//! | `HandlerError::fatal` | `nak` without delay, and the runtime stops |
//!
//! `Batch`, `Ctx` (event id, attempt = JetStream's delivery count, metadata from the headers),
//! `State` and `BatchOutcome` work as on a database. `Tx` does not: JetStream has no transaction
//! to join, and the runtime refuses, at start-up, a handler that takes one. Projections need a
//! database store too.
//!
//! # What differs from the database stores, exactly
//!
//! - **No fencing across processes.** A worker whose ack wait passed (a long pause, a partition)
//!   can still ack, nak or terminate its copy after JetStream redelivered the message to another
//!   worker: the second worker's outcome may then be lost or doubled. Within one process a
//!   redelivered message gets a new claim token, and the old claim's writes change nothing, as on
//!   the database stores. Keep `claim_timeout` well above the handler's longest run; the
//!   heartbeat extends it while the handler runs.
//! - **The attempt counter is JetStream's delivery count.** It also counts deliveries that were
//!   given back unfinished: a shutdown mid-batch, an event deferred for a newer version, a
//!   handler's `HandlerError::retry_after` and a delivery given back by `HandlerError::fatal` each
//!   use one up (on a database store they count nothing). So a handler that keeps asking to retry
//!   later is dead-lettered here once its `retries` are used up, as "gave up at claim …".
//! - **`max_deliver` is `retries + 2`, not `retries + 1`.** A message whose last allowed attempt
//!   died with its process must be delivered once more so that the runtime can dead-letter it
//!   without running the handler (the same rule as on a database store): with `retries + 1`
//!   JetStream would never deliver it again, and it would sit in the stream, unacknowledged and in
//!   no dead-letter subject.
//! - **No last error.** JetStream keeps no error with a nak, so `Ctx` has none; the dead letter
//!   carries the last one.
//! - **No operations API.** Status, pause and replay are JetStream's own (`nats consumer info`,
//!   the stream's dead-letter subject); `osa-events status` does not apply.
//! - **Order.** A consumer delivers in stream order, but retries and parallel workers interleave,
//!   as with `concurrency > 1` on a database.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{self, AckKind, Message};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use osa_events_core::store::{
    ClaimRequest, Delivery, Failure, Fence, Store, Subscription, SubscriptionId,
};
use osa_events_core::{Error, Result};

use crate::connect::Connect;
use crate::headers::Envelope;
use crate::subjects::{Subjects, covers};

mod claims;
mod consumer;
pub mod dead;

pub use consumer::consumer_name;

use claims::Claims;

/// The default dead-letter prefix: dead letters of handler `h` go to `osa-dead.h`.
pub const DEFAULT_DEAD_LETTER_PREFIX: &str = "osa-dead";

/// How long a claim waits for a first message when none is waiting: a long poll, so an idle
/// handler sees a new message within this much of its arrival plus its `poll`.
const FIRST_MESSAGE_WAIT: Duration = Duration::from_millis(250);

/// A store whose deliveries are the messages of a JetStream stream: see the [module docs](self).
///
/// # Examples
///
/// ```no_run
/// use osa_events_nats::{Connect, JetStreamStore};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let store = JetStreamStore::builder(Connect::url("nats://127.0.0.1:4222"), "EVENTS")
///     .connect()
///     .await?;
/// osa_events::run_all_handlers(store, osa_events::Resources::new()).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct JetStreamStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JetStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamStore")
            .field("stream", &self.inner.stream_name)
            .field("subjects", &self.inner.subjects)
            .finish_non_exhaustive()
    }
}

struct Inner {
    context: jetstream::Context,
    stream: Stream,
    stream_name: String,
    subjects: Subjects,
    dead_letter_prefix: String,
    /// By subscription id (the index).
    subscriptions: RwLock<Vec<Registered>>,
    claims: Claims,
}

#[derive(Clone)]
struct Registered {
    name: String,
    event_type: String,
    consumer: PullConsumer,
    dead_letter_subject: String,
}

/// Builds a [`JetStreamStore`]; see [`JetStreamStore::builder`].
#[derive(Debug, Clone)]
pub struct JetStreamStoreBuilder {
    connect: Connect,
    stream: String,
    subjects: Subjects,
    dead_letter_prefix: String,
}

impl JetStreamStoreBuilder {
    /// The subjects events were relayed to (default: `osa.<event type>.<routing key>`): the
    /// same [`Subjects`] as the relay's.
    pub fn subjects(mut self, subjects: Subjects) -> Self {
        self.subjects = subjects;
        self
    }

    /// Where dead letters go: handler `h`'s to `<prefix>.<h as a consumer name>` (default
    /// `osa-dead`). A stream must take those subjects.
    pub fn dead_letter_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.dead_letter_prefix = prefix.into();
        self
    }

    /// Connects (retrying until NATS answers) and looks the stream up.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the stream does not exist or the dead-letter prefix is not a
    /// subject; [`Error::Broker`] when JetStream fails.
    pub async fn connect(self) -> Result<JetStreamStore> {
        Subjects::new(self.dead_letter_prefix.clone())
            .map_err(|error| Error::Config(format!("the dead-letter prefix: {error}").into()))?;
        let client = self.connect.open_reconnecting().await.map_err(broker)?;
        let context = jetstream::new(client);
        let stream = context.get_stream(&self.stream).await.map_err(|error| {
            Error::Config(
                format!(
                    "cannot open JetStream stream `{}` at {}: {error} (create it first; \
                     `osa_events_nats::stream::create` makes one for tests and examples)",
                    self.stream,
                    self.connect.server_url()
                )
                .into(),
            )
        })?;
        Ok(JetStreamStore {
            inner: Arc::new(Inner {
                context,
                stream,
                stream_name: self.stream,
                subjects: self.subjects,
                dead_letter_prefix: self.dead_letter_prefix,
                subscriptions: RwLock::new(Vec::new()),
                claims: Claims::default(),
            }),
        })
    }
}

impl JetStreamStore {
    /// A store reading stream `stream` at `connect`.
    pub fn builder(connect: Connect, stream: impl Into<String>) -> JetStreamStoreBuilder {
        JetStreamStoreBuilder {
            connect,
            stream: stream.into(),
            subjects: Subjects::default(),
            dead_letter_prefix: DEFAULT_DEAD_LETTER_PREFIX.to_owned(),
        }
    }

    /// The JetStream context the store uses.
    pub fn context(&self) -> &jetstream::Context {
        &self.inner.context
    }

    /// The stream's name.
    pub fn stream_name(&self) -> &str {
        &self.inner.stream_name
    }

    /// The dead-letter subject of handler `handler`.
    pub fn dead_letter_subject(&self, handler: &str) -> String {
        format!(
            "{}.{}",
            self.inner.dead_letter_prefix,
            consumer_name(handler)
        )
    }

    fn registered(&self, subscription: SubscriptionId) -> Result<Registered> {
        let subscriptions = self
            .inner
            .subscriptions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        usize::try_from(subscription.0)
            .ok()
            .and_then(|index| subscriptions.get(index).cloned())
            .ok_or_else(|| {
                Error::Config(format!("unknown subscription id {}", subscription.0).into())
            })
    }

    async fn register_all(&self, subscriptions: &[Subscription]) -> Result<Vec<SubscriptionId>> {
        let patterns = self.inner.stream.cached_info().config.subjects.clone();
        let mut consumers = Vec::with_capacity(subscriptions.len());
        for subscription in subscriptions {
            self.inner
                .subjects
                .check_event_type(&subscription.event_type)?;
            let filter = self.inner.subjects.filter(
                &subscription.event_type,
                subscription.routing_key.as_deref(),
            );
            if !patterns.iter().any(|pattern| covers(pattern, &filter)) {
                return Err(Error::Config(
                    format!(
                        "handler `{}`: stream `{}` (subjects {patterns:?}) does not take `{filter}`",
                        subscription.name, self.inner.stream_name
                    )
                    .into(),
                ));
            }
            let dead_letter_subject = self.dead_letter_subject(&subscription.name);
            self.check_dead_letters_stored(&subscription.name, &dead_letter_subject)
                .await?;
            let consumer =
                consumer::register(&self.inner.stream, &self.inner.subjects, subscription).await?;
            consumers.push(Registered {
                name: subscription.name.clone(),
                event_type: subscription.event_type.clone(),
                consumer,
                dead_letter_subject,
            });
        }
        let mut registered = self
            .inner
            .subscriptions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut ids = Vec::with_capacity(consumers.len());
        for consumer in consumers {
            let index = match registered
                .iter()
                .position(|known| known.name == consumer.name)
            {
                Some(index) => {
                    registered[index] = consumer;
                    index
                }
                None => {
                    registered.push(consumer);
                    registered.len() - 1
                }
            };
            ids.push(SubscriptionId(i32::try_from(index).unwrap_or(i32::MAX)));
        }
        Ok(ids)
    }

    /// Fails when no stream stores `subject`: a dead letter published there would be lost.
    async fn check_dead_letters_stored(&self, handler: &str, subject: &str) -> Result<()> {
        match self.inner.context.stream_by_subject(subject).await {
            Ok(_) => Ok(()),
            Err(error)
                if error.kind() == jetstream::context::GetStreamByNameErrorKind::NotFound =>
            {
                Err(Error::Config(
                    format!(
                        "handler `{handler}`: no JetStream stream takes its dead-letter subject `{subject}`, \
                         so its dead letters would be lost: add `{}.>` to a stream's subjects",
                        self.inner.dead_letter_prefix
                    )
                    .into(),
                ))
            }
            Err(error) => Err(broker(error)),
        }
    }

    async fn claim_messages(&self, request: ClaimRequest<'_>) -> Result<Vec<Delivery>> {
        let registered = self.registered(request.subscription)?;
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX).max(1);
        let mut messages = fetch(&registered.consumer, limit).await?;
        if messages.is_empty() {
            // Nothing waiting: wait briefly for one, then take what came with it.
            let mut first = registered
                .consumer
                .batch()
                .max_messages(1)
                .expires(FIRST_MESSAGE_WAIT)
                .messages()
                .await
                .map_err(broker)?;
            while let Some(message) = first.next().await {
                messages.push(message.map_err(broker)?);
            }
            if !messages.is_empty() && limit > 1 {
                messages.extend(fetch(&registered.consumer, limit - 1).await?);
            }
        }
        let mut deliveries = Vec::with_capacity(messages.len());
        for message in messages {
            let info = match message.info() {
                Ok(info) => info,
                Err(error) => {
                    // Not a JetStream delivery (no ack subject to read): nothing to acknowledge,
                    // and nothing the consumer will count as delivered.
                    tracing::warn!(handler = %registered.name, %error, "a message with no JetStream metadata was skipped");
                    continue;
                }
            };
            let fence = Fence {
                position: i64::try_from(info.stream_sequence).unwrap_or(i64::MAX),
                token: uuid::Uuid::new_v4(),
            };
            let attempt = u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX);
            let published_at = SystemTime::from(info.published);
            let envelope = Envelope::read(message.headers.as_ref(), info.stream_sequence);
            // A body that is not UTF-8 is kept as a lossy copy, which does not decode: the
            // handler's decode error dead-letters the message, with its body intact.
            let payload = String::from_utf8_lossy(&message.payload).into_owned();
            deliveries.push(envelope.into_delivery(
                fence,
                attempt,
                &registered.event_type,
                payload,
                published_at,
            ));
            self.inner.claims.hold(request.subscription, fence, message);
        }
        Ok(deliveries)
    }

    /// Sends `kind` for each held claim of `fences`, removing them; returns how many were held.
    /// Acknowledgements are sent, not confirmed (as every JetStream client's plain `ack`): one
    /// lost with the connection leaves its message to be delivered again after the ack wait.
    async fn settle(
        &self,
        subscription: SubscriptionId,
        fences: &[Fence],
        kind: AckKind,
    ) -> Result<u64> {
        let held = self.inner.claims.take(subscription, fences);
        let count = held.len() as u64;
        for (_, message) in &held {
            if let Err(error) = message.ack_with(kind).await {
                self.inner.claims.restore(subscription, held);
                return Err(broker(error));
            }
        }
        Ok(count)
    }

    async fn fail_all(&self, subscription: SubscriptionId, failures: &[Failure]) -> Result<u64> {
        let registered = self.registered(subscription)?;
        let mut written = 0;
        for failure in failures {
            let Some((fence, message)) = self
                .inner
                .claims
                .take(subscription, std::slice::from_ref(&failure.fence))
                .pop()
            else {
                continue;
            };
            let outcome = match failure.retry_in {
                Some(delay) => message
                    .ack_with(AckKind::Nak(Some(delay)))
                    .await
                    .map_err(broker),
                None => {
                    self.dead_letter(&registered, &message, &failure.stored_error())
                        .await
                }
            };
            if let Err(error) = outcome {
                self.inner
                    .claims
                    .restore(subscription, vec![(fence, message)]);
                return Err(error);
            }
            written += 1;
        }
        Ok(written)
    }

    async fn dead_letter(
        &self,
        registered: &Registered,
        message: &Message,
        error: &str,
    ) -> Result<()> {
        let event_id = message
            .info()
            .map(|info| Envelope::read(message.headers.as_ref(), info.stream_sequence).event_id)
            .unwrap_or_default();
        dead::publish(
            &self.inner.context,
            registered.dead_letter_subject.clone(),
            &registered.name,
            event_id,
            message,
            error,
        )
        .await?;
        message.ack_with(AckKind::Term).await.map_err(broker)
    }

    async fn extend_all(&self, subscription: SubscriptionId, fences: &[Fence]) -> Result<Vec<i64>> {
        let held = self.inner.claims.peek(subscription, fences);
        for (_, message) in &held {
            message.ack_with(AckKind::Progress).await.map_err(broker)?;
        }
        Ok(held.iter().map(|(fence, _)| fence.position).collect())
    }

    async fn defer_all(&self, subscription: SubscriptionId, deferred: &[Failure]) -> Result<u64> {
        let mut written = 0;
        for failure in deferred {
            written += self
                .settle(
                    subscription,
                    std::slice::from_ref(&failure.fence),
                    AckKind::Nak(failure.retry_in),
                )
                .await?;
        }
        Ok(written)
    }
}

/// Up to `limit` messages waiting for `consumer` now (no wait).
async fn fetch(consumer: &PullConsumer, limit: usize) -> Result<Vec<Message>> {
    let mut batch = consumer
        .fetch()
        .max_messages(limit)
        .messages()
        .await
        .map_err(broker)?;
    let mut messages = Vec::with_capacity(limit);
    while let Some(message) = batch.next().await {
        messages.push(message.map_err(broker)?);
    }
    Ok(messages)
}

/// A NATS client error as the runtime's.
pub(crate) fn broker(error: impl Into<osa_events_core::BackendError>) -> Error {
    Error::Broker(error.into())
}

impl Store for JetStreamStore {
    fn register<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> BoxFuture<'a, Result<Vec<SubscriptionId>>> {
        Box::pin(self.register_all(subscriptions))
    }

    fn claim<'a>(&'a self, request: ClaimRequest<'a>) -> BoxFuture<'a, Result<Vec<Delivery>>> {
        Box::pin(self.claim_messages(request))
    }

    fn complete<'a>(
        &'a self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.settle(subscription, done, AckKind::Ack))
    }

    fn fail<'a>(
        &'a self,
        subscription: SubscriptionId,
        failures: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.fail_all(subscription, failures))
    }

    fn extend<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
        _claim_timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<i64>>> {
        Box::pin(self.extend_all(subscription, claims))
    }

    fn release<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.settle(subscription, claims, AckKind::Nak(None)))
    }

    fn defer<'a>(
        &'a self,
        subscription: SubscriptionId,
        deferred: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.defer_all(subscription, deferred))
    }

    fn applies_start_from(&self) -> bool {
        // A new consumer's deliver policy (see `consumer::register`).
        true
    }

    fn no_transactions_reason(&self) -> &'static str {
        "JetStream has no transaction to join (a JetStream handler acknowledges each message on its \
         own); publish from a handler running on a database store instead"
    }
}
