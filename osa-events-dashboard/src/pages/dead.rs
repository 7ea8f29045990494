//! `/dead`: dead letters, filtered by handler, type, error and time; one in full with its
//! payload and metadata; retry or purge one or the filtered set, each after a confirmation.
//!
//! An action over a filtered set changes at most what its confirmation counted (up to
//! [`CONFIRM_UP_TO`]), in chunks of 1,000, one transaction each: dead letters that arrive
//! between the confirmation and the click are not swept along with them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use osa_events_core::operations::{
    DeliveryKey, DeliveryQuery, DeliveryState, DeliverySummary, Operations, Selector, failure_cause,
};
use osa_events_core::store::SubscriptionId;
use serde::Deserialize;

use super::{handler_href, notice, when};
use crate::error::PageError;
use crate::format::{self, number};
use crate::guard::{refuse_action, see_other};
use crate::html::{Html, url_encode};
use crate::layout::{Ctx, Nav, Page};
use crate::state::Dashboard;

/// Dead letters per page of the list.
const PAGE_SIZE: u32 = 50;
/// The most dead letters one confirmation counts, and so one action changes.
pub(crate) const CONFIRM_UP_TO: u64 = 10_000;
/// Dead letters changed per transaction.
const CHUNK: u64 = 1_000;

/// The filters, as the list's query string and the actions' forms carry them. Empty fields are
/// no filter.
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct Filter {
    #[serde(default)]
    handler: String,
    #[serde(default, rename = "type")]
    event_type: String,
    #[serde(default)]
    error: String,
    /// Died at or after (UTC, `2026-12-02T16:30` as a `datetime-local` input sends it).
    #[serde(default)]
    since: String,
    /// Died before.
    #[serde(default)]
    until: String,
}

impl Filter {
    /// The store's selector for these filters.
    fn selector(&self) -> Result<Selector, PageError> {
        let text = |value: &str| Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        Ok(Selector {
            handler: text(&self.handler),
            event_type: text(&self.event_type),
            error_contains: text(&self.error),
            changed_after: parse_time("since", &self.since)?,
            changed_before: parse_time("until", &self.until)?,
            ..Selector::default()
        })
    }

    /// Whether any filter is set.
    fn any(&self) -> bool {
        [
            &self.handler,
            &self.event_type,
            &self.error,
            &self.since,
            &self.until,
        ]
        .iter()
        .any(|value| !value.trim().is_empty())
    }

    /// The filters as a query string (without `?`).
    fn query(&self) -> String {
        [
            ("handler", &self.handler),
            ("type", &self.event_type),
            ("error", &self.error),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .map(|(key, value)| format!("{key}={}", url_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
    }

    /// The filters as hidden fields of a form.
    fn hidden(&self, html: &mut Html) {
        for (key, value) in [
            ("handler", &self.handler),
            ("type", &self.event_type),
            ("error", &self.error),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            html.raw("<input type=\"hidden\"")
                .attr("name", key)
                .attr("value", value)
                .raw(">");
        }
    }

    /// The filters in words, for a confirmation.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (label, value) in [
            ("of handler", &self.handler),
            ("of type", &self.event_type),
            ("with an error containing", &self.error),
            ("dead since", &self.since),
            ("dead before", &self.until),
        ] {
            if !value.trim().is_empty() {
                parts.push(format!("{label} “{}”", value.trim()));
            }
        }
        if parts.is_empty() {
            "every dead letter".to_owned()
        } else {
            format!("dead letters {}", parts.join(", "))
        }
    }
}

/// A time filter: RFC 3339, with or without seconds and zone (UTC).
fn parse_time(field: &str, value: &str) -> Result<Option<SystemTime>, PageError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    // A `datetime-local` input sends `2026-12-02T16:30`: no seconds.
    let with_seconds = if value.len() == 16 {
        format!("{value}:00")
    } else {
        value.to_owned()
    };
    humantime::parse_rfc3339_weak(with_seconds.trim_end_matches('Z'))
        .map(Some)
        .map_err(|error| {
            PageError::bad_request(format!(
                "`{field}` must be a time like 2026-12-02T16:30 (UTC), found “{value}”: {error}"
            ))
        })
}

