//! SQLite transactions as the core's store [`Transaction`]s: what a handler's or a projection
//! batch's `Tx` writes through, and what commits its effects with the delivery's completion.
//!
//! SQLite runs one write transaction at a time, so a handler transaction that took the write lock
//! when the handler began would stop every other writer (claims, heartbeats, publishes, other
//! processes) for the whole call. A handler's transaction therefore starts *deferred*: what the
//! handler publishes and what the runtime completes through it are checked against the committed
//! state at once (so the handler learns how many events were new and how many deliveries they got,
//! and the runtime how many claims it still holds) and written at the commit, in one
//! `BEGIN IMMEDIATE` transaction that checks them again and fails, writing nothing, if anything
//! changed meanwhile (another worker took a claim over, another process published the same id or
//! registered a subscription). The write lock is then held only for the commit.
//!
//! A handler that runs its own statements ([`connection`], `Tx::sqlite`) opens the transaction
//! for real at that point, writing what was deferred: from then on it holds the write lock until
//! its commit, as its reads must stay true until its writes land. A projection batch's transaction
//! is deferred in the same way: the batch is read without the lock, and its commit checks, under
//! the write lock, that the leadership holds and the checkpoint has not moved
//! (`projection/leader.rs`).

use std::collections::HashSet;
use std::fmt;

use futures_util::future::BoxFuture;
use osa_events_core::store::{Envelopes, Fence, SubscriptionId, Transaction, Transactions};
use osa_events_core::{Error, Outgoing, Published, Result};
use sqlx::{Sqlite, SqliteConnection};
use tracing::Instrument;
use uuid::Uuid;

use crate::publish::{events_json, insert_and_fan_out};
use crate::store::{SqliteStore, fenced};

/// An SQLite transaction, as [`SqliteStore::begin`] returns it.
pub type SqliteTransaction = sqlx::Transaction<'static, Sqlite>;

/// The store transaction of a `Tx` handler or a projection batch.
pub(crate) struct SqliteStoreTransaction {
    store: SqliteStore,
    state: State,
}

enum State {
    /// Nothing written yet: the writes wait for the commit, each with what it was found to do.
    Deferred(Deferred),
    /// A write transaction of its own (`BEGIN IMMEDIATE`).
    Open(SqliteTransaction),
}

#[derive(Default)]
struct Deferred {
    writes: Vec<Write>,
    /// Ids published so far, so a repeated one is skipped as an existing one would be.
    published: HashSet<Uuid>,
    /// Fences completed so far, so a repeated one counts nothing.
    completed: HashSet<(SubscriptionId, Fence)>,
}

/// A deferred write, and what it did when checked.
enum Write {
    Publish {
        events: String,
        found: Published,
    },
    Complete {
        subscription: SubscriptionId,
        fences: String,
        found: u64,
    },
}

/// How many of the events (`?1`, as for `INSERT_EVENTS_SQL`) are new, and the deliveries they
/// would get, in the committed state.
const PUBLISH_FINDS_SQL: &str = r#"
with fresh as (
    select value ->> 1 as event_type, value ->> 3 as routing_key
    from json_each(?1)
    where not exists (select 1 from events e where e.id = unhex(value ->> 0))
)
select (select count(*) from fresh),
       (select count(*) from fresh f
        join subscriptions s
          on s.event_type = f.event_type
         and (s.routing_key is null or s.routing_key = f.routing_key)
         and s.retired_at is null)
"#;

/// How many of the fences (`?2`) of subscription `?1` still hold their claims.
const COMPLETE_FINDS_SQL: &str = r#"
select count(*) from deliveries
where subscription_id = ?1 and status = 'claimed'
  and (event_position, claim_token) in (select value ->> 0, value ->> 1 from json_each(?2))
"#;

/// A deferred write that does something else at the commit than when it was checked.
#[derive(Debug)]
struct ChangedBeforeCommit(String);

