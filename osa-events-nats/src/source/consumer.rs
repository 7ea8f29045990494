//! A handler's durable pull consumer: its name, its configuration from the handler's options,
//! and registering it the way the database stores register a subscription.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use osa_events_core::operations::StartFrom;
use osa_events_core::store::{Reconcile, Subscription};
use osa_events_core::{Error, Result};
use serde_json::Value;

use super::broker;
use crate::subjects::Subjects;

/// The consumer name of handler `handler`: the name itself when it is made of ASCII letters,
/// digits, `_` and `-`; otherwise every other character replaced by `_`, and a hash of the whole
/// name appended, so two handler names never share a consumer (`index.vector` →
/// `index_vector-2c8bf99c`). No `%` and no `.`: nats-server 2.9 breaks the acknowledgement subjects
/// of a consumer whose name holds a `%` (it formats them with the name as a format string).
pub fn consumer_name(handler: &str) -> String {
    let plain =
        |character: char| character.is_ascii_alphanumeric() || matches!(character, '_' | '-');
    if !handler.is_empty() && handler.chars().all(plain) {
        return handler.to_owned();
    }
    let mut name: String = handler
        .chars()
        .map(|character| if plain(character) { character } else { '_' })
        .collect();
    name.push_str(&format!("-{:08x}", fnv1a(handler.as_bytes())));
    name
}

/// The 32-bit FNV-1a hash: stable across processes and versions, unlike `std`'s hasher.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash: u32, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// What the consumer's description records of its subscription, so a later registration can
/// tell a re-point from a conflict (as a database store's subscription row does).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recorded {
    event_type: String,
    routing_key: Option<String>,
    revision: u32,
}

impl Recorded {
    fn of(subscription: &Subscription) -> Self {
        Self {
            event_type: subscription.event_type.clone(),
            routing_key: subscription.routing_key.clone(),
            revision: subscription.revision,
        }
    }

    fn description(&self) -> String {
        serde_json::json!({
            "osa_events": {
                "event_type": self.event_type,
                "routing_key": self.routing_key,
                "revision": self.revision,
            }
        })
        .to_string()
    }

    fn from_description(description: Option<&str>) -> Option<Self> {
        let value: Value = serde_json::from_str(description?).ok()?;
        let recorded = value.get("osa_events")?;
        Some(Self {
            event_type: recorded.get("event_type")?.as_str()?.to_owned(),
            routing_key: recorded
                .get("routing_key")
                .and_then(Value::as_str)
                .map(str::to_owned),
            revision: u32::try_from(recorded.get("revision")?.as_u64()?).ok()?,
        })
    }
}

/// The handler options a consumer is configured from, read from the subscription's config
/// snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Options {
    /// `retries`: the consumer delivers a message `retries + 2` times at most (see the module
    /// docs of [`source`](crate::source)).
    pub(crate) retries: u32,
    /// `claim_timeout`: the consumer's ack wait.
    pub(crate) claim_timeout: Duration,
    /// `batch × concurrency`: what may be claimed at once.
    pub(crate) in_flight: u32,
}

impl Options {
    pub(crate) fn of(subscription: &Subscription) -> Result<Self> {
        let config = &subscription.config;
        let number = |key: &str| config.get(key).and_then(Value::as_u64);
        let millis = config
            .get("claim_timeout")
            .and_then(Value::as_str)
            .and_then(|text| text.strip_suffix("ms"))
            .and_then(|text| text.parse::<u64>().ok());
        match (number("retries"), millis) {
            (Some(retries), Some(millis)) => Ok(Self {
                retries: u32::try_from(retries).unwrap_or(u32::MAX),
                claim_timeout: Duration::from_millis(millis),
                in_flight: u32::try_from(
                    number("batch")
                        .unwrap_or(1)
                        .saturating_mul(number("concurrency").unwrap_or(1)),
                )
                .unwrap_or(u32::MAX),
            }),
            _ => Err(Error::Config(
                format!(
                    "handler `{}`: its configuration snapshot has no `retries` and `claim_timeout` \
                     (a subscription built by hand?), which its consumer is configured from",
                    subscription.name
                )
                .into(),
            )),
        }
    }
}