/// The list's query: filters, where the page starts, and an action's notice.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(flatten)]
    filter: Filter,
    /// `subscription:position` of the last row of the previous page.
    #[serde(default)]
    after: String,
    done: Option<String>,
}

/// Renders the list.
pub(crate) async fn list(
    State(dashboard): State<Arc<Dashboard>>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    let ops = dashboard.ops();
    let selector = query.filter.selector()?;
    let after = parse_key(&query.after)?;
    let handlers = ops.subscriptions().await?;
    let page = ops
        .deliveries(&DeliveryQuery {
            selector,
            state: Some(DeliveryState::Dead),
            after,
            page_size: PAGE_SIZE,
        })
        .await?;
    let now = SystemTime::now();

    let mut body = Html::new();
    body.element("h1", "", "Dead letters");
    notice(&mut body, query.done.as_deref());
    filter_form(&mut body, &ctx, &query.filter, &handlers);

    if page.deliveries.is_empty() {
        body.element(
            "p",
            "empty",
            if after.is_some() {
                "No more dead letters match."
            } else if query.filter.any() {
                "No dead letter matches these filters."
            } else {
                "No dead letters."
            },
        );
    } else {
        dead_table(&mut body, &ctx, &page.deliveries, now);
        if let Some(next) = page.next {
            let mut href = format!("/dead?after={}:{}", next.subscription.0, next.position);
            let filters = query.filter.query();
            if !filters.is_empty() {
                href.push('&');
                href.push_str(&filters);
            }
            body.raw("<p class=\"pager\">")
                .link(&ctx.href(&href), "Next page →")
                .raw("</p>");
        }
        if !ctx.read_only {
            body.raw("<div class=\"actions\">");
            for (action, label) in [
                ("retry", "Retry all matching…"),
                ("purge", "Purge all matching…"),
            ] {
                ctx.action_form(&mut body, &format!("/dead/{action}"), "inline");
                query.filter.hidden(&mut body);
                body.raw("<button type=\"submit\"")
                    .attr("id", &format!("{action}-all"))
                    .attr("class", if action == "purge" { "danger" } else { "" })
                    .raw(">")
                    .text(label)
                    .raw("</button></form>");
            }
            body.raw("</div>");
        }
    }
    Ok(Page::new("Dead letters", Some(Nav::DeadLetters), true, body).render(&ctx))
}

/// A list page's start: `subscription:position`.
fn parse_key(text: &str) -> Result<Option<DeliveryKey>, PageError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let parsed = text.split_once(':').and_then(|(subscription, position)| {
        Some(DeliveryKey {
            subscription: SubscriptionId(subscription.parse().ok()?),
            position: position.parse().ok()?,
        })
    });
    parsed.map(Some).ok_or_else(|| {
        PageError::bad_request(format!(
            "`after` must be `subscription:position`, found “{text}”"
        ))
    })
}

/// The filter form: a GET, so filtered lists can be bookmarked and work without JavaScript.
fn filter_form(
    body: &mut Html,
    ctx: &Ctx,
    filter: &Filter,
    handlers: &[osa_events_core::operations::SubscriptionInfo],
) {
    body.raw("<form method=\"get\" class=\"filters\" id=\"filters\"")
        .attr("action", &ctx.href("/dead"))
        .raw("><label>Handler <select name=\"handler\"><option value=\"\">any</option>");
    for handler in handlers {
        body.raw("<option").attr("value", &handler.name);
        if handler.name == filter.handler {
            body.raw(" selected");
        }
        body.raw(">").text(&handler.name).raw("</option>");
    }
    body.raw("</select></label><label>Type <input name=\"type\"")
        .attr("value", &filter.event_type)
        .raw("></label><label>Error contains <input name=\"error\"")
        .attr("value", &filter.error)
        .raw("></label><label>Dead since <input type=\"datetime-local\" name=\"since\"")
        .attr("value", &filter.since)
        .raw("></label><label>before <input type=\"datetime-local\" name=\"until\"")
        .attr("value", &filter.until)
        .raw("></label><button type=\"submit\">Filter</button> ")
        .link(&ctx.href("/dead"), "Clear")
        .raw("</form>");
}

