//! `/handlers/{name}`: one handler's deliveries by state, its oldest pending ones, its errors
//! grouped by message, its last hour, and pause or resume.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use osa_events_core::operations::{
    ActivityKind, DeliveryQuery, DeliveryState, DeliverySummary, HandlerStatus, Selector,
    failure_cause,
};
use serde::Deserialize;

use super::{handler_href, handler_state, notice, when};
use crate::chart::{History, sparkline};
use crate::error::PageError;
use crate::format::{self, number};
use crate::guard::{refuse_action, see_other};
use crate::health;
use crate::html::{Html, url_encode};
use crate::layout::{Ctx, Nav, Page};
use crate::state::Dashboard;

/// How many failing deliveries of each state the error groups are drawn from.
const ERRORS_FROM: u32 = 1_000;
/// How many pending deliveries the page lists.
const OLDEST_PENDING: u32 = 10;

/// The page's query: an action's notice.
#[derive(Debug, Deserialize)]
pub(crate) struct HandlerQuery {
    done: Option<String>,
}

/// Renders a handler's page.
pub(crate) async fn show(
    State(dashboard): State<Arc<Dashboard>>,
    ctx: Ctx,
    Path(name): Path<String>,
    Query(query): Query<HandlerQuery>,
) -> Result<Response, PageError> {
    let ops = dashboard.ops();
    let status = ops.status().await?;
    let Some(handler) = status.handler(&name) else {
        let known: Vec<&str> = status.handlers.iter().map(|h| h.name.as_str()).collect();
        return Err(PageError::not_found(format!(
            "no handler is stored as `{name}` (known: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    let now = status.at;
    let history = History::new(ops.activity(History::since(now)).await?, now);
    let minutes = history.of(ActivityKind::Handler, &handler.name);
    let (_, failed) = crate::chart::totals(&minutes);
    let verdict = health::of_handler(handler, failed);

    let mut body = Html::new();
    body.raw("<h1>").text(&handler.name).raw("</h1>");
    notice(&mut body, query.done.as_deref());
    body.raw("<p class=\"summary\">Receives ")
        .text(&handler.event_type);
    if let Some(key) = &handler.routing_key {
        body.raw(" with routing key <span class=\"key\">")
            .text(key)
            .raw("</span>");
    }
    body.raw(" · <span class=\"state\">")
        .text(&handler_state(handler))
        .raw("</span></p>");
    if !verdict.reasons.is_empty() {
        body.raw("<p")
            .attr("class", &format!("verdict {}", verdict.health.class()))
            .raw(">")
            .text(&verdict.reasons.join("; "))
            .raw("</p>");
    }
    if !ctx.read_only && handler.retired_at.is_none() {
        let (path, label) = if handler.paused_at.is_some() {
            ("resume", "Resume")
        } else {
            ("pause", "Pause")
        };
        ctx.action_form(
            &mut body,
            &format!("/handlers/{}/{path}", url_encode(&handler.name)),
            "inline",
        );
        body.raw("<button type=\"submit\"")
            .attr("id", path)
            .raw(">")
            .text(label)
            .raw("</button></form>");
    }

    figures(&mut body, &ctx, handler, now);
    body.element("h2", "", "Last hour")
        .append(sparkline(&minutes, 6));

    let pending = ops
        .deliveries(&DeliveryQuery {
            selector: Selector::handler(&handler.name),
            state: Some(DeliveryState::Pending),
            after: None,
            page_size: OLDEST_PENDING,
        })
        .await?
        .deliveries;
    oldest_pending(&mut body, &pending, now);

    let mut failing = Vec::new();
    for state in [DeliveryState::Dead, DeliveryState::Pending] {
        let page = ops
            .deliveries(&DeliveryQuery {
                selector: Selector::handler(&handler.name),
                state: Some(state),
                after: None,
                page_size: ERRORS_FROM,
            })
            .await?;
        failing.extend(page.deliveries);
    }
    error_groups(&mut body, &ctx, &handler.name, &failing);
    Ok(Page::new(handler.name.clone(), Some(Nav::Overview), true, body).render(&ctx))
}

/// The figures: deliveries by state, waits, claims, lag, last error.
fn figures(body: &mut Html, ctx: &Ctx, handler: &HandlerStatus, now: std::time::SystemTime) {
    let dead_href = ctx.href(&format!("/dead?handler={}", url_encode(&handler.name)));
    body.raw("<dl class=\"figures\"><div><dt>Due</dt><dd id=\"due\">")
        .display(handler.due)
        .raw("</dd></div><div><dt>Scheduled</dt><dd>")
        .display(handler.scheduled)
        .raw("</dd></div><div><dt>Claimed</dt><dd id=\"claimed\">")
        .display(handler.claimed)
        .raw("</dd></div><div><dt>Dead</dt><dd id=\"dead\">")
        .link(&dead_href, &handler.dead.to_string())
        .raw("</dd></div><div><dt>Oldest due</dt><dd>")
        .text(&handler.oldest_due.map_or("—".to_owned(), format::duration))
        .raw("</dd></div><div><dt>Oldest claim</dt><dd>")
        .text(
            &handler
                .oldest_claim
                .map_or("—".to_owned(), format::duration),
        )
        .raw("</dd></div><div><dt>Lag</dt><dd>")
        .text(&format!(
            "{} events, {}",
            number(handler.lag_events),
            format::duration(handler.lag)
        ))
        .raw("</dd></div></dl>");
    body.raw("<dl class=\"facts\"><dt>Claimed by</dt><dd>")
        .text(&if handler.claimed_by.is_empty() {
            "nobody".to_owned()
        } else {
            handler.claimed_by.join(", ")
        })
        .raw("</dd><dt>Paused</dt><dd>")
        .text(&when(handler.paused_at, now))
        .raw("</dd><dt>Last error</dt><dd class=\"error\">");
    match &handler.last_error {
        Some((error, at)) => {
            body.text(&format::first_line(error, 300))
                .raw(" <span class=\"muted\">")
                .text(&when(Some(*at), now))
                .raw("</span>");
        }
        None => {
            body.raw("—");
        }
    }
    body.raw("</dd>");
    if let Some((through, end)) = handler.backfill {
        body.raw("<dt>History copied</dt><dd>").text(&match end {
            Some(end) => format!("through position {through} of {end}"),
            None => "not begun".to_owned(),
        });
        body.raw("</dd>");
    }
    body.raw("</dl>");
}

/// The first pending deliveries, oldest (lowest position) first.
fn oldest_pending(body: &mut Html, pending: &[DeliverySummary], now: std::time::SystemTime) {
    body.element("h2", "", "Oldest pending");
    if pending.is_empty() {
        body.element("p", "empty", "Nothing is pending.");
        return;
    }
    body.raw(
        "<table class=\"grid\"><thead><tr><th class=\"num\">Position</th><th>Event type</th>\
         <th class=\"num\">Attempts</th><th>Due</th><th>Published</th><th>Last error</th></tr>\
         </thead><tbody>",
    );
    for delivery in pending {
        body.raw("<tr><td class=\"num\">")
            .display(delivery.key.position)
            .raw("</td><td>")
            .text(&delivery.event_type)
            .raw("</td><td class=\"num\">")
            .display(delivery.attempts)
            .raw("</td><td>")
            .text(&when(Some(delivery.run_at), now))
            .raw("</td><td>")
            .text(&when(Some(delivery.published_at), now))
            .raw("</td><td class=\"error\">")
            .text(&delivery.last_error.as_deref().map_or("—".to_owned(), |e| {
                format::first_line(failure_cause(e), 160)
            }))
            .raw("</td></tr>");
    }
    body.raw("</tbody></table>");
}

/// Errors grouped by their first line, most frequent first.
fn error_groups(body: &mut Html, ctx: &Ctx, handler: &str, failing: &[DeliverySummary]) {
    body.element("h2", "", "Errors");
    let mut groups: HashMap<String, (u64, u64)> = HashMap::new();
    for delivery in failing {
        let Some(error) = &delivery.last_error else {
            continue;
        };
        // By cause: the runtime's prefix names the event, and would make every group one.
        let line = failure_cause(error).lines().next().unwrap_or("").to_owned();
        let counts = groups.entry(line).or_default();
        if delivery.state == DeliveryState::Dead {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }
    if groups.is_empty() {
        body.element("p", "empty", "No delivery of this handler is failing.");
        return;
    }
    let mut groups: Vec<(String, (u64, u64))> = groups.into_iter().collect();
    groups.sort_by(|a, b| (b.1.0 + b.1.1).cmp(&(a.1.0 + a.1.1)).then(a.0.cmp(&b.0)));
    body.raw("<p class=\"muted\">")
        .text(&format!(
            "From the first {} dead and {} pending deliveries, by position.",
            number(u64::from(ERRORS_FROM)),
            number(u64::from(ERRORS_FROM))
        ))
        .raw(
            "</p><table class=\"grid\" id=\"errors\"><thead><tr><th>Error</th>\
              <th class=\"num\">Dead</th><th class=\"num\">Retrying</th></tr></thead><tbody>",
        );
    for (line, (dead, retrying)) in groups {
        let search: String = line.chars().take(200).collect();
        body.raw("<tr><td class=\"error\">")
            .text(&format::first_line(&line, 200))
            .raw("</td><td class=\"num\">");
        if dead > 0 {
            body.link(
                &ctx.href(&format!(
                    "/dead?handler={}&error={}",
                    url_encode(handler),
                    url_encode(&search)
                )),
                &number(dead),
            );
        } else {
            body.raw("0");
        }
        body.raw("</td><td class=\"num\">")
            .text(&number(retrying))
            .raw("</td></tr>");
    }
    body.raw("</tbody></table>");
}

/// The form of an action on a handler.
#[derive(Debug, Deserialize)]
pub(crate) struct HandlerAction {
    csrf: String,
}

/// `POST /handlers/{name}/pause`.
pub(crate) async fn pause(
    state: State<Arc<Dashboard>>,
    ctx: Ctx,
    headers: HeaderMap,
    path: Path<String>,
    form: Form<HandlerAction>,
) -> Result<Response, PageError> {
    switch(state, ctx, headers, path, form, true).await
}

/// `POST /handlers/{name}/resume`.
pub(crate) async fn resume(
    state: State<Arc<Dashboard>>,
    ctx: Ctx,
    headers: HeaderMap,
    path: Path<String>,
    form: Form<HandlerAction>,
) -> Result<Response, PageError> {
    switch(state, ctx, headers, path, form, false).await
}

async fn switch(
    State(dashboard): State<Arc<Dashboard>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<HandlerAction>,
    pause: bool,
) -> Result<Response, PageError> {
    if let Some(refused) = refuse_action(&dashboard, &headers, &form.csrf) {
        return Ok(refused);
    }
    let ops = dashboard.ops();
    let done = if pause {
        if ops.pause(&name).await? {
            format!("paused {name} on every node")
        } else {
            format!("{name} was paused already")
        }
    } else if ops.resume(&name).await? {
        format!("resumed {name}")
    } else {
        format!("{name} was not paused")
    };
    tracing::info!(handler = %name, "dashboard: {done}");
    Ok(see_other(&format!(
        "{}?done={}",
        handler_href(&ctx, &name),
        url_encode(&done)
    )))
}
