//! The messages a process holds: what each claim's fence stands for.
//!
//! JetStream acknowledges through a message's reply subject, so the store keeps every claimed
//! message until its outcome is written. A claim gets a fresh token, as on the database stores:
//! when JetStream redelivers a message (its ack wait passed) to the same process, the new claim
//! replaces the old one, and a late write with the old token changes nothing. Across processes
//! there is no such fence (see the [module docs](super)).

use std::collections::HashMap;
use std::sync::Mutex;

use async_nats::jetstream::Message;
use osa_events_core::store::{Fence, SubscriptionId};

/// Claimed messages, by subscription and stream sequence.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    held: Mutex<HashMap<(SubscriptionId, i64), Held>>,
}

#[derive(Debug)]
struct Held {
    token: uuid::Uuid,
    message: Message,
}

impl Claims {
    /// Records a claim of `message` under `fence`, replacing an older claim of the same message.
    pub(crate) fn hold(&self, subscription: SubscriptionId, fence: Fence, message: Message) {
        self.lock().insert(
            (subscription, fence.position),
            Held {
                token: fence.token,
                message,
            },
        );
    }

    /// The messages of the claims in `fences` that are still held, removed from the store.
    pub(crate) fn take(
        &self,
        subscription: SubscriptionId,
        fences: &[Fence],
    ) -> Vec<(Fence, Message)> {
        let mut held = self.lock();
        fences
            .iter()
            .filter_map(|fence| {
                let key = (subscription, fence.position);
                match held.get(&key) {
                    Some(claim) if claim.token == fence.token => {
                        held.remove(&key).map(|claim| (*fence, claim.message))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Copies of the messages of the claims in `fences` that are still held (they stay held).
    pub(crate) fn peek(
        &self,
        subscription: SubscriptionId,
        fences: &[Fence],
    ) -> Vec<(Fence, Message)> {
        let held = self.lock();
        fences
            .iter()
            .filter_map(|fence| match held.get(&(subscription, fence.position)) {
                Some(claim) if claim.token == fence.token => Some((*fence, claim.message.clone())),
                _ => None,
            })
            .collect()
    }

    /// Puts back claims taken with [`take`](Self::take) whose write failed, so a retry of the
    /// write finds them.
    pub(crate) fn restore(&self, subscription: SubscriptionId, claims: Vec<(Fence, Message)>) {
        let mut held = self.lock();
        for (fence, message) in claims {
            held.entry((subscription, fence.position)).or_insert(Held {
                token: fence.token,
                message,
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(SubscriptionId, i64), Held>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