/// The rows of the list.
fn dead_table(body: &mut Html, ctx: &Ctx, deliveries: &[DeliverySummary], now: SystemTime) {
    body.raw(
        "<table class=\"grid\" id=\"dead-letters\"><thead><tr><th>Handler</th>\
         <th class=\"num\">Position</th><th>Event type</th><th class=\"num\">Attempts</th>\
         <th>Died</th><th>Last error</th></tr></thead><tbody>",
    );
    for delivery in deliveries {
        let detail = ctx.href(&format!(
            "/dead/{}/{}",
            url_encode(&delivery.handler),
            delivery.key.position
        ));
        body.raw("<tr><td>")
            .link(&handler_href(ctx, &delivery.handler), &delivery.handler)
            .raw("</td><td class=\"num\">")
            .link(&detail, &delivery.key.position.to_string())
            .raw("</td><td>")
            .text(&delivery.event_type)
            .raw("</td><td class=\"num\">")
            .display(delivery.attempts)
            .raw("</td><td>")
            .text(&when(Some(delivery.updated_at), now))
            .raw("</td><td class=\"error\">")
            .text(&delivery.last_error.as_deref().map_or("—".to_owned(), |e| {
                format::first_line(failure_cause(e), 160)
            }))
            .raw("</td></tr>");
    }
    body.raw("</tbody></table>");
}

/// The detail's query: an action's notice.
#[derive(Debug, Deserialize)]
pub(crate) struct DetailQuery {
    done: Option<String>,
}

