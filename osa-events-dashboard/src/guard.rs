//! Who gets in, and what every answer carries: the access check (loopback, token), the login
//! cookie, the CSRF check of actions, and the security headers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::PageError;
use crate::layout::{Base, Ctx};
use crate::options::Access;
use crate::pages::error_page;
use crate::pages::login;
use crate::state::Dashboard;

/// The cookie that carries the token after a login.
pub(crate) const COOKIE: &str = "osa_events_dashboard";

/// Scripts and styles from the dashboard's own assets only, no frames, forms to itself: even a
/// payload that slipped past escaping could not run a script.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The middleware in front of every route: works out where the dashboard is mounted, lets in
/// only who may come in, and adds the security headers to what goes out.
pub(crate) async fn guard(
    State(dashboard): State<Arc<Dashboard>>,
    mut request: Request,
    next: Next,
) -> Response {
    let base = mount_point(&request);
    request.extensions_mut().insert(Base(base.clone()));
    let is_asset = request.uri().path().starts_with("/assets/");
    let fragment = is_live_refresh(request.headers());
    let mut response = if is_asset {
        next.run(request).await
    } else {
        match admit(&dashboard, &request, &base) {
            Admission::In => next.run(request).await,
            Admission::Out(response) => response,
        }
    };
    // A page's error comes back bare: frame it here, where the mount point is known.
    if let Some(error) = response.extensions().get::<PageError>().cloned() {
        response = error_page(&Ctx::new(&dashboard, base, fragment), &error);
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The path the dashboard is mounted at (`""` at the root, `/osa` when nested there): what the
/// original URI has in front of the path the router sees.
fn mount_point(request: &Request) -> String {
    let seen = request.uri().path();
    let original = request
        .extensions()
        .get::<OriginalUri>()
        .map_or(seen, |original| original.path());
    let prefix = if seen == "/" {
        // `/osa` and `/osa/` both reach the nested router's `/`.
        original
    } else {
        original.strip_suffix(seen).unwrap_or("")
    };
    prefix.trim_end_matches('/').to_owned()
}

/// What the access check decided.
enum Admission {
    In,
    Out(Response),
}

fn admit(dashboard: &Dashboard, request: &Request, base: &str) -> Admission {
    match &dashboard.options.access {
        Access::Delegated => Admission::In,
        Access::LocalOnly => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| *peer);
            if host_is_loopback(request.headers()) && peer.is_none_or(|p| p.ip().is_loopback()) {
                Admission::In
            } else {
                Admission::Out(
                    (
                        StatusCode::FORBIDDEN,
                        "this dashboard answers requests to localhost only: open it as \
                         http://localhost:<port>/ on its machine, or give it a token",
                    )
                        .into_response(),
                )
            }
        }
        Access::Token(token) => {
            let path = request.uri().path();
            if path == "/login" {
                return Admission::In;
            }
            if presented_token(request.headers()).is_some_and(|given| same(&given, token)) {
                return Admission::In;
            }
            // A link with `?token=` logs in once, then drops the token from the address bar.
            if request.method() == Method::GET
                && let Some(given) = query_value(request.uri().query(), "token")
            {
                if same(&given, token) {
                    let rest = query_without(request.uri().query(), "token");
                    let target = format!("{base}{path}{rest}");
                    return Admission::Out(login::signed_in(base, token, &target));
                }
                return Admission::Out(login::page(base, StatusCode::UNAUTHORIZED, true));
            }
            if request.method() == Method::GET && !is_live_refresh(request.headers()) {
                return Admission::Out(login::page(base, StatusCode::UNAUTHORIZED, false));
            }
            Admission::Out(
                (
                    StatusCode::UNAUTHORIZED,
                    "this dashboard needs its token: log in again",
                )
                    .into_response(),
            )
        }
    }
}

/// Whether a request is the page's own live refresh (it wants a fragment).
pub(crate) fn is_live_refresh(headers: &HeaderMap) -> bool {
    headers.contains_key(crate::layout::LIVE_HEADER)
}

/// The token a request presents: a bearer token, or the login cookie.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    {
        return Some(bearer.trim().to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|cookie| cookie.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| percent_decode(value))
}

/// Whether `Host` names this machine's loopback (any port).
fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        // Nothing says where the request was sent: not provably local.
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Compares two secrets in time that depends on their lengths only.
pub(crate) fn same(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

/// Checks an action (a POST): its form's CSRF token is this dashboard's, and the browser, when
/// it says where the request comes from, says it comes from the dashboard's own pages. Returns
/// the refusal when it may not run.
pub(crate) fn refuse_action(
    dashboard: &Dashboard,
    headers: &HeaderMap,
    csrf: &str,
) -> Option<Response> {
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|site| site != "same-origin" && site != "none");
    let foreign_origin = match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) if origin != "null" => {
            origin.split_once("://").map(|(_, rest)| rest) != Some(host)
        }
        _ => false,
    };
    if cross_site || foreign_origin || !same(csrf, &dashboard.csrf) {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "this action did not come from the dashboard's own page (CSRF check failed): \
             reload the page and try again",
            )
                .into_response(),
        );
    }
    if dashboard.options.read_only {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "this dashboard is read-only: it takes no actions",
            )
                .into_response(),
        );
    }
    None
}

/// A redirect after an action, to `target` (already prefixed with the mount point).
pub(crate) fn see_other(target: &str) -> Response {
    Redirect::to(target).into_response()
}

/// The value of `key` in a query string, percent-decoded.
pub(crate) fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == key)
        .map(|(_, value)| percent_decode(value))
}

/// The query string without `key`, with its `?` (empty when nothing is left).
fn query_without(query: Option<&str>, key: &str) -> String {
    let kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(key))
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

/// Decodes `%XX` and `+` (as a form encodes a space); a `%` without two hex digits stays.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = bytes
            .get(at + 1..at + 3)
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[at], escaped) {
            (b'%', Some(byte)) => {
                out.push(byte);
                at += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                at += 1;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_loopback_hosts_pass() {
        for local in [
            "localhost:8080",
            "127.0.0.1:9",
            "[::1]:80",
            "LOCALHOST",
            "127.0.0.2",
        ] {
            assert!(host_is_loopback(&host(local)), "{local}");
        }
        for remote in [
            "evil.example:8080",
            "10.0.0.1",
            "[2001:db8::1]:80",
            "localhost.evil",
        ] {
            assert!(!host_is_loopback(&host(remote)), "{remote}");
        }
        assert!(!host_is_loopback(&HeaderMap::new()), "no Host, no entry");
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same("0123456789abcdef", "0123456789abcdef"));
        assert!(!same("0123456789abcdeF", "0123456789abcdef"));
        assert!(!same("0123", "0123456789abcdef"));
    }

    #[test]
    fn queries_are_read_and_trimmed() {
        assert_eq!(
            query_value(Some("a=1&token=x%2By+z"), "token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(query_without(Some("token=x&a=1"), "token"), "?a=1");
        assert_eq!(query_without(Some("token=x"), "token"), "");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
