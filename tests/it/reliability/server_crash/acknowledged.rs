//! [`Acknowledging`]: a `Store` that passes everything to a `PgStore` and writes down which
//! claims and completions the database acknowledged, and when; [`TakenBack`]: which of them the
//! server's crashes took back.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osa_events::store::{
    ClaimRequest, Delivery, Failure, Fence, ProjectionStore, Store, Subscription, SubscriptionId,
    Transactions, WakeUps,
};
use osa_events::{PgStore, Result};

/// `futures_util::future::BoxFuture`, spelled out (the suite does not depend on futures-util).
type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// One acknowledged claim or completion: which delivery, which attempt, and when the answer came.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ack {
    pub(super) subscription: SubscriptionId,
    pub(super) position: i64,
    pub(super) attempt: u32,
    pub(super) at: Instant,
}

/// What one runtime's claim loops were told by the database.
#[derive(Debug, Default)]
pub(super) struct Book {
    /// The attempt of every claim handed out, by its fence (to know a completion's attempt).
    attempts: HashMap<Fence, u32>,
    /// Every claim handed out.
    pub(super) claims: Vec<Ack>,
    /// Every completion written, from `complete` and `complete_and_claim` (a `Tx` handler's
    /// completions commit in its transaction, not here).
    pub(super) completions: Vec<Ack>,
    /// `(subscription, position, attempt)` of claims given back unfinished (released or
    /// deferred, the attempt not counted): a later claim of the same attempt is then no loss.
    pub(super) released: HashSet<(SubscriptionId, i64, u32)>,
    /// Completions the store refused (their claims had expired): not acknowledged, and not
    /// known one by one (the store returns a count).
    pub(super) refused: u64,
    /// Completed fences that no claim of this runtime handed out: none can be.
    pub(super) unknown_fences: u64,
}

impl Book {
    fn claimed(&mut self, subscription: SubscriptionId, deliveries: &[Delivery]) {
        let at = Instant::now();
        for delivery in deliveries {
            self.attempts.insert(delivery.fence, delivery.attempt);
            self.claims.push(Ack {
                subscription,
                position: delivery.fence.position,
                attempt: delivery.attempt,
                at,
            });
        }
    }

    fn completed(&mut self, subscription: SubscriptionId, done: &[Fence], written: u64) {
        let at = Instant::now();
        if written < done.len() as u64 {
            self.refused += done.len() as u64 - written;
            return;
        }
        for fence in done {
            // Not a panic here: the runtime would restart the claim loop and the test go on.
            let Some(attempt) = self.attempts.remove(fence) else {
                self.unknown_fences += 1;
                continue;
            };
            self.completions.push(Ack {
                subscription,
                position: fence.position,
                attempt,
                at,
            });
        }
    }

    fn released(&mut self, subscription: SubscriptionId, claims: impl IntoIterator<Item = Fence>) {
        for fence in claims {
            if let Some(attempt) = self.attempts.get(&fence) {
                self.released
                    .insert((subscription, fence.position, *attempt));
            }
        }
    }
}

/// A [`PgStore`] whose acknowledged claims and completions are written down in a [`Book`].
/// Every call goes to the `PgStore` unchanged (`complete_and_claim` stays one statement);
/// only successful answers are recorded.
#[derive(Debug, Clone)]
pub(super) struct Acknowledging {
    pub(super) inner: PgStore,
    pub(super) book: Arc<Mutex<Book>>,
}

impl Acknowledging {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().expect("the book's lock is never poisoned")
    }
}

impl Store for Acknowledging {
    fn register<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> Answer<'a, Vec<SubscriptionId>> {
        self.inner.register(subscriptions)
    }

    fn claim<'a>(&'a self, request: ClaimRequest<'a>) -> Answer<'a, Vec<Delivery>> {
        Box::pin(async move {
            let claimed = self.inner.claim(request).await?;
            self.book().claimed(request.subscription, &claimed);
            Ok(claimed)
        })
    }

    fn complete<'a>(&'a self, subscription: SubscriptionId, done: &'a [Fence]) -> Answer<'a, u64> {
        Box::pin(async move {
            let written = self.inner.complete(subscription, done).await?;
            self.book().completed(subscription, done, written);
            Ok(written)
        })
    }

    fn complete_and_claim<'a>(
        &'a self,
        done: &'a [Fence],
        request: ClaimRequest<'a>,
    ) -> Answer<'a, (u64, Vec<Delivery>)> {
        Box::pin(async move {
            let (written, claimed) = self.inner.complete_and_claim(done, request).await?;
            let mut book = self.book();
            book.completed(request.subscription, done, written);
            book.claimed(request.subscription, &claimed);
            Ok((written, claimed))
        })
    }

    fn fail<'a>(
        &'a self,
        subscription: SubscriptionId,
        failures: &'a [Failure],
    ) -> Answer<'a, u64> {
        self.inner.fail(subscription, failures)
    }

    fn extend<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
        claim_timeout: Duration,
    ) -> Answer<'a, Vec<i64>> {
        self.inner.extend(subscription, claims, claim_timeout)
    }

    fn release<'a>(&'a self, subscription: SubscriptionId, claims: &'a [Fence]) -> Answer<'a, u64> {
        Box::pin(async move {
            // Written down before the call: a release whose answer is lost may still have
            // happened.
            self.book().released(subscription, claims.iter().copied());
            self.inner.release(subscription, claims).await
        })
    }

    fn defer<'a>(
        &'a self,
        subscription: SubscriptionId,
        deferred: &'a [Failure],
    ) -> Answer<'a, u64> {
        Box::pin(async move {
            // A deferral, like a release, gives the claim back with its attempt not counted.
            self.book()
                .released(subscription, deferred.iter().map(|failure| failure.fence));
            self.inner.defer(subscription, deferred).await
        })
    }

    fn wake_ups(&self) -> Option<Answer<'static, WakeUps>> {
        self.inner.wake_ups()
    }

    fn projections(&self) -> Option<Arc<dyn ProjectionStore>> {
        self.inner.projections()
    }

    fn transactions(&self) -> Option<&dyn Transactions> {
        self.inner.transactions()
    }
}

