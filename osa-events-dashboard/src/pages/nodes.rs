//! `/nodes`: which runtime instances run which handlers and projections, and when each was
//! last seen.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::response::Response;

use super::{handler_href, when};
use crate::error::PageError;
use crate::html::Html;
use crate::layout::{Ctx, Nav, Page};
use crate::state::Dashboard;

/// Renders the nodes.
pub(crate) async fn list(
    State(dashboard): State<Arc<Dashboard>>,
    ctx: Ctx,
) -> Result<Response, PageError> {
    let nodes = dashboard.ops().nodes().await?;
    let now = SystemTime::now();
    let mut body = Html::new();
    body.element("h1", "", "Nodes");
    if nodes.is_empty() {
        body.element(
            "p",
            "empty",
            "No runtime instance has recorded itself in the last day.",
        );
        return Ok(Page::new("Nodes", Some(Nav::Nodes), true, body).render(&ctx));
    }
    body.raw(
        "<table class=\"grid\" id=\"nodes\"><thead><tr><th>Instance</th><th>Namespace</th>\
         <th>Host</th><th class=\"num\">PID</th><th>Version</th><th>Handlers</th>\
         <th>Projections</th><th>Started</th><th>Last seen</th></tr></thead><tbody>",
    );
    for node in &nodes {
        let record = &node.record;
        body.raw("<tr")
            .attr(
                "class",
                if node.alive {
                    "health-ok"
                } else {
                    "health-warn"
                },
            )
            .raw("><td>")
            .text(&record.name);
        if !node.alive {
            body.raw(" <span class=\"badge\">gone</span>");
        }
        body.raw("</td><td>")
            .text(record.namespace.as_deref().unwrap_or("—"))
            .raw("</td><td>")
            .text(&record.host)
            .raw("</td><td class=\"num\">")
            .display(record.pid)
            .raw("</td><td>")
            .text(&record.version)
            .raw("</td><td>");
        for (i, handler) in record.handlers.iter().enumerate() {
            if i > 0 {
                body.raw(", ");
            }
            body.link(&handler_href(&ctx, handler), handler);
        }
        if record.handlers.is_empty() {
            body.raw("—");
        }
        body.raw("</td><td>")
            .text(&if record.projections.is_empty() {
                "—".to_owned()
            } else {
                record.projections.join(", ")
            })
            .raw("</td><td>")
            .text(&when(Some(record.started_at), now))
            .raw("</td><td>")
            .text(&when(Some(node.last_seen), now))
            .raw("</td></tr>");
    }
    body.raw("</tbody></table>");
    Ok(Page::new("Nodes", Some(Nav::Nodes), true, body).render(&ctx))
}
