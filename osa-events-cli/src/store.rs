//! Reaching the store: the connection, the operations API, and handler names checked against
//! the stored ones.

use osa_events::operations::{Operations, SubscriptionInfo};
use osa_events::store::Store;
use osa_events::{AnyStore, ConnectRetry, PgStore, SqliteStore};

use crate::error::{CliError, Secrets, redact};

/// Connects to `url` (`--database-url` or `DATABASE_URL`): a PostgreSQL server (one attempt, no
/// wait, two connections at most) or an SQLite file (`sqlite://path`), which must exist: a
/// mistyped path would otherwise create an empty store and report nothing wrong.
///
/// # Errors
///
/// A usage error without a url, or for an SQLite file that does not exist; otherwise why the
/// connection failed, with the url's password replaced by `***`.
pub(crate) async fn connect(url: Option<&str>) -> Result<AnyStore, CliError> {
    let url = url.filter(|url| !url.trim().is_empty()).ok_or_else(|| {
        CliError::usage("no database given: set DATABASE_URL or pass --database-url <URL>")
    })?;
    Secrets::remember_url(url);
    let cannot = |error| CliError::op(format!("cannot connect to {}: {error}", redact(url)));
    if url.starts_with("sqlite:") {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:")
            .split('?')
            .next()
            .unwrap_or_default();
        if !std::path::Path::new(path).is_file() {
            return Err(CliError::usage(format!(
                "no SQLite store at `{path}`: the file does not exist (the tool never creates one)"
            )));
        }
        return SqliteStore::connect(url)
            .await
            .map(AnyStore::from)
            .map_err(cannot);
    }
    let pool = PgStore::pool_options().max_connections(2);
    PgStore::connect_with_pool(url, pool, ConnectRetry::none())
        .await
        .map(AnyStore::from)
        .map_err(cannot)
}

/// The store's operations API.
///
/// # Errors
///
/// When the store offers none (an osa-events without it).
pub(crate) fn operations(store: &AnyStore) -> Result<&dyn Operations, CliError> {
    store.operations().ok_or_else(|| {
        CliError::op(format!(
            "this version of osa-events offers no operations API on {}",
            store.describe()
        ))
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