/// Renders one delivery in full.
pub(crate) async fn detail(
    State(dashboard): State<Arc<Dashboard>>,
    ctx: Ctx,
    Path((handler, position)): Path<(String, i64)>,
    Query(query): Query<DetailQuery>,
) -> Result<Response, PageError> {
    let ops = dashboard.ops();
    let Some(delivery) = ops.delivery(&handler, position).await? else {
        // A retry comes back here: a running handler may have handled the delivery before this
        // page loaded. Say what was done, and that it is gone, rather than fail.
        if let Some(done) = query.done.as_deref().filter(|done| !done.is_empty()) {
            let mut body = Html::new();
            body.raw("<h1>")
                .text(&format!("Position {position} of {handler}"))
                .raw("</h1>");
            notice(&mut body, Some(done));
            body.raw("<p class=\"empty\" id=\"gone\">")
                .link(&handler_href(&ctx, &handler), &handler)
                .text(&format!(
                    " has no delivery of the event at position {position} any more: it has \
                     handled it since (or it was purged)."
                ))
                .raw("</p>");
            let title = format!("{handler} · {position}");
            return Ok(Page::new(title, Some(Nav::DeadLetters), false, body).render(&ctx));
        }
        return Err(PageError::not_found(format!(
            "handler `{handler}` has no delivery of the event at position {position}: it was \
             handled, purged, or never delivered to it"
        )));
    };
    let now = SystemTime::now();
    let summary = &delivery.summary;
    let mut body = Html::new();
    body.raw("<h1>")
        .text(&format!("{} at position {position}", summary.event_type))
        .raw("</h1><p class=\"summary\">Delivery to ")
        .link(&handler_href(&ctx, &handler), &handler)
        .raw(" · <span class=\"state\" id=\"state\">")
        .text(summary.state.as_str())
        .raw("</span></p>");
    notice(&mut body, query.done.as_deref());
    if summary.state == DeliveryState::Dead && !ctx.read_only {
        body.raw("<div class=\"actions\">");
        for (action, label) in [("retry", "Retry…"), ("purge", "Purge…")] {
            ctx.action_form(&mut body, &format!("/dead/{action}"), "inline");
            body.raw("<input type=\"hidden\" name=\"handler\"")
                .attr("value", &handler)
                .raw("><input type=\"hidden\" name=\"position\"")
                .attr("value", &position.to_string())
                .raw("><button type=\"submit\"")
                .attr("id", action)
                .attr("class", if action == "purge" { "danger" } else { "" })
                .raw(">")
                .text(label)
                .raw("</button></form>");
        }
        body.raw("</div>");
    }
    body.raw("<dl class=\"facts\"><dt>Event id</dt><dd>")
        .display(summary.event_id)
        .raw("</dd><dt>Version</dt><dd>")
        .display(delivery.event_version)
        .raw("</dd><dt>Routing key</dt><dd>")
        .text(summary.routing_key.as_deref().unwrap_or("—"))
        .raw("</dd><dt>Attempts</dt><dd>")
        .display(summary.attempts)
        .raw("</dd><dt>Published</dt><dd>")
        .text(&when(Some(summary.published_at), now))
        .raw("</dd><dt>Last changed</dt><dd>")
        .text(&when(Some(summary.updated_at), now))
        .raw("</dd><dt>")
        .text(match summary.state {
            DeliveryState::Pending => "Due",
            DeliveryState::Claimed => "Claim expires",
            DeliveryState::Dead => "Died",
            DeliveryState::Waiting => "Waiting since",
        })
        .raw("</dt><dd>")
        .text(&when(Some(summary.run_at), now))
        .raw("</dd>");
    if let Some(worker) = &summary.claimed_by {
        body.raw("<dt>Claimed by</dt><dd>")
            .text(worker)
            .raw("</dd>");
    }
    body.raw("</dl><h2>Last error</h2><pre class=\"error\" id=\"last-error\">")
        .text(summary.last_error.as_deref().unwrap_or("—"))
        .raw("</pre><h2>Payload</h2><pre id=\"payload\">")
        .text(&pretty(&delivery.payload))
        .raw("</pre><h2>Metadata</h2><pre id=\"metadata\">")
        .text(&pretty(&delivery.metadata))
        .raw("</pre>");
    let title = format!("{handler} · {position}");
    Ok(Page::new(title, Some(Nav::DeadLetters), false, body).render(&ctx))
}

/// JSON text, indented; as it is when it does not parse.
fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .unwrap_or_else(|_| json.to_owned())
}

/// The form of a retry or purge: the filters (or one delivery), and the confirmation.
#[derive(Debug, Deserialize)]
pub(crate) struct ActionForm {
    csrf: String,
    #[serde(flatten)]
    filter: Filter,
    /// One delivery (with `handler`).
    #[serde(default)]
    position: Option<String>,
    /// Set by the confirmation page: how many were counted, and so the most to change. (Text:
    /// the form decoder cannot read numbers through the flattened filter.)
    #[serde(default)]
    confirmed: Option<String>,
}

/// Retry or purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Retry,
    Purge,
}

impl Change {
    fn verb(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Purge => "purge",
        }
    }

    async fn apply(self, ops: &dyn Operations, selector: &Selector) -> Result<u64, PageError> {
        Ok(match self {
            Self::Retry => ops.retry_dead(selector).await?,
            Self::Purge => ops.purge_dead(selector).await?,
        })
    }
}

/// `POST /dead/retry`.
pub(crate) async fn retry(
    state: State<Arc<Dashboard>>,
    ctx: Ctx,
    headers: HeaderMap,
    form: Form<ActionForm>,
) -> Result<Response, PageError> {
    change(state, ctx, headers, form, Change::Retry).await
}

/// `POST /dead/purge`.
pub(crate) async fn purge(
    state: State<Arc<Dashboard>>,
    ctx: Ctx,
    headers: HeaderMap,
    form: Form<ActionForm>,
) -> Result<Response, PageError> {
    change(state, ctx, headers, form, Change::Purge).await
}

