//! `/`: every handler and projection at a glance, unhealthy ones coloured, with the last hour
//! as a chart.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use osa_events_core::operations::ActivityKind;
use serde::Deserialize;

use super::{handler_href, handler_state, notice};
use crate::chart::{History, sparkline, totals};
use crate::error::PageError;
use crate::format::{self, number};
use crate::health;
use crate::html::Html;
use crate::layout::{Ctx, Nav, Page};
use crate::state::Dashboard;

/// The overview's query: an action's notice.
#[derive(Debug, Deserialize)]
pub(crate) struct OverviewQuery {
    done: Option<String>,
}

/// Renders the overview.
pub(crate) async fn show(
    State(dashboard): State<Arc<Dashboard>>,
    ctx: Ctx,
    Query(query): Query<OverviewQuery>,
) -> Result<Response, PageError> {
    let ops = dashboard.ops();
    let status = ops.status().await?;
    let history = History::new(ops.activity(History::since(status.at)).await?, status.at);
    let now = status.at;
    let projections = super::known_projections(status.projections.clone());

    let mut body = Html::new();
    body.element("h1", "", "Overview");
    notice(&mut body, query.done.as_deref());
    let alive = status.nodes.iter().filter(|node| node.alive).count();
    body.raw("<p class=\"summary\">Head of the log: position ")
        .text(&number(status.head.max(0).unsigned_abs()))
        .raw(" · ")
        .display(status.handlers.len())
        .raw(" handlers · ")
        .display(projections.len())
        .raw(" projections · ")
        .raw("<a")
        .attr("href", &ctx.href("/nodes"))
        .raw(">")
        .display(alive)
        .raw(if alive == 1 { " node" } else { " nodes" })
        .raw(" alive</a> · as of ")
        .text(&format::time(now))
        .raw("</p>");

    body.element("h2", "", "Handlers");
    if status.handlers.is_empty() {
        body.element(
            "p",
            "empty",
            "No handler is registered in this store yet: start a runtime that runs one.",
        );
    } else {
        body.raw(
            "<table class=\"grid\" id=\"handlers\"><thead><tr><th>Handler</th><th>Event type</th>\
             <th class=\"num\">Due</th><th class=\"num\">Scheduled</th><th class=\"num\">Claimed</th>\
             <th class=\"num\">Dead</th><th>Oldest due</th><th>Lag</th><th>State</th>\
             <th>Last hour</th></tr></thead><tbody>",
        );
        for handler in &status.handlers {
            let minutes = history.of(ActivityKind::Handler, &handler.name);
            let (_, failed) = totals(&minutes);
            let verdict = health::of_handler(handler, failed);
            body.raw("<tr")
                .attr("class", verdict.health.class())
                .attr("data-handler", &handler.name)
                .attr("title", &verdict.reasons.join("; "))
                .raw("><td>")
                .link(&handler_href(&ctx, &handler.name), &handler.name)
                .raw("</td><td>")
                .text(&handler.event_type);
            if let Some(key) = &handler.routing_key {
                body.raw(" <span class=\"key\">").text(key).raw("</span>");
            }
            body.raw("</td><td class=\"num due\">")
                .display(handler.due)
                .raw("</td><td class=\"num\">")
                .display(handler.scheduled)
                .raw("</td><td class=\"num\">")
                .display(handler.claimed)
                .raw("</td><td class=\"num dead\">");
            if handler.dead.value() > 0 {
                body.link(
                    &ctx.href(&format!(
                        "/dead?handler={}",
                        crate::html::url_encode(&handler.name)
                    )),
                    &handler.dead.to_string(),
                );
            } else {
                body.display(handler.dead);
            }
            body.raw("</td><td>")
                .text(&handler.oldest_due.map_or("—".to_owned(), format::duration))
                .raw("</td><td>")
                .text(&if handler.lag_events == 0 {
                    "—".to_owned()
                } else {
                    format!(
                        "{} events, {}",
                        number(handler.lag_events),
                        format::duration(handler.lag)
                    )
                })
                .raw("</td><td class=\"state\">")
                .text(&handler_state(handler))
                .raw("</td><td>")
                .append(sparkline(&minutes, 2))
                .raw("</td></tr>");
        }
        body.raw("</tbody></table>");
    }

    body.element("h2", "", "Projections");
    if projections.is_empty() {
        body.element("p", "empty", "No projection has run on this store.");
    } else {
        body.raw(
            "<table class=\"grid\" id=\"projections\"><thead><tr><th>Projection</th>\
             <th class=\"num\">Position</th><th class=\"num\">Lag</th><th>Behind by</th>\
             <th>Leader</th><th>Last error</th><th>Last hour</th></tr></thead><tbody>",
        );
        for projection in &projections {
            let verdict = health::of_projection(projection);
            let minutes = history.of(ActivityKind::Projection, &projection.name);
            body.raw("<tr")
                .attr("class", verdict.health.class())
                .attr("data-projection", &projection.name)
                .attr("title", &verdict.reasons.join("; "))
                .raw("><td>")
                .link(&ctx.href("/projections"), &projection.name)
                .raw("</td>");
            super::projection_cells(&mut body, projection);
            body.raw("<td class=\"error\">")
                .text(
                    &projection
                        .last_error
                        .as_deref()
                        .map_or("—".to_owned(), |error| format::first_line(error, 120)),
                )
                .raw("</td><td>")
                .append(sparkline(&minutes, 2))
                .raw("</td></tr>");
        }
        body.raw("</tbody></table>");
    }
    Ok(Page::new("Overview", Some(Nav::Overview), true, body).render(&ctx))
}
