//! [`AnyStore`]: the store a URL names, for programs that run on either backend.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use osa_events_core::operations::Operations;
use osa_events_core::store::{
    ClaimRequest, Delivery, Failure, Fence, ProjectionStore, Store, Subscription, SubscriptionId,
    Transactions, WakeUps,
};
use osa_events_core::{Error, Outgoing, Published, Result};

/// One of the stores this build has, chosen at run time: by a URL ([`from_url`](Self::from_url))
/// or by the environment ([`from_env`](Self::from_env)). It is a [`Store`] like the one inside it,
/// so `Runtime::builder(any_store)` runs on whichever it holds.
///
/// # Examples
///
/// ```no_run
/// # async fn example() -> Result<(), osa_events::Error> {
/// // `DATABASE_URL=postgres://...` or `sqlite://...`; unset: a temporary SQLite file.
/// let store = osa_events::AnyStore::from_env().await?;
/// store.migrate().await?;
/// println!("events are kept in {}", store.describe());
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum AnyStore {
    /// PostgreSQL: many processes on many machines (feature `postgres`). Boxed: a `PgStore`
    /// carries its connect options, many times the size of the other variant's handle.
    #[cfg(feature = "postgres")]
    Postgres(Box<crate::PgStore>),
    /// An SQLite file: the processes of one machine (feature `sqlite`).
    #[cfg(feature = "sqlite")]
    Sqlite(crate::SqliteStore),
}

/// Runs `$body` with `$store` bound to the store inside `$any`, whichever it is.
macro_rules! each {
    ($any:expr, |$store:ident| $body:expr) => {
        match $any {
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(boxed) => {
                let $store: &crate::PgStore = boxed;
                $body
            }
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite($store) => $body,
        }
    };
}

impl AnyStore {
    /// Connects to the store `url` names: `postgres://` or `postgresql://` a PostgreSQL server
    /// ([`PgStore::connect`](crate::PgStore::connect), which waits up to 30 s for it),
    /// `sqlite:` a file ([`SqliteStore::connect`](crate::SqliteStore::connect), created if
    /// missing).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a URL of another scheme, or of a store this build leaves out (its
    /// feature is off), naming the schemes it takes; the store's own errors otherwise.
    pub async fn from_url(url: &str) -> Result<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => Ok(Self::Postgres(Box::new(
                crate::PgStore::connect(url).await?,
            ))),
            #[cfg(feature = "sqlite")]
            "sqlite" => Ok(Self::Sqlite(crate::SqliteStore::connect(url).await?)),
            _ => Err(Error::Config(
                format!(
                    "a store URL starts with {}; this one starts with `{scheme}:`",
                    SCHEMES.join(" or ")
                )
                .into(),
            )),
        }
    }

    /// The store in the `DATABASE_URL` environment variable ([`from_url`](Self::from_url)), or,
    /// when it is unset or empty, a temporary SQLite file removed when the store is dropped
    /// ([`SqliteStore::temporary`](crate::SqliteStore::temporary)).
    ///
    /// # Errors
    ///
    /// As for [`from_url`](Self::from_url); without `DATABASE_URL` in a build without the `sqlite`
    /// feature, [`Error::Config`] asking for it.
    pub async fn from_env() -> Result<Self> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => Self::from_url(url.trim()).await,
            _ => Self::temporary().await,
        }
    }

    #[cfg(feature = "sqlite")]
    async fn temporary() -> Result<Self> {
        Ok(Self::Sqlite(crate::SqliteStore::temporary().await?))
    }

    #[cfg(not(feature = "sqlite"))]
    async fn temporary() -> Result<Self> {
        Err(Error::Config(
            format!(
                "DATABASE_URL is unset: set it to a store URL ({})",
                SCHEMES.join(" or ")
            )
            .into(),
        ))
    }

    /// Creates or updates the store's tables ([`PgStore::migrate`](crate::PgStore::migrate),
    /// [`SqliteStore::migrate`](crate::SqliteStore::migrate)).
    ///
    /// # Errors
    ///
    /// [`Error::Migrate`] when a migration fails; the store's own errors otherwise.
    pub async fn migrate(&self) -> Result<()> {
        each!(self, |store| store.migrate().await)
    }

    /// Which store this is and where, for a start-up line: `SQLite file /tmp/x.sqlite (temporary)`,
    /// `PostgreSQL database app on db:5432` (never a password).
    pub fn describe(&self) -> String {
        match self {
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(store) => {
                let options = store.pool().connect_options();
                format!(
                    "PostgreSQL database {} on {}:{}",
                    options.get_database().unwrap_or("(the user's)"),
                    options.get_host(),
                    options.get_port()
                )
            }
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite(store) => format!(
                "SQLite file {}{}",
                store.path().display(),
                if store.is_temporary() {
                    " (temporary: removed at exit)"
                } else {
                    ""
                }
            ),
        }
    }

    /// Publishes `events` in a transaction of their own, through the store's transactions: for
    /// programs that publish without writes of their own. To publish with your own writes, use
    /// the store's own API (`osa_events::publish` in a PostgreSQL transaction,
    /// `osa_events::sqlite::publish` in [`SqliteStore::begin`](crate::SqliteStore::begin)'s).
    ///
    /// # Errors
    ///
    /// The store's errors; nothing is published when one occurs.
    pub async fn publish_batch(&self, events: &[Outgoing]) -> Result<Published> {
        let transactions = self
            .transactions()
            .ok_or_else(|| Error::Config("the store has no transactions".into()))?;
        let mut tx = transactions.begin().await?;
        let published = tx.publish(events).await?;
        tx.commit().await?;
        Ok(published)
    }
}