/// Counts and asks (no `confirmed`), or changes what was confirmed.
async fn change(
    State(dashboard): State<Arc<Dashboard>>,
    ctx: Ctx,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
    change: Change,
) -> Result<Response, PageError> {
    if let Some(refused) = refuse_action(&dashboard, &headers, &form.csrf) {
        return Ok(refused);
    }
    let ops = dashboard.ops();
    let mut selector = form.filter.selector()?;
    let position = match form.position.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            PageError::bad_request(format!("`position` must be a number, found “{text}”"))
        })?),
    };
    if position.is_some() && selector.handler.is_none() {
        return Err(PageError::bad_request(
            "a single dead letter is named by its handler and position",
        ));
    }
    selector.position = position;

    let Some(confirmed) = form.confirmed.as_deref() else {
        return confirm(ops, &ctx, &form, &selector, change).await;
    };
    let confirmed: u64 = confirmed.trim().parse().map_err(|_| {
        PageError::bad_request(format!("`confirmed` must be a count, found “{confirmed}”"))
    })?;
    let mut changed = 0u64;
    while changed < confirmed {
        let chunk = Selector {
            limit: Some((confirmed - changed).min(CHUNK)),
            ..selector.clone()
        };
        let n = change.apply(ops, &chunk).await?;
        if n == 0 {
            break;
        }
        changed += n;
    }
    let noun = if changed == 1 {
        "dead letter"
    } else {
        "dead letters"
    };
    let done = match change {
        Change::Retry => format!("retried {} {noun}: they are due now", number(changed)),
        Change::Purge => format!("purged {} {noun}", number(changed)),
    };
    tracing::info!(selector = ?selector, "dashboard: {done}");
    let back = match position {
        Some(position) if change == Change::Retry => format!(
            "/dead/{}/{position}?done={}",
            url_encode(selector.handler.as_deref().unwrap_or_default()),
            url_encode(&done)
        ),
        _ => {
            let filters = form.filter.query();
            format!(
                "/dead?done={}{}{filters}",
                url_encode(&done),
                if filters.is_empty() { "" } else { "&" }
            )
        }
    };
    Ok(see_other(&ctx.href(&back)))
}

