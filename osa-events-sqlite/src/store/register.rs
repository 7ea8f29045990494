//! Registering subscriptions at start-up, by the rule of [`Subscription::reconcile`].
//!
//! All of a runtime's subscriptions register in one write transaction: a conflict on any of them
//! rolls back the others, so a refused start-up leaves the database as it was, and two processes
//! registering at once decide one after the other, each against what the other committed.
//!
//! A subscription created with a history (`start_from`) records the highest position handed out
//! so far as its backfill's head: writers are serialised, so every event above it is published by
//! a transaction that sees the subscription, and every event at or below it is copied by the
//! backfill.

use osa_events_core::Result;
use osa_events_core::store::{Reconcile, Subscription, SubscriptionId};

use super::SqliteStore;

const INSERT_SQL: &str = r#"
insert into subscriptions (name, event_type, routing_key, config, revision, backfill_after, backfill_head, ordered)
values (?1, ?2, ?3, ?4, ?5, ?6,
        case when ?6 is null then null
             else coalesce((select seq from sqlite_sequence where name = 'events'), 0) end,
        ?7)
on conflict (name) do nothing
returning id
"#;

const STORED_SQL: &str = r#"
select id, event_type, routing_key, revision, retired_at is not null
from subscriptions
where name = ?1
"#;

const UPDATE_SQL: &str = r#"
update subscriptions
set config = ?2, revision = ?3, ordered = ?4, updated_at = unixepoch('subsec')
where id = ?1
"#;

const REPOINT_SQL: &str = r#"
update subscriptions
set event_type = ?2, routing_key = ?3, config = ?4, revision = ?5, ordered = ?6,
    updated_at = unixepoch('subsec')
where id = ?1
"#;

/// A retired subscription registered again starts afresh, as a new one would: what it receives
/// and where it starts are the registration's, and it is neither retired nor paused any more.
const REVIVE_SQL: &str = r#"
update subscriptions
set event_type = ?2, routing_key = ?3, config = ?4, revision = ?5, backfill_after = ?6,
    backfill_head = case when ?6 is null then null
                         else coalesce((select seq from sqlite_sequence where name = 'events'), 0) end,
    retired_at = null, paused_at = null, ordered = ?7,
    created_at = unixepoch('subsec'), updated_at = unixepoch('subsec')
where id = ?1
"#;

pub(super) async fn register(
    store: &SqliteStore,
    subscriptions: &[Subscription],
) -> Result<Vec<SubscriptionId>> {
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
    let mut ids = Vec::with_capacity(subscriptions.len());
    for subscription in subscriptions {
        let revision = subscription.stored_revision()?;
        let ordered = subscription.ordered.map(osa_events_core::Ordered::as_str);
        let config = subscription.config.to_string();
        let after = subscription.start_from.after_position();
        let inserted: Option<(i32,)> = sqlx::query_as(INSERT_SQL)
            .bind(&subscription.name)
            .bind(&subscription.event_type)
            .bind(subscription.routing_key.as_deref())
            .bind(&config)
            .bind(revision)
            .bind(after)
            .bind(ordered)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some((id,)) = inserted {
            ids.push(SubscriptionId(id));
            continue;
        }
        let (id, event_type, routing_key, stored_revision, retired): (
            i32,
            String,
            Option<String>,
            i32,
            bool,
        ) = sqlx::query_as(STORED_SQL)
            .bind(&subscription.name)
            .fetch_one(&mut *tx)
            .await?;
        if retired {
            tracing::warn!(
                handler = %subscription.name,
                "a retired subscription is registered again: it starts afresh, as a new one"
            );
            sqlx::query(REVIVE_SQL)
                .bind(id)
                .bind(&subscription.event_type)
                .bind(subscription.routing_key.as_deref())
                .bind(&config)
                .bind(revision)
                .bind(after)
                .bind(ordered)
                .execute(&mut *tx)
                .await?;
            ids.push(SubscriptionId(id));
            continue;
        }
        let stored = Subscription {
            name: subscription.name.clone(),
            event_type,
            routing_key,
            config: serde_json::Value::Null,
            // The column's check keeps it at least 1.
            revision: u32::try_from(stored_revision).unwrap_or(1),
            start_from: Default::default(),
            ordered: None,
        };
        match subscription.reconcile(&stored)? {
            Reconcile::Keep => {}
            Reconcile::Update => {
                sqlx::query(UPDATE_SQL)
                    .bind(id)
                    .bind(&config)
                    .bind(revision)
                    .bind(ordered)
                    .execute(&mut *tx)
                    .await?;
            }
            Reconcile::Repoint => {
                subscription.warn_repointed(&stored);
                sqlx::query(REPOINT_SQL)
                    .bind(id)
                    .bind(&subscription.event_type)
                    .bind(subscription.routing_key.as_deref())
                    .bind(&config)
                    .bind(revision)
                    .bind(ordered)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        ids.push(SubscriptionId(id));
    }
    tx.commit().await?;
    Ok(ids)
}