/// The acknowledged bookkeeping the crashes took back, per crash.
#[derive(Debug)]
pub(super) struct TakenBack {
    /// Completions of the plain handler acknowledged and then handled again, by the crash that
    /// followed their acknowledgement.
    pub(super) completions: Vec<usize>,
    /// Claims (of either handler) acknowledged and then handed out again with the same attempt.
    pub(super) claims: Vec<usize>,
    /// The longest time from an acknowledgement that was taken back to the crash that took it.
    pub(super) oldest: Duration,
    /// Completions taken back with no crash after them: none can be.
    pub(super) unexplained_completions: usize,
    /// Claims taken back with no crash after them: none can be.
    pub(super) unexplained_claims: usize,
}

impl TakenBack {
    /// What `crashes` (when each began, when its server was gone) took back of what `books`
    /// recorded. `ledger` is the plain handler's subscription, `last_attempt` the highest
    /// attempt at which it handled each event (by position).
    pub(super) fn find(
        books: &[Book],
        crashes: &[(Instant, Instant)],
        ledger: SubscriptionId,
        last_attempt: &HashMap<i64, i32>,
    ) -> TakenBack {
        let mut taken_back = TakenBack {
            completions: vec![0; crashes.len()],
            claims: vec![0; crashes.len()],
            oldest: Duration::ZERO,
            unexplained_completions: 0,
            unexplained_claims: 0,
        };

        // A completion is taken back when its event was handled again at a later attempt: a
        // completion that holds deletes the delivery, so nothing can claim it again.
        for ack in books.iter().flat_map(|book| &book.completions) {
            let handled_again = ack.subscription == ledger
                && last_attempt.get(&ack.position).copied().unwrap_or(0)
                    > i32::try_from(ack.attempt).unwrap_or(i32::MAX);
            if handled_again && !taken_back.blame(crashes, ack, |t| &mut t.completions) {
                taken_back.unexplained_completions += 1;
            }
        }

        // A claim is taken back when the same attempt of the same delivery is handed out again
        // (each claim counts an attempt), unless the first claim was released or deferred.
        let released: HashSet<(SubscriptionId, i64, u32)> = books
            .iter()
            .flat_map(|book| book.released.iter().copied())
            .collect();
        let mut claims: Vec<&Ack> = books.iter().flat_map(|book| &book.claims).collect();
        claims.sort_by_key(|ack| ack.at);
        let mut first_claims: HashMap<(SubscriptionId, i64, u32), &Ack> = HashMap::new();
        for ack in claims {
            let key = (ack.subscription, ack.position, ack.attempt);
            match first_claims.get(&key) {
                None => {
                    first_claims.insert(key, ack);
                }
                Some(first) if !released.contains(&key) => {
                    if !taken_back.blame(crashes, first, |t| &mut t.claims) {
                        taken_back.unexplained_claims += 1;
                    }
                }
                Some(_) => {}
            }
        }
        taken_back
    }

    /// Counts `ack`, in `counts`, against the first crash whose server was gone after it was
    /// acknowledged; `false` when there was none.
    fn blame(
        &mut self,
        crashes: &[(Instant, Instant)],
        ack: &Ack,
        counts: fn(&mut TakenBack) -> &mut Vec<usize>,
    ) -> bool {
        let Some(crash) = crashes.iter().position(|(_, gone)| *gone > ack.at) else {
            return false;
        };
        counts(self)[crash] += 1;
        self.oldest = self
            .oldest
            .max(crashes[crash].0.saturating_duration_since(ack.at));
        true
    }
}