/// The confirmation page: what matches, by handler, and the button that does it.
async fn confirm(
    ops: &dyn Operations,
    ctx: &Ctx,
    form: &ActionForm,
    selector: &Selector,
    change: Change,
) -> Result<Response, PageError> {
    let mut by_handler: BTreeMap<String, u64> = BTreeMap::new();
    let mut after = None;
    let mut counted = 0u64;
    let mut more = false;
    loop {
        let left = CONFIRM_UP_TO - counted;
        if left == 0 {
            more = !ops
                .deliveries(&DeliveryQuery {
                    selector: selector.clone(),
                    state: Some(DeliveryState::Dead),
                    after,
                    page_size: 1,
                })
                .await?
                .deliveries
                .is_empty();
            break;
        }
        let page = ops
            .deliveries(&DeliveryQuery {
                selector: selector.clone(),
                state: Some(DeliveryState::Dead),
                after,
                page_size: left.min(u64::from(DeliveryQuery::MAX_PAGE_SIZE)) as u32,
            })
            .await?;
        counted += page.deliveries.len() as u64;
        for delivery in &page.deliveries {
            *by_handler.entry(delivery.handler.clone()).or_default() += 1;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }

    let verb = change.verb();
    let mut body = Html::new();
    body.raw("<h1>")
        .text(&format!("Confirm: {verb}"))
        .raw("</h1>");
    if counted == 0 {
        body.element("p", "empty", "Nothing matches: there is nothing to do.")
            .raw("<p>")
            .link(&ctx.href("/dead"), "Back to the dead letters")
            .raw("</p>");
        return Ok(Page::new(
            format!("Confirm {verb}"),
            Some(Nav::DeadLetters),
            false,
            body,
        )
        .render(ctx));
    }
    let what = match selector.position {
        Some(position) => format!(
            "the dead letter of the event at position {position} to {}",
            selector.handler.as_deref().unwrap_or_default()
        ),
        None => form.filter.describe(),
    };
    body.raw("<p class=\"confirm\" id=\"confirm-what\">")
        .text(&format!(
            "{} {} {}: {what}.",
            match change {
                Change::Retry => "Retry",
                Change::Purge => "Purge",
            },
            number(counted),
            if counted == 1 {
                "dead letter"
            } else {
                "dead letters"
            }
        ))
        .raw("</p>");
    if more {
        body.element(
            "p",
            "verdict health-warn",
            &format!(
                "More than {} match: this changes the first {} (by handler, then position); \
                 run it again for the rest.",
                number(CONFIRM_UP_TO),
                number(CONFIRM_UP_TO)
            ),
        );
    }
    body.element(
        "p",
        "muted",
        match change {
            Change::Retry => {
                "They become pending and due now, with their attempts reset to 0; the last \
                 error stays for the handler to see."
            }
            Change::Purge => "They are deleted for good: this cannot be undone.",
        },
    );
    body.raw(
        "<table class=\"grid\"><thead><tr><th>Handler</th><th class=\"num\">Dead letters</th>\
              </tr></thead><tbody>",
    );
    for (handler, count) in &by_handler {
        body.raw("<tr><td>")
            .text(handler)
            .raw("</td><td class=\"num\">")
            .text(&number(*count))
            .raw("</td></tr>");
    }
    body.raw("</tbody></table>");
    ctx.action_form(&mut body, &format!("/dead/{verb}"), "inline");
    form.filter.hidden(&mut body);
    if let Some(position) = selector.position {
        body.raw("<input type=\"hidden\" name=\"position\"")
            .attr("value", &position.to_string())
            .raw(">");
    }
    body.raw("<input type=\"hidden\" name=\"confirmed\"")
        .attr("value", &counted.to_string())
        .raw("><button type=\"submit\" id=\"confirm\"")
        .attr(
            "class",
            if change == Change::Purge {
                "danger"
            } else {
                ""
            },
        )
        .raw(">")
        .text(&format!(
            "Yes, {verb} {}",
            if counted == 1 {
                "it".to_owned()
            } else {
                format!("these {}", number(counted))
            }
        ))
        .raw("</button></form> ")
        .link(&ctx.href("/dead"), "Cancel");
    Ok(Page::new(
        format!("Confirm {verb}"),
        Some(Nav::DeadLetters),
        false,
        body,
    )
    .render(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_take_the_inputs_form() {
        let at = parse_time("since", "2026-12-02T16:30").unwrap().unwrap();
        assert_eq!(format::time(at), "2026-12-02 16:30:00");
        assert!(parse_time("since", "").unwrap().is_none());
        let error = parse_time("until", "yesterday").unwrap_err();
        assert!(
            error.message.contains("`until` must be a time"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_filter_round_trips_through_its_query() {
        let filter = Filter {
            handler: "billing@index".to_owned(),
            error: "timed out & more".to_owned(),
            ..Filter::default()
        };
        assert_eq!(
            filter.query(),
            "handler=billing%40index&error=timed%20out%20%26%20more"
        );
        assert_eq!(
            filter.describe(),
            "dead letters of handler “billing@index”, with an error containing “timed out & more”"
        );
        assert_eq!(Filter::default().describe(), "every dead letter");
    }

    #[test]
    fn page_keys_parse_or_say_why_not() {
        assert_eq!(
            parse_key("3:42").unwrap(),
            Some(DeliveryKey {
                subscription: SubscriptionId(3),
                position: 42
            })
        );
        assert!(parse_key("").unwrap().is_none());
        assert!(parse_key("3-42").is_err());
    }
}
