//! [`DashboardError`], what building or serving a dashboard can fail with, and [`PageError`],
//! what a page answers when the store refuses or fails.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why a dashboard cannot be built or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// The options are not valid, or not valid for the address.
    #[error("{0}")]
    Options(String),
    /// The store offers no operations API, which the dashboard is a client of.
    #[error("the dashboard needs a store with the operations API; {0} has none")]
    NoOperations(String),
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while serving.
    #[error("the dashboard's server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// A request the page cannot answer: its status and a message for the person who asked.
#[derive(Debug, Clone)]
pub(crate) struct PageError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl PageError {
    /// `status` with `message`.
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// Nothing there: 404.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// A request that cannot be right: 400.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<osa_events_core::Error> for PageError {
    fn from(error: osa_events_core::Error) -> Self {
        match &error {
            osa_events_core::Error::UnknownHandler { .. } => Self::not_found(error.to_string()),
            osa_events_core::Error::Config(_) => Self::bad_request(error.to_string()),
            _ => {
                tracing::warn!(%error, "the dashboard's store failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the store failed: {error}"),
                )
            }
        }
    }
}

impl IntoResponse for PageError {
    /// A bare answer that carries the error along: the guard, which knows where the dashboard
    /// is mounted, frames it as a page.
    fn into_response(self) -> Response {
        let mut response = (self.status, self.message.clone()).into_response();
        response.extensions_mut().insert(self);
        response
    }
}
