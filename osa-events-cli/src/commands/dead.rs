//! `dead list` and `dead show`: dead letters as a table, and one delivery in full.

use std::time::SystemTime;

use osa_events::operations::{
    DeliveryDetail, DeliveryKey, DeliveryQuery, DeliveryState, DeliverySummary, Operations,
    Selector,
};
use serde_json::{Value, json};

use crate::cli::{DeadListArgs, DeadShowArgs, Filters};
use crate::error::CliError;
use crate::format::{ago, cut, or_dash, time, time_millis};
use crate::store::subscription;
use crate::term::{Stream, Style, Table, paint};

/// The largest page [`Operations::deliveries`] serves.
pub(crate) const MAX_PAGE: u32 = 1000;

/// The selector of `filters` (no position, no limit).
pub(crate) fn selector(filters: &Filters) -> Selector {
    Selector {
        handler: filters.handler.clone(),
        position: None,
        event_type: filters.event_type.clone(),
        error_contains: filters.error.clone(),
        changed_after: filters.since,
        changed_before: filters.until,
        limit: None,
    }
}

/// Reads the deliveries in `state` that `selector` matches, page by page (keyset: each page
/// starts after the last key of the one before), at most `limit`, handing each page to `each`.
/// Returns whether more remain beyond `limit`.
pub(crate) async fn scan(
    ops: &dyn Operations,
    selector: &Selector,
    state: DeliveryState,
    limit: u64,
    mut each: impl FnMut(&[DeliverySummary]),
) -> Result<bool, CliError> {
    let mut after: Option<DeliveryKey> = None;
    let mut seen = 0u64;
    loop {
        let left = limit - seen;
        if left == 0 {
            // One more row tells whether there are more.
            let query = DeliveryQuery {
                selector: selector.clone(),
                state: Some(state),
                after,
                page_size: 1,
            };
            return Ok(!ops.deliveries(&query).await?.deliveries.is_empty());
        }
        let query = DeliveryQuery {
            selector: selector.clone(),
            state: Some(state),
            after,
            page_size: left.min(u64::from(MAX_PAGE)) as u32,
        };
        let page = ops.deliveries(&query).await?;
        seen += page.deliveries.len() as u64;
        each(&page.deliveries);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(false),
        }
    }
}

/// Runs `dead list`.
pub(crate) async fn list(ops: &dyn Operations, args: &DeadListArgs) -> Result<(), CliError> {
    if let Some(handler) = &args.filters.handler {
        subscription(ops, handler).await?;
    }
    let mut rows = Vec::new();
    let more = scan(
        ops,
        &selector(&args.filters),
        DeliveryState::Dead,
        args.limit,
        |page| rows.extend_from_slice(page),
    )
    .await?;
    if args.json {
        let rows: Vec<Value> = rows.iter().map(summary_json).collect();
        println!("{}", Value::Array(rows));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no dead letters match");
        return Ok(());
    }
    let now = SystemTime::now();
    let mut table = Table::new(&[
        "HANDLER",
        "POSITION",
        "EVENT TYPE",
        "ATTEMPTS",
        "DIED",
        "LAST ERROR",
    ]);
    for row in &rows {
        table.styled_row(vec![
            (row.handler.clone(), Style::Plain),
            (row.key.position.to_string(), Style::Plain),
            (row.event_type.clone(), Style::Plain),
            (row.attempts.to_string(), Style::Plain),
            (ago(row.updated_at, now), Style::Plain),
            (
                or_dash(row.last_error.as_deref().map(|e| cut(e, 80))),
                Style::Red,
            ),
        ]);
    }
    print!("{}", table.render());
    if more {
        println!(
            "{}",
            paint(
                Stream::Stdout,
                Style::Dim,
                &format!(
                    "… more than {} match: raise --limit, or narrow the filters",
                    args.limit
                )
            )
        );
    }
    Ok(())
}

/// A delivery as listed, as JSON (`dead list --json`).
fn summary_json(row: &DeliverySummary) -> Value {
    json!({
        "handler": row.handler,
        "position": row.key.position,
        "state": row.state.as_str(),
        "event_id": row.event_id.to_string(),
        "event_type": row.event_type,
        "routing_key": row.routing_key,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "claimed_by": row.claimed_by,
        "run_at": time_millis(row.run_at),
        "updated_at": time_millis(row.updated_at),
        "published_at": time_millis(row.published_at),
    })
}

/// Runs `dead show`.
pub(crate) async fn show(ops: &dyn Operations, args: &DeadShowArgs) -> Result<(), CliError> {
    subscription(ops, &args.handler).await?;
    let Some(detail) = ops.delivery(&args.handler, args.position).await? else {
        return Err(CliError::op(format!(
            "handler `{}` has no delivery of the event at position {} (completed, purged, or \
             never delivered)",
            args.handler, args.position
        )));
    };
    if args.json {
        println!("{}", detail_json(&detail));
    } else {
        print!("{}", detail_text(&detail, SystemTime::now()));
    }
    Ok(())
}

/// JSON text pretty-printed, or as it is when it does not parse.
fn pretty(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| text.to_owned())
}

fn detail_json(detail: &DeliveryDetail) -> Value {
    let mut value = summary_json(&detail.summary);
    let parsed = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(json!(text));
    value["event_version"] = json!(detail.event_version);
    value["payload"] = parsed(&detail.payload);
    value["metadata"] = parsed(&detail.metadata);
    value
}

fn detail_text(detail: &DeliveryDetail, now: SystemTime) -> String {
    let s = &detail.summary;
    let when = |at: SystemTime| format!("{} ({})", time(at), ago(at, now));
    let run_at_label = match s.state {
        DeliveryState::Pending => "due",
        DeliveryState::Claimed => "claim expires",
        DeliveryState::Dead => "died",
        DeliveryState::Waiting => "waiting since",
    };
    let fields: Vec<(&str, String)> = vec![
        ("handler", s.handler.clone()),
        ("position", detail.position.to_string()),
        (
            "state",
            paint(
                Stream::Stdout,
                if s.state == DeliveryState::Dead {
                    Style::Red
                } else {
                    Style::Plain
                },
                s.state.as_str(),
            ),
        ),
        (
            "event",
            format!("{} v{}", s.event_type, detail.event_version),
        ),
        ("event id", s.event_id.to_string()),
        ("routing key", or_dash(s.routing_key.clone())),
        ("attempts", s.attempts.to_string()),
        ("published", when(s.published_at)),
        (run_at_label, when(s.run_at)),
        ("updated", when(s.updated_at)),
        ("claimed by", or_dash(s.claimed_by.clone())),
        ("last error", or_dash(s.last_error.clone())),
    ];
    let mut out = String::new();
    for (label, value) in fields {
        out.push_str(&format!(
            "{}  {value}\n",
            paint(Stream::Stdout, Style::Bold, &format!("{label:<13}"))
        ));
    }
    for (label, text) in [("payload", &detail.payload), ("metadata", &detail.metadata)] {
        out.push_str(&format!("{}\n", paint(Stream::Stdout, Style::Bold, label)));
        for line in pretty(text).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}
