//! The relay: moves a store's log into JetStream, in the log's order, with no gap.
//!
//! A relay is a projection of the store (see `osa_events::store::ProjectionStore`), so it
//! inherits what projections guarantee:
//!
//! - **Order.** It reads the log in commit order, the projections' causal order: an event is
//!   never relayed before one whose effects its publishing transaction could see, and none is
//!   skipped when transactions commit out of position order.
//! - **One leader.** One process at a time relays under each name, across every node sharing the
//!   store (on PostgreSQL, the projection's advisory lock). The others wait and take over when it
//!   goes.
//! - **A checkpoint that trails the stream.** The checkpoint moves past a batch only when
//!   JetStream has acknowledged (PubAck) every event of it, so a crash, an outage or a lost
//!   leadership re-sends from the checkpoint. Each message carries `Nats-Msg-Id` = the event id,
//!   so JetStream drops the copies it already has, within the stream's duplicate window
//!   (`duplicate_window`, two minutes by default: it must outlast the longest pause between a
//!   publish and its re-send, such as a take-over by another node).
//!
//! Publishes are pipelined: up to [`RelayBuilder::window`] PubAcks outstanding, awaited in
//! order. Where the store reads ahead (PostgreSQL), the next batch is read while the current one
//! is published and acknowledged. On an outage (no connection, no acknowledgement, JetStream restarting) the relay keeps
//! its checkpoint, backs off (200 ms doubling to 10 s), reconnects, and re-sends the batch. On a
//! message the stream refuses for good (larger than its limit, a subject no stream takes),
//! [`Relay::run`] records the error as the relay's `last_error` in the store's status and returns
//! [`RelayError::Rejected`]: the relay stops rather than skip the event. So it does on a delayed
//! event (`Outgoing::deliver_after`, `deliver_at`), which JetStream cannot hold until it is due:
//! it stops rather than relay it early.
//!
//! Each publish uses the relay's own connection, opened with reconnection turned off: a client
//! that reconnects by itself would send, after a reconnect, publishes buffered before it, whose
//! predecessors may have been lost with the old connection, which would put them out of order.
//! (async-nats makes one reconnect attempt whatever it is told; the relay sends that attempt to
//! an address that refuses it, and ignores the servers a cluster advertises.) The relay instead
//! opens a new connection and re-sends from the checkpoint.
//!
//! # Status and metrics
//!
//! The relay's checkpoint is a projection's, named `relay:<name>`: `osa-events status` and the
//! operations API show its lag (events and age), leader and last error like any projection's.
//! The relay also records, with the `metrics` facade:
//!
//! - `osa_events_relay_events_total{relay}` (counter): events JetStream acknowledged;
//! - `osa_events_relay_duplicates_total{relay}` (counter): of those, copies it already had;
//! - `osa_events_relay_failures_total{relay, kind}` (counter): failed batches, `kind` =
//!   `unavailable` or `rejected`;
//! - `osa_events_relay_lag_events{relay}` and `osa_events_relay_lag_seconds{relay}` (gauges):
//!   events of its types not yet relayed, and the age of the oldest, sampled every
//!   [`RelayBuilder::status_every`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use osa_events_core::store::{
    Advance, Checkpoint, Delivery, Leadership, OpenBatch, ProjectionStatus, ProjectionStore,
    ReadAhead, Store, Transaction,
};
use osa_events_core::{CancellationToken, Error, EventSet};

use crate::connect::Connect;
use crate::stream;
use crate::subjects::Subjects;

mod error;
mod window;

pub use error::RelayError;

use window::Failure;

/// How long a follower waits for the leadership in one try.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

/// A relay from a store's log into JetStream: what to relay and where. Build one with
/// [`Relay::builder`], then [`run`](Self::run) it.
///
/// # Examples
///
/// ```no_run
/// use osa_events_nats::{Connect, Relay, Subjects};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(osa_events::Event, Serialize, Deserialize)]
/// # #[event(name = "order.placed")]
/// # struct OrderPlaced { order: u64 }
///
/// # async fn example(store: osa_events::PgStore) -> Result<(), Box<dyn std::error::Error>> {
/// let relay = Relay::builder("orders")
///     .events::<OrderPlaced>()
///     .subjects(Subjects::new("shop")?) // shop.order.placed.<routing key>
///     .build()?;
/// let shutdown = osa_events::CancellationToken::new();
/// relay.run(&store, Connect::url("nats://127.0.0.1:4222"), shutdown).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Relay {
    name: &'static str,
    event_types: &'static [&'static str],
    routing_keys: Option<BTreeSet<String>>,
    subjects: Subjects,
    batch: u32,
    window: usize,
    poll: Duration,
    status_every: Duration,
    instance: String,
}

