//! `/projections`: every projection's checkpoint, lag, leader and last error, and a reset after
//! a confirmation.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use osa_events_core::ResetTo;
use serde::Deserialize;

use super::{notice, when};
use crate::error::PageError;
use crate::guard::{refuse_action, see_other};
use crate::health;
use crate::html::{Html, url_encode};
use crate::layout::{Ctx, Nav, Page};
use crate::state::Dashboard;

/// The page's query: an action's notice.
#[derive(Debug, Deserialize)]
pub(crate) struct ProjectionsQuery {
    done: Option<String>,
}

/// Renders the projections.
pub(crate) async fn list(
    State(dashboard): State<Arc<Dashboard>>,
    ctx: Ctx,
    Query(query): Query<ProjectionsQuery>,
) -> Result<Response, PageError> {
    let projections = super::known_projections(dashboard.ops().projections().await?);
    let can_reset = !ctx.read_only && dashboard.projections().is_some();
    let now = SystemTime::now();
    let mut body = Html::new();
    body.element("h1", "", "Projections");
    notice(&mut body, query.done.as_deref());
    if projections.is_empty() {
        body.element("p", "empty", "No projection has run on this store.");
        return Ok(Page::new("Projections", Some(Nav::Projections), true, body).render(&ctx));
    }
    body.raw(
        "<table class=\"grid\" id=\"projections\"><thead><tr><th>Projection</th>\
         <th class=\"num\">Checkpoint</th><th class=\"num\">Lag</th><th>Behind by</th>\
         <th>Leader</th><th>Last error</th><th>Updated</th>",
    );
    if can_reset {
        body.raw("<th>Reset</th>");
    }
    body.raw("</tr></thead><tbody>");
    for projection in &projections {
        let verdict = health::of_projection(projection);
        body.raw("<tr")
            .attr("class", verdict.health.class())
            .attr("data-projection", &projection.name)
            .attr("title", &verdict.reasons.join("; "))
            .raw("><td>")
            .text(&projection.name)
            .raw("</td>");
        super::projection_cells(&mut body, projection);
        body.raw("<td class=\"error\">")
            .text(projection.last_error.as_deref().unwrap_or("—"))
            .raw("</td><td>")
            .text(&if projection.updated_at == SystemTime::UNIX_EPOCH {
                "never ran".to_owned()
            } else {
                when(Some(projection.updated_at), now)
            })
            .raw("</td>");
        if can_reset {
            body.raw("<td>");
            ctx.action_form(
                &mut body,
                &format!("/projections/{}/reset", url_encode(&projection.name)),
                "inline",
            );
            body.raw(
                "<select name=\"to\" aria-label=\"reset to\"><option value=\"beginning\">the \
                 beginning</option><option value=\"end\">the end</option><option \
                 value=\"position\">after position…</option></select> <input name=\"position\" \
                 inputmode=\"numeric\" size=\"8\" placeholder=\"position\" aria-label=\"position\"> \
                 <button type=\"submit\">Reset…</button></form></td>",
            );
        }
        body.raw("</tr>");
    }
    body.raw("</tbody></table>");
    Ok(Page::new("Projections", Some(Nav::Projections), true, body).render(&ctx))
}

/// The reset form.
#[derive(Debug, Deserialize)]
pub(crate) struct ResetForm {
    csrf: String,
    /// `beginning`, `end` or `position`.
    to: String,
    #[serde(default)]
    position: String,
    /// Set by the confirmation page.
    #[serde(default)]
    confirmed: Option<String>,
}

impl ResetForm {
    fn target(&self) -> Result<ResetTo, PageError> {
        match self.to.as_str() {
            "beginning" => Ok(ResetTo::Beginning),
            "end" => Ok(ResetTo::End),
            "position" => self
                .position
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|position| *position >= 0)
                .map(ResetTo::AfterPosition)
                .ok_or_else(|| {
                    PageError::bad_request(format!(
                        "a reset after a position needs the position, a number ≥ 0; found “{}”",
                        self.position.trim()
                    ))
                }),
            other => Err(PageError::bad_request(format!(
                "a projection resets to `beginning`, `end` or `position`, not `{other}`"
            ))),
        }
    }
}

/// `POST /projections/{name}/reset`: asks, then resets.
pub(crate) async fn reset(
    State(dashboard): State<Arc<Dashboard>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<ResetForm>,
) -> Result<Response, PageError> {
    if let Some(refused) = refuse_action(&dashboard, &headers, &form.csrf) {
        return Ok(refused);
    }
    let Some(store) = dashboard.projections() else {
        return Err(PageError::bad_request("this store runs no projections"));
    };
    let to = form.target()?;
    // The store lists the projections it has a checkpoint of; a reset by an unknown name would
    // create one, so the name must be among them.
    let known = super::known_projections(dashboard.ops().projections().await?);
    let Some(projection) = known.iter().find(|p| p.name == name) else {
        let names: Vec<&str> = known.iter().map(|p| p.name.as_str()).collect();
        return Err(PageError::not_found(format!(
            "no projection is named `{name}` in this store (known: {})",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )));
    };
    let meaning = match to {
        ResetTo::Beginning => {
            "the beginning: it applies the whole log again (clear its read model first)".to_owned()
        }
        ResetTo::End => "the end: it applies only what commits from now on".to_owned(),
        ResetTo::AfterPosition(position) => {
            format!("position {position}: it applies what committed after that event")
        }
    };
    if form.confirmed.is_none() {
        let mut body = Html::new();
        body.element("h1", "", "Confirm: reset")
            .raw("<p class=\"confirm\" id=\"confirm-what\">")
            .text(&format!(
                "Reset projection {name}, now at position {} (led by {}), to {meaning}.",
                projection.position,
                projection.leader.as_deref().unwrap_or("nobody")
            ))
            .raw("</p>");
        ctx.action_form(
            &mut body,
            &format!("/projections/{}/reset", url_encode(&name)),
            "inline",
        );
        body.raw("<input type=\"hidden\" name=\"to\"")
            .attr("value", &form.to)
            .raw("><input type=\"hidden\" name=\"position\"")
            .attr("value", &form.position)
            .raw("><input type=\"hidden\" name=\"confirmed\" value=\"yes\">\
                  <button type=\"submit\" id=\"confirm\" class=\"danger\">Yes, reset it</button></form> ")
            .link(&ctx.href("/projections"), "Cancel");
        return Ok(Page::new("Confirm reset", Some(Nav::Projections), false, body).render(&ctx));
    }
    store.reset(&name, to).await?;
    let done = format!("reset {name} to {meaning}");
    tracing::info!(projection = %name, "dashboard: {done}");
    Ok(see_other(
        &ctx.href(&format!("/projections?done={}", url_encode(&done))),
    ))
}