impl fmt::Display for ChangedBeforeCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the transaction was not committed, and wrote nothing: {} between the handler's call \
             and its commit",
            self.0
        )
    }
}

impl std::error::Error for ChangedBeforeCommit {}

fn changed(what: String) -> Error {
    Error::Database(Box::new(ChangedBeforeCommit(what)))
}

impl SqliteStoreTransaction {
    /// A deferred store transaction: a handler's or a projection batch's.
    pub(crate) fn deferred(store: SqliteStore) -> Box<dyn Transaction> {
        Box::new(Self {
            store,
            state: State::Deferred(Deferred::default()),
        })
    }

    /// The sqlx transaction inside a store transaction of this store, opened if it was deferred.
    pub(crate) async fn unwrap(
        transaction: Box<dyn Transaction>,
    ) -> Result<Option<SqliteTransaction>> {
        let Ok(mut transaction) = transaction.into_any().downcast::<SqliteStoreTransaction>()
        else {
            return Ok(None);
        };
        transaction.open().await?;
        match transaction.state {
            State::Open(tx) => Ok(Some(tx)),
            State::Deferred(_) => unreachable!("opened above"),
        }
    }

    /// Opens the transaction for real, writing what was deferred (checked again); a no-op when open.
    async fn open(&mut self) -> Result<&mut SqliteTransaction> {
        if let State::Deferred(deferred) = &mut self.state {
            let writes = std::mem::take(&mut deferred.writes);
            let mut tx = self.store.begin().await?;
            self.store.timed(write_deferred(&mut tx, writes)).await?;
            self.state = State::Open(tx);
        }
        match &mut self.state {
            State::Open(tx) => Ok(tx),
            State::Deferred(_) => unreachable!("opened above"),
        }
    }

    async fn publish_deferred(&mut self, events: &[Outgoing]) -> Result<Published> {
        let State::Deferred(deferred) = &mut self.state else {
            unreachable!("called while deferred");
        };
        let envelopes = Envelopes::stamp(events);
        let fresh: Vec<(Outgoing, Option<String>)> = events
            .iter()
            .zip(envelopes.metadata())
            .filter(|(event, _)| deferred.published.insert(event.id()))
            .map(|(event, metadata)| (event.clone(), metadata.clone()))
            .collect();
        let store = &self.store;
        let found = async {
            if fresh.is_empty() {
                return Ok(None);
            }
            let (outgoing, metadata): (Vec<Outgoing>, Vec<Option<String>>) =
                fresh.into_iter().unzip();
            let events = events_json(&outgoing, &metadata);
            let (new, deliveries): (i64, i64) = store
                .timed(async {
                    Ok(sqlx::query_as(PUBLISH_FINDS_SQL)
                        .bind(&events)
                        .fetch_one(store.pool())
                        .await?)
                })
                .await?;
            let found = Published::new(
                u64::try_from(new).unwrap_or(0),
                u64::try_from(deliveries).unwrap_or(0),
            );
            Ok(Some((events, found)))
        }
        .instrument(envelopes.span().clone())
        .await;
        let published = found.map(|found| {
            found.map_or(Published::new(0, 0), |(events, found)| {
                deferred.writes.push(Write::Publish { events, found });
                found
            })
        });
        envelopes.finish(&published);
        published
    }

    async fn complete_deferred(
        &mut self,
        subscription: SubscriptionId,
        done: &[Fence],
    ) -> Result<u64> {
        let State::Deferred(deferred) = &mut self.state else {
            unreachable!("called while deferred");
        };
        let fresh: Vec<Fence> = done
            .iter()
            .copied()
            .filter(|fence| deferred.completed.insert((subscription, *fence)))
            .collect();
        if fresh.is_empty() {
            return Ok(0);
        }
        let fences = fenced::fences_json(fresh.into_iter());
        let store = &self.store;
        let held: i64 = store
            .timed(async {
                Ok(sqlx::query_scalar(COMPLETE_FINDS_SQL)
                    .bind(subscription.0)
                    .bind(&fences)
                    .fetch_one(store.pool())
                    .await?)
            })
            .await?;
        let found = u64::try_from(held).unwrap_or(0);
        deferred.writes.push(Write::Complete {
            subscription,
            fences,
            found,
        });
        Ok(found)
    }
}