/// Builds a [`Relay`]; see [`Relay::builder`].
#[derive(Debug, Clone)]
pub struct RelayBuilder {
    name: String,
    event_types: Vec<&'static str>,
    routing_keys: Option<BTreeSet<String>>,
    subjects: Subjects,
    batch: u32,
    window: usize,
    poll: Duration,
    status_every: Duration,
    instance: Option<String>,
}

impl Relay {
    /// Default [`RelayBuilder::batch`].
    pub const DEFAULT_BATCH: u32 = 5_000;
    /// Largest [`RelayBuilder::batch`].
    pub const MAX_BATCH: u32 = 10_000;
    /// Default [`RelayBuilder::window`].
    pub const DEFAULT_WINDOW: usize = 256;
    /// Largest [`RelayBuilder::window`].
    pub const MAX_WINDOW: usize = 4_096;
    /// Default [`RelayBuilder::poll`].
    pub const DEFAULT_POLL: Duration = Duration::from_millis(100);

    /// A relay named `name` (its checkpoint is `relay:<name>`), relaying nothing until given
    /// event types.
    pub fn builder(name: impl Into<String>) -> RelayBuilder {
        RelayBuilder {
            name: name.into(),
            event_types: Vec::new(),
            routing_keys: None,
            subjects: Subjects::default(),
            batch: Self::DEFAULT_BATCH,
            window: Self::DEFAULT_WINDOW,
            poll: Self::DEFAULT_POLL,
            status_every: Duration::from_secs(5),
            instance: None,
        }
    }

