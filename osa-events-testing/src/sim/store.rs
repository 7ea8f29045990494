//! [`Observed`]: the in-memory store, with every call checked against the model.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use osa_events::Result;
use osa_events::store::{
    ClaimRequest, Delivery, Failure, Fence, Store, Subscription, SubscriptionId,
};

use super::model::Model;
use crate::InMemoryStore;

/// An [`InMemoryStore`] whose every claim and fenced write is reported to the [`Model`], after
/// the store has answered and before the caller sees the answer.
#[derive(Clone)]
pub(super) struct Observed {
    pub(super) inner: InMemoryStore,
    pub(super) model: Arc<Mutex<Model>>,
}

impl Observed {
    fn model(&self) -> MutexGuard<'_, Model> {
        lock(&self.model)
    }
}

/// Locks the model; a panic elsewhere (a failing test) must not hide the trace behind a second one.
pub(super) fn lock(model: &Mutex<Model>) -> MutexGuard<'_, Model> {
    model
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store for Observed {
    fn register<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> BoxFuture<'a, Result<Vec<SubscriptionId>>> {
        self.inner.register(subscriptions)
    }

    fn claim<'a>(&'a self, request: ClaimRequest<'a>) -> BoxFuture<'a, Result<Vec<Delivery>>> {
        Box::pin(async move {
            let claimed = self.inner.claim(request).await?;
            self.model().on_claim(request.claim_timeout, &claimed);
            Ok(claimed)
        })
    }

    fn complete<'a>(
        &'a self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let written = self.inner.complete(subscription, done).await?;
            self.model().on_complete(done, written);
            Ok(written)
        })
    }

    fn complete_and_claim<'a>(
        &'a self,
        done: &'a [Fence],
        request: ClaimRequest<'a>,
    ) -> BoxFuture<'a, Result<(u64, Vec<Delivery>)>> {
        Box::pin(async move {
            let (written, claimed) = self.inner.complete_and_claim(done, request).await?;
            let mut model = self.model();
            model.on_complete(done, written);
            model.on_claim(request.claim_timeout, &claimed);
            Ok((written, claimed))
        })
    }

    fn fail<'a>(
        &'a self,
        subscription: SubscriptionId,
        failures: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let written = self.inner.fail(subscription, failures).await?;
            self.model().on_fail(failures, written);
            Ok(written)
        })
    }

    fn extend<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
        claim_timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<i64>>> {
        Box::pin(async move {
            let held = self
                .inner
                .extend(subscription, claims, claim_timeout)
                .await?;
            self.model().on_extend(claims, claim_timeout, &held);
            Ok(held)
        })
    }

    fn release<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let written = self.inner.release(subscription, claims).await?;
            self.model().on_release(claims, written);
            Ok(written)
        })
    }

    fn defer<'a>(
        &'a self,
        subscription: SubscriptionId,
        deferred: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let written = self.inner.defer(subscription, deferred).await?;
            self.model().on_defer(deferred, written);
            Ok(written)
        })
    }
}
