//! The views, one module per page, and what they share.

use std::time::SystemTime;

use axum::response::Response;
use osa_events_core::ProjectionStatus;
use osa_events_core::operations::{HandlerStatus, Liveness};

use crate::error::PageError;
use crate::format;
use crate::html::{Html, url_encode};
use crate::layout::{Ctx, Page};

pub(crate) mod dead;
pub(crate) mod handler;
pub(crate) mod login;
pub(crate) mod nodes;
pub(crate) mod overview;
pub(crate) mod projections;

/// The page of a handler.
pub(crate) fn handler_href(ctx: &Ctx, name: &str) -> String {
    ctx.href(&format!("/handlers/{}", url_encode(name)))
}

/// What a handler is doing, in a word or two: `paused`, `retired`, `running on 2`, `stopped`,
/// `orphan`.
pub(crate) fn handler_state(handler: &HandlerStatus) -> String {
    if handler.retired_at.is_some() {
        "retired".to_owned()
    } else if handler.paused_at.is_some() {
        "paused".to_owned()
    } else {
        match handler.liveness {
            Liveness::Running { nodes: 1 } => "running on 1 node".to_owned(),
            Liveness::Running { nodes } => format!("running on {nodes} nodes"),
            other => other.to_string(),
        }
    }
}

/// The message an action left for the next page (`?done=`), as a notice.
pub(crate) fn notice(html: &mut Html, done: Option<&str>) {
    if let Some(done) = done.filter(|done| !done.is_empty()) {
        html.raw("<p class=\"notice\" role=\"status\">")
            .text(done)
            .raw("</p>");
    }
}

/// An optional time as `2026-12-02 16:30:05 (4m ago)`, or `—`.
pub(crate) fn when(at: Option<SystemTime>, now: SystemTime) -> String {
    at.map_or_else(
        || "—".to_owned(),
        |at| format!("{} ({})", format::time(at), format::ago(at, now)),
    )
}

/// The projections the store knows of: those that have run (a checkpoint) or have a leader.
///
/// The store also lists projections registered in the program that asks and never run; in the
/// dashboard that program is the dashboard's own (the `osa-events` tool has none, a service
/// embedding the router has its own), not the fleet's, so those are left out.
pub(crate) fn known_projections(projections: Vec<ProjectionStatus>) -> Vec<ProjectionStatus> {
    projections
        .into_iter()
        .filter(|projection| {
            projection.updated_at != SystemTime::UNIX_EPOCH || projection.leader.is_some()
        })
        .collect()
}

/// A projection's figure cells: checkpoint, lag, how far behind, leader.
pub(crate) fn projection_cells(body: &mut Html, projection: &ProjectionStatus) {
    body.raw("<td class=\"num\">")
        .text(&format::number(projection.position.max(0).unsigned_abs()))
        .raw("</td><td class=\"num\">")
        .text(&format::number(projection.lag.max(0).unsigned_abs()))
        .raw("</td><td>")
        .text(
            &projection
                .oldest_unapplied
                .map_or("—".to_owned(), format::duration),
        )
        .raw("</td><td>")
        .text(projection.leader.as_deref().unwrap_or("nobody"))
        .raw("</td>");
}

/// The page an error gets, framed like every other.
pub(crate) fn error_page(ctx: &Ctx, error: &PageError) -> Response {
    let mut body = Html::new();
    body.element("h1", "", "Something went wrong")
        .raw("<p class=\"error-message\">")
        .text(&error.message)
        .raw("</p><p>")
        .link(&ctx.href("/"), "Back to the overview")
        .raw("</p>");
    Page::new("Error", None, true, body)
        .with_status(error.status)
        .render(ctx)
}

/// Any other path.
pub(crate) async fn not_found(uri: axum::http::Uri) -> PageError {
    PageError::not_found(format!("the dashboard has no page at {}", uri.path()))
}