/// The consumer configuration for `subscription`; `start` is where a new consumer begins.
fn config(
    subscription: &Subscription,
    subjects: &Subjects,
    options: Options,
    deliver_policy: DeliverPolicy,
) -> consumer::pull::Config {
    let name = consumer_name(&subscription.name);
    consumer::pull::Config {
        durable_name: Some(name.clone()),
        name: Some(name),
        description: Some(Recorded::of(subscription).description()),
        filter_subject: subjects.filter(
            &subscription.event_type,
            subscription.routing_key.as_deref(),
        ),
        ack_policy: AckPolicy::Explicit,
        ack_wait: options.claim_timeout,
        max_deliver: i64::from(options.retries.saturating_add(2).min(i32::MAX as u32)),
        // Room for every claim of the handler at once, twice over for claims awaiting their ack.
        max_ack_pending: i64::from(options.in_flight.saturating_mul(2).max(1_000)),
        deliver_policy,
        ..Default::default()
    }
}

fn deliver_policy(start_from: StartFrom) -> DeliverPolicy {
    match start_from {
        StartFrom::Now => DeliverPolicy::New,
        StartFrom::Beginning => DeliverPolicy::All,
        StartFrom::AfterPosition(position) => DeliverPolicy::ByStartSequence {
            start_sequence: u64::try_from(position).unwrap_or(0).saturating_add(1),
        },
    }
}

/// Creates the consumer of `subscription`, or updates the existing one following
/// [`Subscription::reconcile`]: its filter is kept unless re-pointed with a higher revision, and
/// its starting point is kept whatever `start_from` says.
pub(crate) async fn register(
    stream: &Stream,
    subjects: &Subjects,
    subscription: &Subscription,
) -> Result<PullConsumer> {
    let options = Options::of(subscription)?;
    let name = consumer_name(&subscription.name);
    let existing = match stream.consumer_info(&name).await {
        Ok(info) => Some(info),
        Err(error) if error.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => None,
        Err(error) => return Err(broker(error)),
    };
    let wanted = match existing {
        None => config(
            subscription,
            subjects,
            options,
            deliver_policy(subscription.start_from),
        ),
        Some(info) => {
            let stored = Recorded::from_description(info.config.description.as_deref());
            let as_subscription = stored.map(|stored| Subscription {
                event_type: stored.event_type,
                routing_key: stored.routing_key,
                revision: stored.revision,
                ..subscription.clone()
            });
            let keep_as_is = match &as_subscription {
                Some(stored) => match subscription.reconcile(stored)? {
                    Reconcile::Keep => true,
                    Reconcile::Update => false,
                    Reconcile::Repoint => {
                        subscription.warn_repointed(stored);
                        false
                    }
                },
                // Made by something else under this name: take it over only if it reads the
                // same subjects.
                None => {
                    let filter = subjects.filter(
                        &subscription.event_type,
                        subscription.routing_key.as_deref(),
                    );
                    if info.config.filter_subject != filter {
                        return Err(Error::Config(
                            format!(
                                "handler `{}`: consumer `{name}` exists, not made by osa-events, with filter \
                                 `{}` instead of `{filter}`; delete it or rename the handler",
                                subscription.name, info.config.filter_subject
                            )
                            .into(),
                        ));
                    }
                    false
                }
            };
            if keep_as_is {
                return stream.get_consumer(&name).await.map_err(broker);
            }
            config(subscription, subjects, options, info.config.deliver_policy)
        }
    };
    stream.create_consumer(wanted).await.map_err(|error| {
        Error::Config(
            format!(
                "handler `{}`: JetStream refused consumer `{name}` on stream `{}`: {error} \
                 (a re-pointed filter needs nats-server 2.10; on 2.9, delete the consumer first)",
                subscription.name,
                stream.cached_info().config.name
            )
            .into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_valid_and_distinct() {
        let dotted = consumer_name("index.vector");
        assert!(
            dotted.starts_with("index_vector-") && dotted.len() == "index_vector-".len() + 8,
            "{dotted}"
        );
        assert_ne!(consumer_name("a.b"), consumer_name("a_b"));
        assert_ne!(consumer_name("a.b"), consumer_name("a/b"));
        assert_eq!(
            consumer_name("index.vector"),
            "index_vector-2c8bf99c",
            "stable across versions"
        );
        assert_eq!(consumer_name("plain_name-1"), "plain_name-1");
        for name in ["a b/c", "ü.x", "*", ">", "%"] {
            let consumer = consumer_name(name);
            assert!(
                consumer
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{name:?}: {consumer}"
            );
        }
    }

    #[test]
    fn the_description_round_trips() {
        let recorded = Recorded {
            event_type: "order.placed".into(),
            routing_key: Some("eu".into()),
            revision: 3,
        };
        assert_eq!(
            Recorded::from_description(Some(&recorded.description())),
            Some(recorded)
        );
        assert_eq!(Recorded::from_description(Some("made by hand")), None);
        assert_eq!(Recorded::from_description(None), None);
    }
}
