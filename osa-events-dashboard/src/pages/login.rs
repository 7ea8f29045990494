//! `/login`: where a browser hands over the dashboard's token once, for a cookie.

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html as HtmlBody, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::guard::{COOKIE, same};
use crate::html::{Html, url_encode};
use crate::layout::{Base, href};
use crate::options::Access;
use crate::state::Dashboard;

/// The login page (`wrong`: after a wrong token).
pub(crate) fn page(base: &str, status: StatusCode, wrong: bool) -> Response {
    let mut html = Html::new();
    html.raw(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Log in · osa-events</title><link rel=\"stylesheet\"",
    )
    .attr(
        "href",
        &format!(
            "{base}/assets/dashboard.css?v={}",
            env!("CARGO_PKG_VERSION")
        ),
    )
    .raw("></head><body><main class=\"login\"><h1>osa-events</h1>");
    if wrong {
        html.raw("<p class=\"verdict health-bad\">That is not this dashboard's token.</p>");
    }
    html.raw("<form method=\"post\"")
        .attr("action", &format!("{base}/login"))
        .raw(
            "><label>Token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" \
             required autofocus></label> <button type=\"submit\">Log in</button></form>\
             <p class=\"muted\">The dashboard was started with a token (OSA_EVENTS_DASHBOARD_TOKEN \
             or --token): ask whoever runs it.</p></main></body></html>",
        );
    (status, HtmlBody(html.into_string())).into_response()
}

/// A login that succeeded: the cookie, and on to `target`.
pub(crate) fn signed_in(base: &str, token: &str, target: &str) -> Response {
    let path = if base.is_empty() { "/" } else { base };
    let cookie = format!(
        "{COOKIE}={}; Path={path}; HttpOnly; SameSite=Strict",
        url_encode(token)
    );
    let mut response = Redirect::to(target).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The login form.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

/// `GET /login`.
pub(crate) async fn show(axum::Extension(Base(base)): axum::Extension<Base>) -> Response {
    page(&base, StatusCode::OK, false)
}

/// `POST /login`.
pub(crate) async fn submit(
    State(dashboard): State<Arc<Dashboard>>,
    axum::Extension(Base(base)): axum::Extension<Base>,
    Form(form): Form<LoginForm>,
) -> Response {
    match &dashboard.options.access {
        Access::Token(token) if same(form.token.trim(), token) => {
            signed_in(&base, token, &href(&base, "/"))
        }
        Access::Token(_) => page(&base, StatusCode::UNAUTHORIZED, true),
        // Nothing to log in to.
        _ => Redirect::to(&href(&base, "/")).into_response(),
    }
}