/// The URL schemes of the stores this build has.
const SCHEMES: &[&str] = &[
    #[cfg(feature = "postgres")]
    "`postgres://`",
    #[cfg(feature = "sqlite")]
    "`sqlite:`",
];

impl fmt::Debug for AnyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        each!(self, |store| fmt::Debug::fmt(store, f))
    }
}

#[cfg(feature = "postgres")]
impl From<crate::PgStore> for AnyStore {
    fn from(store: crate::PgStore) -> Self {
        Self::Postgres(Box::new(store))
    }
}

#[cfg(feature = "sqlite")]
impl From<crate::SqliteStore> for AnyStore {
    fn from(store: crate::SqliteStore) -> Self {
        Self::Sqlite(store)
    }
}

impl Store for AnyStore {
    fn register<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> BoxFuture<'a, Result<Vec<SubscriptionId>>> {
        each!(self, |store| store.register(subscriptions))
    }

    fn claim<'a>(&'a self, request: ClaimRequest<'a>) -> BoxFuture<'a, Result<Vec<Delivery>>> {
        each!(self, |store| store.claim(request))
    }

    fn complete<'a>(
        &'a self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        each!(self, |store| store.complete(subscription, done))
    }

    fn complete_and_claim<'a>(
        &'a self,
        done: &'a [Fence],
        request: ClaimRequest<'a>,
    ) -> BoxFuture<'a, Result<(u64, Vec<Delivery>)>> {
        each!(self, |store| store.complete_and_claim(done, request))
    }

    fn fail<'a>(
        &'a self,
        subscription: SubscriptionId,
        failures: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>> {
        each!(self, |store| store.fail(subscription, failures))
    }

    fn extend<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
        claim_timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<i64>>> {
        each!(self, |store| store.extend(
            subscription,
            claims,
            claim_timeout
        ))
    }

    fn release<'a>(
        &'a self,
        subscription: SubscriptionId,
        claims: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        each!(self, |store| store.release(subscription, claims))
    }

    fn defer<'a>(
        &'a self,
        subscription: SubscriptionId,
        deferred: &'a [Failure],
    ) -> BoxFuture<'a, Result<u64>> {
        each!(self, |store| store.defer(subscription, deferred))
    }

    fn wake_ups(&self) -> Option<BoxFuture<'static, Result<WakeUps>>> {
        each!(self, |store| store.wake_ups())
    }

    fn projections(&self) -> Option<Arc<dyn ProjectionStore>> {
        each!(self, |store| Store::projections(store))
    }

    fn transactions(&self) -> Option<&dyn Transactions> {
        each!(self, |store| store.transactions())
    }

    fn operations(&self) -> Option<&dyn Operations> {
        each!(self, |store| store.operations())
    }

    fn orders_by_key(&self) -> bool {
        each!(self, |store| store.orders_by_key())
    }
}