    /// The name of its checkpoint in the store: `relay:<name>`.
    pub fn checkpoint_name(&self) -> &'static str {
        self.name
    }

    /// The event types it relays, sorted.
    pub fn event_types(&self) -> &'static [&'static str] {
        self.event_types
    }

    /// Where it publishes.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The relay's state in `store`: checkpoint, lag (events and age), leader, last error.
    ///
    /// # Errors
    ///
    /// [`RelayError::Store`] when the store fails or has no projections.
    pub async fn status<S: Store + ?Sized>(
        &self,
        store: &S,
    ) -> Result<ProjectionStatus, RelayError> {
        let projections = projection_store(store)?;
        Ok(projections.status(self.name, self.event_types).await?)
    }

    /// Relays until `shutdown` is cancelled (then returns `Ok`), or until the stream refuses an
    /// event.
    ///
    /// At start it checks that a JetStream stream takes every subject the relay publishes to,
    /// and records the relay's event types with its checkpoint (a relay whose types changed since
    /// its checkpoint was built is refused, as a projection is: see
    /// `ProjectionStore::record_event_types`). Then it leads (or waits to lead) and relays
    /// batch after batch; NATS being unreachable only pauses it.
    ///
    /// # Errors
    ///
    /// - [`RelayError::NoStream`] when no stream takes one of its subjects (checked once NATS can
    ///   be reached: until then the relay waits and retries);
    /// - [`RelayError::Store`] when the store has no projections, or refuses the event types;
    /// - [`RelayError::Rejected`] when the stream refuses an event for good.
    pub async fn run<S: Store + ?Sized>(
        self,
        store: &S,
        connect: Connect,
        shutdown: CancellationToken,
    ) -> Result<(), RelayError> {
        let projections = projection_store(store)?;
        projections
            .record_event_types(self.name, self.event_types)
            .await?;
        let Some(mut nats) = self.first_connection(&connect, &shutdown).await? else {
            return Ok(());
        };
        tracing::info!(relay = self.name, event_types = ?self.event_types, "relay started");
        let lag = self.spawn_lag_sampler(projections.clone(), shutdown.clone());
        let result = self
            .follow_and_lead(&*projections, &connect, &mut nats, &shutdown)
            .await;
        lag.cancel();
        result
    }

    /// Connects and checks the streams, retrying while NATS cannot be reached; `None` when shut
    /// down first.
    async fn first_connection(
        &self,
        connect: &Connect,
        shutdown: &CancellationToken,
    ) -> Result<Option<jetstream::Context>, RelayError> {
        let mut failures = 0;
        loop {
            let attempt = async {
                let context = connect.open_for_relay(self.window).await?;
                stream::check_covered(&context, &self.subjects, self.event_types).await?;
                Ok::<_, RelayError>(context)
            };
            match attempt.await {
                Ok(context) => return Ok(Some(context)),
                Err(RelayError::Unavailable(error)) => {
                    failures += 1;
                    tracing::warn!(relay = self.name, %error, "NATS is unavailable; the relay waits");
                    if !pause(shutdown, window::pause_after(failures)).await {
                        return Ok(None);
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn follow_and_lead(
        &self,
        projections: &dyn ProjectionStore,
        connect: &Connect,
        nats: &mut jetstream::Context,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        while !shutdown.is_cancelled() {
            let attempt = tokio::select! {
                attempt = projections.try_lead(self.name, &self.instance, FOLLOW_WAIT) => attempt,
                () = shutdown.cancelled() => break,
            };
            match attempt {
                Ok(Some(leadership)) => {
                    tracing::info!(relay = self.name, "leading the relay");
                    let (leadership, result) = self.lead(leadership, connect, nats, shutdown).await;
                    leadership.resign().await;
                    result?;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(relay = self.name, %error, "cannot try for the relay's leadership");
                    if !pause(shutdown, Duration::from_secs(1)).await {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Relays batches while leading; hands the leadership back with the reason it stopped:
    /// `Ok` for a shutdown or a lost leadership (follow again), `Err` to stop the relay.
    ///
    /// Where the store reads ahead ([`Leadership::read_ahead`]), the next batch is read while
    /// the current one is published and acknowledged, so the log's reads cost no time of their
    /// own; it is relayed only once the current batch's checkpoint is saved.
    async fn lead(
        &self,
        mut leadership: Box<dyn Leadership>,
        connect: &Connect,
        nats: &mut jetstream::Context,
        shutdown: &CancellationToken,
    ) -> (Box<dyn Leadership>, Result<(), RelayError>) {
        let mut failures: u32 = 0;
        let mut ahead: Option<Chunk> = None;
        while !shutdown.is_cancelled() {
            let mut chunk = match ahead.take() {
                Some(chunk) => chunk,
                None => match leadership.next_batch(self.event_types, self.batch).await {
                    Ok(batch) => Chunk::read(batch),
                    Err(error) => {
                        tracing::warn!(relay = self.name, %error, "cannot read the log; following");
                        return (leadership, Ok(()));
                    }
                },
            };
            if chunk.events.is_empty() {
                // Caught up (perhaps past events of other types only: the cursor moves there).
                if chunk.advance.to != chunk.advance.from
                    && let Err(error) = chunk.commit(&mut *leadership).await
                {
                    tracing::warn!(relay = self.name, %error, "cannot move the checkpoint; following");
                    return (leadership, Ok(()));
                }
                if !pause(shutdown, self.poll).await {
                    break;
                }
                continue;
            }
            let keep = |event: &Delivery| match &self.routing_keys {
                None => true,
                Some(keys) => event
                    .routing_key
                    .as_ref()
                    .is_some_and(|key| keys.contains(key)),
            };
            let after = chunk.advance.to;
            let publish =
                window::publish_all(nats, &self.subjects, &mut chunk.events, keep, self.window);
            // A batch that holds its transaction holds the leader's session too (on PostgreSQL,
            // the one connection with the lock): the read ahead waits for its commit.
            let (sent, read) = if chunk.transaction.is_none() {
                let (sent, read) = tokio::join!(
                    publish,
                    leadership.read_ahead(self.event_types, after, self.batch)
                );
                (sent, Some(read))
            } else {
                (publish.await, None)
            };
            match sent {
                Ok(sent) => {
                    match chunk.commit(&mut *leadership).await {
                        Ok(true) => {}
                        // A reset moved the checkpoint: go on from there.
                        Ok(false) => continue,
                        Err(error) => {
                            // The events are in the stream; whoever leads next sends them
                            // again, and JetStream drops the copies.
                            tracing::warn!(relay = self.name, %error, "cannot save the checkpoint; following");
                            return (leadership, Ok(()));
                        }
                    }
                    failures = 0;
                    metrics::counter!("osa_events_relay_events_total", "relay" => self.name)
                        .increment(sent.acknowledged);
                    metrics::counter!("osa_events_relay_duplicates_total", "relay" => self.name)
                        .increment(sent.duplicates);
                    let read = match read {
                        Some(read) => read,
                        None => {
                            leadership
                                .read_ahead(self.event_types, after, self.batch)
                                .await
                        }
                    };
                    ahead = match read {
                        Ok(Some(read)) => Some(Chunk::ahead(after, read)),
                        Ok(None) => None,
                        Err(error) => {
                            tracing::debug!(relay = self.name, %error, "cannot read ahead; reading from the checkpoint");
                            None
                        }
                    };
                }
                Err(Failure::Unavailable(error)) => {
                    drop(chunk);
                    failures = failures.saturating_add(1);
                    metrics::counter!("osa_events_relay_failures_total", "relay" => self.name, "kind" => "unavailable")
                        .increment(1);
                    let retry_in = window::pause_after(failures);
                    tracing::warn!(relay = self.name, %error, failures, ?retry_in, "NATS unavailable; checkpoint kept, the batch is sent again");
                    let stored = format!("NATS unavailable: {error}");
                    if let Err(error) = leadership.record_failure(&stored).await {
                        tracing::warn!(relay = self.name, %error, "cannot record the failure");
                    }
                    if !pause(shutdown, retry_in).await {
                        break;
                    }
                    // A new connection: the old one may hold publishes it would send late.
                    match connect.open_for_relay(self.window).await {
                        Ok(context) => *nats = context,
                        Err(error) => {
                            tracing::warn!(relay = self.name, %error, "cannot reconnect to NATS yet");
                        }
                    }
                }
                Err(Failure::Rejected {
                    event,
                    subject,
                    reason,
                }) => {
                    drop(chunk);
                    metrics::counter!("osa_events_relay_failures_total", "relay" => self.name, "kind" => "rejected")
                        .increment(1);
                    let error = RelayError::Rejected {
                        relay: self.name,
                        event_id: event.event_id,
                        event_type: event.event_type,
                        position: event.fence.position,
                        subject,
                        reason,
                    };
                    tracing::error!(relay = self.name, %error, "the stream refused an event; the relay stops");
                    if let Err(record) = leadership.record_failure(&error.to_string()).await {
                        tracing::warn!(relay = self.name, error = %record, "cannot record the failure");
                    }
                    return (leadership, Err(error));
                }
            }
        }
        (leadership, Ok(()))
    }

    /// Samples the relay's lag into its gauges until `stop` is cancelled.
    fn spawn_lag_sampler(
        &self,
        projections: Arc<dyn ProjectionStore>,
        shutdown: CancellationToken,
    ) -> CancellationToken {
        let stop = shutdown.child_token();
        let (name, event_types, every) = (self.name, self.event_types, self.status_every);
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                match projections.status(name, event_types).await {
                    Ok(status) => {
                        metrics::gauge!("osa_events_relay_lag_events", "relay" => name)
                            .set(status.lag.max(0) as f64);
                        metrics::gauge!("osa_events_relay_lag_seconds", "relay" => name)
                            .set(status.oldest_unapplied.map_or(0.0, |age| age.as_secs_f64()));
                    }
                    Err(error) => {
                        tracing::debug!(relay = name, %error, "cannot sample the relay's lag")
                    }
                }
                if !pause(&stopped, every).await {
                    break;
                }
            }
        });
        stop
    }
}

impl RelayBuilder {
    /// Relays the events of `E` (one event type, or an `EventSet` enum of several).
    pub fn events<E: EventSet>(mut self) -> Self {
        self.event_types.extend_from_slice(E::NAMES);
        self
    }

    /// Relays the events of these type names.
    pub fn event_types(mut self, event_types: &[&'static str]) -> Self {
        self.event_types.extend_from_slice(event_types);
        self
    }

    /// Relays only events published with one of these routing keys (by default, every event of
    /// its types). The others are read past: the checkpoint moves over them.
    pub fn routing_keys<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.routing_keys = Some(keys.into_iter().map(Into::into).collect());
        self
    }

    /// Where events go (default: `osa.<event type>.<routing key>`).
    pub fn subjects(mut self, subjects: Subjects) -> Self {
        self.subjects = subjects;
        self
    }

    /// Events read from the log per batch, in 1..=10,000 (default 5,000): the checkpoint moves
    /// once per batch, when all of it is acknowledged.
    pub fn batch(mut self, batch: u32) -> Self {
        self.batch = batch;
        self
    }

    /// PubAcks outstanding at most, in 1..=4,096 (default 256).
    pub fn window(mut self, window: usize) -> Self {
        self.window = window;
        self
    }

    /// How long the relay waits for new events once it has caught up (default 100 ms).
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// How often the lag gauges are sampled (default 5 s).
    pub fn status_every(mut self, every: Duration) -> Self {
        self.status_every = every;
        self
    }

    /// The name this process leads under, shown as the relay's leader (default `host:pid`).
    pub fn instance_name(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// [`RelayError::Config`] for an empty name, no event types, an event type that cannot be a
    /// subject, an empty routing-key filter, or `batch`, `window`, `poll` out of range.
    pub fn build(self) -> Result<Relay, RelayError> {
        let fail = |what: String| Err(RelayError::Config(format!("relay `{}`: {what}", self.name)));
        if self.name.trim().is_empty() {
            return fail("the name is empty".into());
        }
        if self.event_types.is_empty() {
            return fail(
                "no event types: add them with `events::<E>()` or `event_types(..)`".into(),
            );
        }
        if !(1..=Relay::MAX_BATCH).contains(&self.batch) {
            return fail(format!(
                "`batch` must be in 1..={}, found {}",
                Relay::MAX_BATCH,
                self.batch
            ));
        }
        if !(1..=Relay::MAX_WINDOW).contains(&self.window) {
            return fail(format!(
                "`window` must be in 1..={}, found {}",
                Relay::MAX_WINDOW,
                self.window
            ));
        }
        if self.poll.is_zero() || self.status_every.is_zero() {
            return fail("`poll` and `status_every` must be longer than zero".into());
        }
        if self.routing_keys.as_ref().is_some_and(BTreeSet::is_empty) {
            return fail("the routing-key filter is empty, so nothing would be relayed".into());
        }
        let mut event_types = self.event_types.clone();
        event_types.sort_unstable();
        event_types.dedup();
        for event_type in &event_types {
            self.subjects
                .check_event_type(event_type)
                .map_err(|error| RelayError::Config(format!("relay `{}`: {error}", self.name)))?;
        }
        Ok(Relay {
            name: Box::leak(format!("relay:{}", self.name).into_boxed_str()),
            event_types: Box::leak(event_types.into_boxed_slice()),
            routing_keys: self.routing_keys,
            subjects: self.subjects,
            batch: self.batch,
            window: self.window,
            poll: self.poll,
            status_every: self.status_every,
            instance: self
                .instance
                .unwrap_or_else(osa_events_core::default_instance_name),
        })
    }
}

/// The store's projection side, which a relay needs.
fn projection_store<S: Store + ?Sized>(store: &S) -> Result<Arc<dyn ProjectionStore>, RelayError> {
    store.projections().ok_or_else(|| {
        RelayError::Store(Error::Config(
            "this store runs no projections, and a relay is one: use PostgreSQL or SQLite".into(),
        ))
    })
}

/// A batch of the log to relay: read by [`Leadership::next_batch`] (with its transaction, where
/// the store has them) or ahead of the checkpoint by [`Leadership::read_ahead`].
struct Chunk {
    events: Vec<Delivery>,
    advance: Advance,
    transaction: Option<Box<dyn Transaction>>,
    read_ahead: bool,
}

impl Chunk {
    fn read(batch: OpenBatch) -> Self {
        Self {
            events: batch.events,
            advance: batch.advance,
            transaction: batch.transaction,
            read_ahead: false,
        }
    }

    fn ahead(from: Checkpoint, read: ReadAhead) -> Self {
        Self {
            events: read.events,
            advance: Advance { from, to: read.to },
            transaction: None,
            read_ahead: true,
        }
    }

    /// Saves the checkpoint after this chunk; `false` when a reset moved it meanwhile (it then
    /// stands, and nothing was written).
    async fn commit(self, leadership: &mut dyn Leadership) -> osa_events_core::Result<bool> {
        if self.read_ahead {
            leadership.commit_ahead(self.advance).await
        } else {
            leadership
                .commit(self.advance, self.transaction)
                .await
                .map(|()| true)
        }
    }
}

/// Sleeps `duration` unless shut down first; `false` when shut down.
async fn pause(shutdown: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        () = shutdown.cancelled() => false,
    }
}
