//! `nodes`: the runtime instances seen recently.

use std::time::SystemTime;

use osa_events::operations::Operations;
use serde_json::Value;

use crate::cli::JsonArg;
use crate::commands::status::node_json;
use crate::error::CliError;
use crate::format::{ago, or_dash};
use crate::term::{Style, Table};

/// Runs `nodes`.
pub(crate) async fn run(ops: &dyn Operations, args: &JsonArg) -> Result<(), CliError> {
    let nodes = ops.nodes().await?;
    if args.json {
        println!("{}", Value::Array(nodes.iter().map(node_json).collect()));
        return Ok(());
    }
    if nodes.is_empty() {
        println!("no nodes seen recently");
        return Ok(());
    }
    let now = SystemTime::now();
    let mut table = Table::new(&[
        "NODE",
        "NAMESPACE",
        "HOST",
        "PID",
        "VERSION",
        "HANDLERS",
        "PROJECTIONS",
        "STARTED",
        "LAST SEEN",
        "ALIVE",
    ]);
    for node in &nodes {
        let record = &node.record;
        table.styled_row(vec![
            (record.name.clone(), Style::Plain),
            (or_dash(record.namespace.clone()), Style::Plain),
            (record.host.clone(), Style::Plain),
            (record.pid.to_string(), Style::Plain),
            (record.version.clone(), Style::Plain),
            (record.handlers.len().to_string(), Style::Plain),
            (record.projections.len().to_string(), Style::Plain),
            (ago(record.started_at, now), Style::Plain),
            (ago(node.last_seen, now), Style::Plain),
            if node.alive {
                ("yes".to_owned(), Style::Green)
            } else {
                ("no".to_owned(), Style::Red)
            },
        ]);
    }
    print!("{}", table.render());
    Ok(())
}
