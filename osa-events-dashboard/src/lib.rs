//! The web dashboard of osa-events: what an on-call engineer opens first.
//!
//! Every handler and projection at a glance, with the last hour as a chart and the unhealthy
//! ones coloured; a page per handler with its errors grouped by message, and pause or resume;
//! the dead letters, filtered, one in full, retried or purged after a confirmation; projections
//! with their checkpoints and a reset; the nodes and what each runs. Pages refresh live every
//! few seconds and read the same with JavaScript off.
//!
//! It is a thin client of the operations API ([`osa_events_core::operations`]) and never runs
//! SQL of its own, so it works on every store that offers that API (PostgreSQL and SQLite)
//! and does exactly what the store's contract suite proves. Its styles and script are compiled
//! into the binary: nothing to build or install.
//!
//! Served two ways:
//!
//! - by the command-line tool: `osa-events dashboard --listen 127.0.0.1:8080`;
//! - as an axum [`Router`] mounted in your own service, with [`router`]:
//!
//! ```no_run
//! use osa_events::dashboard::{self, DashboardOptions};
//! # async fn example(store: osa_events::SqliteStore) -> Result<(), Box<dyn std::error::Error>> {
//! let app = axum::Router::new()
//!     .nest("/osa", dashboard::router(store, DashboardOptions::new().read_only(true))?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! # Safe by default
//!
//! - **Local only** unless told otherwise: without a token, it answers only requests addressed
//!   to `localhost`, `127.0.0.1` or `[::1]` (which also defeats DNS rebinding), and, where the
//!   server records peers, from this machine. [`serve`] refuses to listen on any other address
//!   without a token ([`DashboardOptions::token`]).
//! - **A token**, when set, is needed for every page: as `Authorization: Bearer`, or entered once
//!   on the login page, which sets an HTTP-only, same-site cookie.
//! - **[`read_only`](DashboardOptions::read_only)** hides every action and refuses their
//!   requests.
//! - **Actions are POSTs** with a CSRF token in the form and a check of the browser's `Origin`
//!   and `Sec-Fetch-Site`; destructive ones (retry, purge, reset) go through a confirmation page.
//! - **Nothing secret is shown**: no database URL, no password, no token. Everything from the
//!   store (payloads, errors, names) is escaped, and a strict Content-Security-Policy allows only
//!   the dashboard's own script.
//!
//! # The charts
//!
//! The runtime counts what each handler handled and failed, and each node adds its counts to
//! the store's per-minute activity table at every heartbeat (see
//! [`Operations::record_activity`](osa_events_core::operations::Operations::record_activity));
//! the table keeps two hours and so never grows past that, whatever the load. The charts show
//! the last hour of it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use osa_events_core::store::Store;

mod assets;
mod chart;
mod error;
mod format;
mod guard;
mod health;
mod html;
mod layout;
mod options;
mod pages;
mod state;

pub use error::DashboardError;
pub use options::DashboardOptions;

use crate::state::Dashboard;

/// The dashboard of `store` as an axum router, to serve or to [`nest`](Router::nest) in your
/// own: every path it answers is below where it is mounted.
///
/// # Errors
///
/// [`DashboardError::Options`] for invalid options, [`DashboardError::NoOperations`] for a store
/// without the operations API (the JetStream store: use the `nats` tools there).
pub fn router(store: impl Store, options: DashboardOptions) -> Result<Router, DashboardError> {
    options.check()?;
    let store: Arc<dyn Store> = Arc::new(store);
    if store.operations().is_none() {
        return Err(DashboardError::NoOperations(
            "this store (it answers no status, delivery or dead-letter queries)".to_owned(),
        ));
    }
    let dashboard = Arc::new(Dashboard::new(store, options));
    Ok(Router::new()
        .route("/", get(pages::overview::show))
        .route("/handlers/{name}", get(pages::handler::show))
        .route("/handlers/{name}/pause", post(pages::handler::pause))
        .route("/handlers/{name}/resume", post(pages::handler::resume))
        .route("/dead", get(pages::dead::list))
        .route("/dead/retry", post(pages::dead::retry))
        .route("/dead/purge", post(pages::dead::purge))
        .route("/dead/{handler}/{position}", get(pages::dead::detail))
        .route("/projections", get(pages::projections::list))
        .route("/projections/{name}/reset", post(pages::projections::reset))
        .route("/nodes", get(pages::nodes::list))
        .route("/login", get(pages::login::show).post(pages::login::submit))
        .route("/assets/{name}", get(assets::serve))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&dashboard),
            guard::guard,
        ))
        .with_state(dashboard))
}

/// Serves the dashboard of `store` on `addr` until `shutdown` completes.
///
/// # Errors
///
/// [`DashboardError::Options`] when the options do not allow `addr` (another address than
/// loopback without a token), [`DashboardError::Listen`] when it cannot be bound, and the
/// errors of [`router`].
pub async fn serve(
    store: impl Store,
    addr: SocketAddr,
    options: DashboardOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DashboardError> {
    options.check_listen(addr)?;
    let app = router(store, options)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DashboardError::Listen { addr, source })?;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(DashboardError::Serve)
}
