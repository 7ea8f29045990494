//! The page around every view: head, navigation, the live-refresh hook, and the fragment a
//! refresh fetches instead of the whole page.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html as HtmlBody, IntoResponse, Response};

use crate::html::Html;
use crate::state::Dashboard;

/// The header the page's script sends on a live refresh: the answer is the `<main>` element's
/// content only.
pub(crate) const LIVE_HEADER: &str = "x-osa-live";

/// Where the dashboard is mounted (`""` at the root), found by the guard.
#[derive(Debug, Clone)]
pub(crate) struct Base(pub(crate) String);

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    DeadLetters,
    Projections,
    Nodes,
}

impl Nav {
    const ALL: [(Nav, &'static str, &'static str); 4] = [
        (Nav::Overview, "/", "Overview"),
        (Nav::DeadLetters, "/dead", "Dead letters"),
        (Nav::Projections, "/projections", "Projections"),
        (Nav::Nodes, "/nodes", "Nodes"),
    ];
}

/// What a view needs of its request: where links point, the action token, and whether to draw
/// actions at all.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    base: String,
    csrf: String,
    /// Actions are hidden.
    pub(crate) read_only: bool,
    refresh: Duration,
    /// The request is a live refresh: answer with the fragment.
    fragment: bool,
}

impl FromRequestParts<Arc<Dashboard>> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        dashboard: &Arc<Dashboard>,
    ) -> Result<Self, Self::Rejection> {
        let base = parts
            .extensions
            .get::<Base>()
            .map(|Base(base)| base.clone())
            .unwrap_or_default();
        Ok(Self::new(
            dashboard,
            base,
            parts.headers.contains_key(LIVE_HEADER),
        ))
    }
}

impl Ctx {
    /// The context of a request to `dashboard` mounted at `base`.
    pub(crate) fn new(dashboard: &Dashboard, base: String, fragment: bool) -> Self {
        Self {
            base,
            csrf: dashboard.csrf.clone(),
            read_only: dashboard.options.read_only,
            refresh: dashboard.options.refresh,
            fragment,
        }
    }

    /// The address of the dashboard's `path` (which starts with `/`).
    pub(crate) fn href(&self, path: &str) -> String {
        href(&self.base, path)
    }

    /// The opening of a form that runs an action: `<form method="post" action="…">` with the
    /// CSRF token in it. Closed by the caller with `</form>`.
    pub(crate) fn action_form(&self, html: &mut Html, path: &str, class: &str) {
        html.raw("<form method=\"post\"")
            .attr("action", &self.href(path))
            .attr("class", class)
            .raw("><input type=\"hidden\" name=\"csrf\"")
            .attr("value", &self.csrf)
            .raw(">");
    }
}

/// A view, ready to be framed.
#[derive(Debug)]
pub(crate) struct Page {
    title: String,
    nav: Option<Nav>,
    live: bool,
    status: StatusCode,
    body: Html,
}

impl Page {
    /// A page titled `title` under `nav`, refreshed live when `live`.
    pub(crate) fn new(title: impl Into<String>, nav: Option<Nav>, live: bool, body: Html) -> Self {
        Self {
            title: title.into(),
            nav,
            live,
            status: StatusCode::OK,
            body,
        }
    }

    /// The same page with another status.
    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The answer: the whole page, or only its `<main>` content for a live refresh.
    pub(crate) fn render(self, ctx: &Ctx) -> Response {
        if ctx.fragment && self.live {
            return fragment(self.body.into_string(), self.status);
        }
        let mut html = Html::new();
        html.raw(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>",
        )
        .text(&self.title)
        .raw(" · osa-events</title><link rel=\"stylesheet\"")
        .attr("href", &asset(ctx, "dashboard.css"))
        .raw("><script defer")
        .attr("src", &asset(ctx, "dashboard.js"))
        .raw("></script></head><body><header><a class=\"brand\"")
        .attr("href", &ctx.href("/"))
        .raw(">osa-events</a><nav>");
        for (nav, path, label) in Nav::ALL {
            html.raw("<a").attr("href", &ctx.href(path));
            if self.nav == Some(nav) {
                html.raw(" aria-current=\"page\"");
            }
            html.raw(">").text(label).raw("</a>");
        }
        html.raw("</nav>");
        if ctx.read_only {
            html.raw("<span class=\"badge\">read-only</span>");
        }
        html.raw("<span id=\"live\" class=\"live\" aria-live=\"polite\"></span></header><main");
        if self.live {
            html.attr("data-refresh", &ctx.refresh.as_millis().to_string());
        }
        html.raw(">").append(self.body).raw(
            "</main><footer>Times are UTC. <noscript>JavaScript is off: reload the page \
                 for fresh figures.</noscript></footer></body></html>",
        );
        (self.status, HtmlBody(html.into_string())).into_response()
    }
}

/// The `<main>` content of a live refresh.
fn fragment(body: String, status: StatusCode) -> Response {
    let mut response = (status, HtmlBody(body)).into_response();
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static(LIVE_HEADER));
    response
}

/// The address of an embedded asset, with the version, so a new release is fetched anew.
fn asset(ctx: &Ctx, name: &str) -> String {
    ctx.href(&format!("/assets/{name}?v={}", env!("CARGO_PKG_VERSION")))
}

/// The address of `path` (which starts with `/`) of a dashboard mounted at `base`. Its root
/// nested at `/osa` is `/osa`: axum's `nest` does not route `/osa/`.
pub(crate) fn href(base: &str, path: &str) -> String {
    if path == "/" && !base.is_empty() {
        base.to_owned()
    } else {
        format!("{base}{path}")
    }
}
