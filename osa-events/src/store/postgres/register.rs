//! Upserting subscriptions at start-up.

use sqlx::PgPool;

use crate::Result;
use crate::store::{Subscription, SubscriptionId};

const REGISTER_SQL: &str = r#"
insert into osa_events.subscriptions (name, event_type, routing_key, config)
values ($1, $2, $3, $4)
on conflict (name) do update
    set event_type = excluded.event_type,
        routing_key = excluded.routing_key,
        config = excluded.config,
        updated_at = now()
returning id
"#;

/// `unnamed`: behind a transaction-mode pooler (see `PgUnnamed`).
pub(super) async fn register(
    pool: &PgPool,
    subscriptions: &[Subscription],
    unnamed: bool,
) -> Result<Vec<SubscriptionId>> {
    let mut tx = pool.begin().await?;
    let mut ids = Vec::with_capacity(subscriptions.len());
    for subscription in subscriptions {
        let (id,): (i32,) = sqlx::query_as(REGISTER_SQL)
            .persistent(!unnamed)
            .bind(&subscription.name)
            .bind(&subscription.event_type)
            .bind(subscription.routing_key.as_deref())
            .bind(&subscription.config)
            .fetch_one(&mut *tx)
            .await?;
        ids.push(SubscriptionId(id));
    }
    tx.commit().await?;
    Ok(ids)
}