/// Writes `writes` in `tx`, in order, each checked against what it found when deferred.
async fn write_deferred(tx: &mut SqliteConnection, writes: Vec<Write>) -> Result<()> {
    for write in writes {
        match write {
            Write::Publish { events, found } => {
                let published = insert_and_fan_out(tx, &events).await?;
                if published != found {
                    return Err(changed(format!(
                        "a publish found {} new events and {} deliveries, and would now write {} \
                         and {} (another process published the same ids, or a subscription was \
                         registered or retired)",
                        found.events, found.deliveries, published.events, published.deliveries
                    )));
                }
            }
            Write::Complete {
                subscription,
                fences,
                found,
            } => {
                let completed = sqlx::query(fenced::COMPLETE_SQL)
                    .bind(subscription.0)
                    .bind(&fences)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if completed != found {
                    return Err(changed(format!(
                        "{found} claims were held when completed and {completed} are now (another \
                         worker took the others over)"
                    )));
                }
            }
        }
    }
    Ok(())
}

impl Transaction for SqliteStoreTransaction {
    fn complete<'a>(
        &'a mut self,
        subscription: SubscriptionId,
        done: &'a [Fence],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            match &mut self.state {
                State::Deferred(_) => self.complete_deferred(subscription, done).await,
                State::Open(tx) => {
                    let store = self.store.clone();
                    store
                        .timed(fenced::complete(&mut **tx, subscription, done))
                        .await
                }
            }
        })
    }

    fn publish<'a>(&'a mut self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<Published>> {
        Box::pin(async move {
            match &mut self.state {
                State::Deferred(_) => self.publish_deferred(events).await,
                State::Open(tx) => {
                    let store = self.store.clone();
                    store.timed(crate::publish_batch(tx, events)).await
                }
            }
        })
    }

    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let Self { store, state } = *self;
            let tx = match state {
                State::Open(tx) => tx,
                State::Deferred(deferred) if deferred.writes.is_empty() => return Ok(()),
                State::Deferred(deferred) => {
                    let mut tx = store.begin().await?;
                    store
                        .timed(write_deferred(&mut tx, deferred.writes))
                        .await?;
                    tx
                }
            };
            store.timed(async { Ok(tx.commit().await?) }).await
        })
    }
}

/// The SQLite connection of a handler's or a projection batch's transaction, for the handler's own
/// statements (`osa_events::Tx::sqlite` calls it); `Ok(None)` when the transaction is another
/// store's.
///
/// A handler's transaction is opened for real here (see [handler transactions](crate#handler-transactions)): from this call
/// to its commit it holds SQLite's write lock, so other writers wait for it, up to their busy
/// timeout.
///
/// # Errors
///
/// [`Error::Busy`] when the write lock stayed taken for the busy timeout; [`Error::Database`] when
/// what the handler published or completed before this call no longer holds (nothing is written).
pub async fn connection(
    transaction: &mut dyn Transaction,
) -> Result<Option<&mut SqliteConnection>> {
    let Some(transaction) = transaction
        .as_any_mut()
        .downcast_mut::<SqliteStoreTransaction>()
    else {
        return Ok(None);
    };
    let tx = transaction.open().await?;
    Ok(Some(&mut **tx))
}

impl Transactions for SqliteStore {
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn Transaction>>> {
        Box::pin(async move { Ok(SqliteStoreTransaction::deferred(self.clone())) })
    }

    fn capacity(&self) -> Option<u32> {
        Some(self.settings().max_connections)
    }
}
