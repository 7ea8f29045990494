//! The dashboard (`osa_events::dashboard`) on PostgreSQL, request by request: what each page
//! shows, the actions and their confirmations, and the safety rules (escaping, CSRF, read-only,
//! token, local only). The real-browser tests are in `browser.rs`.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use osa_events::dashboard::{self, DashboardOptions};
use osa_events::operations::{DeliveryState, Operations};
use osa_events::store::{ClaimRequest, Failure, Store, Subscription, SubscriptionId};
use osa_events::{Event, Outgoing, ResetTo};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

pub(crate) use crate::operations::kill;
use crate::support::Db;

mod actions;
mod browser;
mod pages;
mod safety;

#[derive(Event, Serialize, Deserialize, Debug)]
#[event(name = "test.dashboard.job")]
struct Job {
    n: u32,
    note: String,
}

/// A database with handlers `dash.a` and `dash.b` subscribed to [`Job`].
async fn db_with_handlers() -> (Db, SubscriptionId, SubscriptionId) {
    let db = Db::new().await;
    let ids = db
        .store
        .register(&[subscription("dash.a"), subscription("dash.b")])
        .await
        .unwrap();
    (db, ids[0], ids[1])
}

fn subscription(name: &str) -> Subscription {
    Subscription {
        name: name.into(),
        event_type: Job::NAME.into(),
        routing_key: None,
        config: serde_json::json!({}),
        revision: 1,
        start_from: Default::default(),
        ordered: None,
    }
}

/// Publishes `count` jobs, in one transaction, each with `note`.
async fn publish(db: &Db, count: u32, note: &str) {
    let batch: Vec<Outgoing> = (0..count)
        .map(|n| {
            Outgoing::new(&Job {
                n,
                note: note.to_owned(),
            })
            .unwrap()
        })
        .collect();
    osa_events::publish_batch(db.pool(), &batch).await.unwrap();
}

fn ops(db: &Db) -> &dyn Operations {
    db.store.operations().expect("PgStore offers operations")
}

/// Dead letters of `handler`, counted through the operations API.
async fn dead_of(db: &Db, handler: &str) -> u64 {
    let status = ops(db).status().await.unwrap();
    status.handler(handler).expect("the handler").dead.value()
}

/// The dashboard of `db` with `options`.
fn app(db: &Db, options: DashboardOptions) -> Router {
    dashboard::router(db.store.clone(), options).expect("a dashboard of a PgStore")
}

/// A response, read whole.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    /// The `Location` of a redirect.
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_else(|| panic!("a redirect, got {}: {}", self.status, self.body))
    }

    /// The CSRF token in the page's first action form.
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let at = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("an action form in {}", self.body))
            + marker.len();
        self.body[at..].split('"').next().unwrap().to_owned()
    }
}

/// Sends `request` (with `Host: localhost` unless it has a host) to `app`.
async fn send(app: &Router, mut request: Request<Body>) -> Reply {
    if !request.headers().contains_key(header::HOST) {
        request
            .headers_mut()
            .insert(header::HOST, "localhost".parse().unwrap());
    }
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 10 << 20)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// `GET path`.
async fn get(app: &Router, path: &str) -> Reply {
    get_with(app, path, &[]).await
}

/// `GET path` with `headers` (a `Host` among them replaces `localhost`).
async fn get_with(app: &Router, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(app, request.body(Body::empty()).unwrap()).await
}

/// `POST path` with the form `fields`.
async fn post(app: &Router, path: &str, fields: &[(&str, &str)]) -> Reply {
    let body: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("{key}={}", encode(value)))
        .collect();
    send(
        app,
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body.join("&")))
            .unwrap(),
    )
    .await
}

/// Percent-encodes a form value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// A projection checkpoint named `name`, as a projection that ran leaves one.
async fn checkpoint(db: &Db, name: &str) {
    let projections = Store::projections(&db.store).expect("PgStore runs projections");
    projections.reset(name, ResetTo::End).await.unwrap();
}

/// The state of `handler`'s delivery at `position`, if it has one.
async fn state_of(db: &Db, handler: &str, position: i64) -> Option<DeliveryState> {
    ops(db)
        .delivery(handler, position)
        .await
        .unwrap()
        .map(|detail| detail.summary.state)
}
