//! `status`: every handler's and projection's figures, once or `--watch`ed; and the JSON shape
//! `status --json` prints (documented in docs/cli.md: change both together).

use std::time::{Duration, SystemTime};

use osa_events::ProjectionStatus;
use osa_events::operations::{Count, HandlerStatus, Liveness, NodeStatus, Operations, Status};
use serde_json::{Value, json};

use crate::cli::StatusArgs;
use crate::error::CliError;
use crate::format::{age, ago, cut, or_dash, since, time_millis};
use crate::term::{Interrupt, Stream, Style, Table, paint, stdout_is_terminal};

/// Runs `status`.
pub(crate) async fn run(ops: &dyn Operations, args: &StatusArgs) -> Result<(), CliError> {
    let Some(every) = args.watch else {
        let status = ops.status().await?;
        print!("{}", render(&status, args.json));
        return Ok(());
    };
    let every = every.max(Duration::from_millis(100));
    let clear = stdout_is_terminal() && !args.json;
    let interrupt = Interrupt::install().await;
    loop {
        let status = ops.status().await?;
        let text = render(&status, args.json);
        if clear {
            // Home, then clear: the table redraws in place.
            print!("\x1b[H\x1b[2J{text}");
        } else {
            print!("{text}");
            if !args.json {
                println!();
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = interrupt.wait() => return Ok(()),
        }
    }
}

/// The status as tables, or as one line of JSON.
fn render(status: &Status, as_json: bool) -> String {
    if as_json {
        return format!("{}\n", to_json(status));
    }
    let mut out = String::new();
    let alive = status.nodes.iter().filter(|node| node.alive).count();
    out.push_str(&format!(
        "head {} · {alive} of {} nodes alive · {}\n\n",
        status.head,
        status.nodes.len(),
        crate::format::time(status.at)
    ));
    out.push_str(&handlers_table(status));
    out.push('\n');
    if let Some(options) = options_table(&status.handlers) {
        out.push_str(&options);
        out.push('\n');
    }
    out.push_str(&projections_table(&status.projections, status.at));
    out
}

/// The handlers' table.
fn handlers_table(status: &Status) -> String {
    let now = status.at;
    let mut table = Table::new(&[
        "HANDLER",
        "DUE",
        "SCHEDULED",
        "CLAIMED",
        "WAITING",
        "DEAD",
        "OLDEST DUE",
        "LAG",
        "PAUSED",
        "RETIRED",
        "LIVENESS",
        "LAST ERROR",
    ]);
    for handler in &status.handlers {
        let count = |count: Count, busy: Style| {
            let style = if count.value() > 0 { busy } else { Style::Dim };
            (count.to_string(), style)
        };
        let lag = if handler.lag_events == 0 {
            ("-".to_owned(), Style::Dim)
        } else {
            (
                format!("{} / {}", handler.lag_events, age(handler.lag)),
                Style::Plain,
            )
        };
        let paused = match handler.paused_at {
            Some(at) => (format!("since {}", age(since(at, now))), Style::Yellow),
            None => ("-".to_owned(), Style::Dim),
        };
        let retired = match handler.retired_at {
            Some(at) => (ago(at, now), Style::Yellow),
            None => ("-".to_owned(), Style::Dim),
        };
        let last_error = match &handler.last_error {
            Some((error, at)) => (
                format!("{} ({})", cut(error, 60), ago(*at, now)),
                Style::Red,
            ),
            None => ("-".to_owned(), Style::Dim),
        };
        table.styled_row(vec![
            (handler.name.clone(), Style::Plain),
            count(handler.due, Style::Plain),
            count(handler.scheduled, Style::Plain),
            count(handler.claimed, Style::Plain),
            count(handler.waiting, Style::Plain),
            count(handler.dead, Style::Red),
            (
                or_dash(handler.oldest_due.map(age)),
                if handler.oldest_due.is_some() {
                    Style::Plain
                } else {
                    Style::Dim
                },
            ),
            lag,
            paused,
            retired,
            liveness_cell(handler.liveness),
            last_error,
        ]);
    }
    if table.is_empty() {
        return "no handlers: none has registered a subscription yet\n".to_owned();
    }
    table.render()
}

/// The options every handler was last registered with (its config snapshot, run-time overrides
/// included), one column per option; `None` when no handler's store keeps them.
fn options_table(handlers: &[HandlerStatus]) -> Option<String> {
    const COLUMNS: [(&str, &str); 9] = [
        ("batch", "BATCH"),
        ("concurrency", "CONCURRENCY"),
        ("poll", "POLL"),
        ("retries", "RETRIES"),
        ("backoff", "BACKOFF"),
        ("max_backoff", "MAX BACKOFF"),
        ("claim_timeout", "CLAIM TIMEOUT"),
        ("timeout", "TIMEOUT"),
        ("linger", "LINGER"),
    ];
    let mut header = vec!["HANDLER OPTIONS"];
    header.extend(COLUMNS.iter().map(|(_, title)| *title));
    let mut table = Table::new(&header);
    for handler in handlers.iter().filter(|handler| handler.config.is_object()) {
        let mut row = vec![(handler.name.clone(), Style::Plain)];
        row.extend(
            COLUMNS
                .iter()
                .map(|(key, _)| option_cell(&handler.config[*key])),
        );
        table.styled_row(row);
    }
    (!table.is_empty()).then(|| table.render())
}

/// An option of a config snapshot: a number, a duration (stored as `"1500ms"`, shown as `1s 500ms`),
/// or `-` when unset.
fn option_cell(value: &Value) -> (String, Style) {
    match value {
        Value::Null => ("-".to_owned(), Style::Dim),
        Value::String(text) => {
            let shown = text
                .strip_suffix("ms")
                .and_then(|millis| millis.parse::<u64>().ok())
                .map_or_else(
                    || text.clone(),
                    |millis| humantime::format_duration(Duration::from_millis(millis)).to_string(),
                );
            (shown, Style::Plain)
        }
        other => (other.to_string(), Style::Plain),
    }
}

/// A liveness, coloured.
pub(crate) fn liveness_cell(liveness: Liveness) -> (String, Style) {
    let style = match liveness {
        Liveness::Running { .. } => Style::Green,
        Liveness::Stopped => Style::Dim,
        Liveness::Orphan => Style::Red,
    };
    (liveness.to_string(), style)
}

/// The projections' table (also `projections status`).
pub(crate) fn projections_table(projections: &[ProjectionStatus], now: SystemTime) -> String {
    let mut table = Table::new(&[
        "PROJECTION",
        "CHECKPOINT",
        "LAG",
        "LEADER",
        "UPDATED",
        "LAST ERROR",
    ]);
    for projection in projections {
        let updated = if projection.updated_at == SystemTime::UNIX_EPOCH {
            "never".to_owned()
        } else {
            ago(projection.updated_at, now)
        };
        table.styled_row(vec![
            (projection.name.clone(), Style::Plain),
            (projection.position.to_string(), Style::Plain),
            (
                projection.lag.to_string(),
                if projection.lag > 0 {
                    Style::Yellow
                } else {
                    Style::Dim
                },
            ),
            match &projection.leader {
                Some(leader) => (leader.clone(), Style::Green),
                None => ("none".to_owned(), Style::Yellow),
            },
            (updated, Style::Plain),
            match &projection.last_error {
                Some(error) => (cut(error, 60), Style::Red),
                None => ("-".to_owned(), Style::Dim),
            },
        ]);
    }
    if table.is_empty() {
        let none = "no projections (none has a checkpoint yet)";
        return format!("{}\n", paint(Stream::Stdout, Style::Dim, none));
    }
    table.render()
}

/// `status --json`: the documented, stable shape (docs/cli.md, "status --json").
pub(crate) fn to_json(status: &Status) -> Value {
    json!({
        "at": time_millis(status.at),
        "head": status.head,
        "handlers": status.handlers.iter().map(handler_json).collect::<Vec<_>>(),
        "projections": status.projections.iter().map(projection_json).collect::<Vec<_>>(),
        "nodes": status.nodes.iter().map(node_json).collect::<Vec<_>>(),
    })
}

fn count_json(count: Count) -> Value {
    json!({ "value": count.value(), "exact": matches!(count, Count::Exact(_)) })
}

fn seconds(duration: Option<Duration>) -> Value {
    duration.map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

fn time_json(at: Option<SystemTime>) -> Value {
    at.map_or(Value::Null, |at| json!(time_millis(at)))
}

/// A liveness as JSON: `{"state": "running", "nodes": 2}`, `{"state": "stopped"}`, `{"state": "orphan"}`.
pub(crate) fn liveness_json(liveness: Liveness) -> Value {
    match liveness {
        Liveness::Running { nodes } => json!({ "state": "running", "nodes": nodes }),
        Liveness::Stopped => json!({ "state": "stopped" }),
        Liveness::Orphan => json!({ "state": "orphan" }),
    }
}

fn handler_json(handler: &HandlerStatus) -> Value {
    json!({
        "name": handler.name,
        "event_type": handler.event_type,
        "routing_key": handler.routing_key,
        "options": handler.config,
        "due": count_json(handler.due),
        "scheduled": count_json(handler.scheduled),
        "claimed": count_json(handler.claimed),
        "dead": count_json(handler.dead),
        "waiting": count_json(handler.waiting),
        "oldest_due_seconds": seconds(handler.oldest_due),
        "oldest_claim_seconds": seconds(handler.oldest_claim),
        "claimed_by": handler.claimed_by,
        "lag_events": handler.lag_events,
        "lag_seconds": handler.lag.as_secs_f64(),
        "paused_at": time_json(handler.paused_at),
        "retired_at": time_json(handler.retired_at),
        "last_error": handler.last_error.as_ref().map_or(Value::Null, |(message, at)| {
            json!({ "message": message, "at": time_millis(*at) })
        }),
        "liveness": liveness_json(handler.liveness),
        "backfill": handler.backfill.map_or(Value::Null, |(through, end)| {
            json!({ "through": through, "end": end })
        }),
    })
}

/// A projection as JSON (also `projections status --json`).
pub(crate) fn projection_json(projection: &ProjectionStatus) -> Value {
    json!({
        "name": projection.name,
        "position": projection.position,
        "commit_seq": projection.commit_seq,
        "lag": projection.lag,
        "leader": projection.leader,
        "last_error": projection.last_error,
        "updated_at": time_json(
            (projection.updated_at != SystemTime::UNIX_EPOCH).then_some(projection.updated_at)
        ),
    })
}

/// A node as JSON (also `nodes --json`).
pub(crate) fn node_json(node: &NodeStatus) -> Value {
    let record = &node.record;
    json!({
        "id": record.id.to_string(),
        "name": record.name,
        "namespace": record.namespace,
        "host": record.host,
        "pid": record.pid,
        "version": record.version,
        "handlers": record.handlers,
        "projections": record.projections,
        "started_at": time_millis(record.started_at),
        "heartbeat_seconds": record.heartbeat.as_secs_f64(),
        "last_seen": time_millis(node.last_seen),
        "alive": node.alive,
    })
}
