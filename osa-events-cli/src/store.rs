//! Reaching the store: the connection, the operations API, and handler names checked against
//! the stored ones.

use osa_events::operations::{Operations, SubscriptionInfo};
use osa_events::store::Store;
use osa_events::{ConnectRetry, PgStore};

use crate::error::{CliError, Secrets, redact};

/// Connects to `url` (`--database-url` or `DATABASE_URL`): one attempt, no wait, two
/// connections at most.
///
/// # Errors
///
/// A usage error without a url; otherwise why the connection failed, with the url's password
/// replaced by `***`.
pub(crate) async fn connect(url: Option<&str>) -> Result<PgStore, CliError> {
    let url = url.filter(|url| !url.trim().is_empty()).ok_or_else(|| {
        CliError::usage("no database given: set DATABASE_URL or pass --database-url <URL>")
    })?;
    Secrets::remember_url(url);
    let pool = PgStore::pool_options().max_connections(2);
    PgStore::connect_with_pool(url, pool, ConnectRetry::none())
        .await
        .map_err(|error| CliError::op(format!("cannot connect to {}: {error}", redact(url))))
}

/// The store's operations API.
///
/// # Errors
///
/// When the store offers none (an osa-events without it).
pub(crate) fn operations(store: &PgStore) -> Result<&dyn Operations, CliError> {
    store.operations().ok_or_else(|| {
        CliError::op("this version of osa-events offers no operations API on PostgreSQL")
    })
}

/// The subscription stored as `handler`.
///
/// # Errors
///
/// An unknown name, with the known ones.
pub(crate) async fn subscription(
    ops: &dyn Operations,
    handler: &str,
) -> Result<SubscriptionInfo, CliError> {
    let subscriptions = ops.subscriptions().await?;
    let names: Vec<&str> = subscriptions.iter().map(|s| s.name.as_str()).collect();
    if let Some(found) = subscriptions.iter().find(|s| s.name == handler) {
        return Ok(found.clone());
    }
    Err(osa_events::Error::UnknownHandler {
        name: handler.to_owned(),
        known: if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        },
    }
    .into())
}
