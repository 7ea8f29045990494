//! `pause`, `resume`, `subscriptions` and `retire`: the lifecycle of a subscription.

use std::time::SystemTime;

use osa_events::operations::{Liveness, Operations, RetireMode};
use serde_json::{Value, json};

use crate::cli::{HandlerArg, JsonArg, RetireArgs};
use crate::commands::status::{liveness_cell, liveness_json};
use crate::error::CliError;
use crate::format::{ago, or_dash, time_millis};
use crate::store::subscription;
use crate::term::{Decision, Stream, Style, Table, confirm, paint};

/// Runs `pause`.
pub(crate) async fn pause(ops: &dyn Operations, args: &HandlerArg) -> Result<(), CliError> {
    subscription(ops, &args.handler).await?;
    if ops.pause(&args.handler).await? {
        println!(
            "paused `{}` on every node: deliveries accumulate until `osa-events resume {}`",
            args.handler, args.handler
        );
    } else {
        println!("`{}` was paused already", args.handler);
    }
    Ok(())
}

/// Runs `resume`.
pub(crate) async fn resume(ops: &dyn Operations, args: &HandlerArg) -> Result<(), CliError> {
    subscription(ops, &args.handler).await?;
    if ops.resume(&args.handler).await? {
        println!("resumed `{}`", args.handler);
    } else {
        println!("`{}` was not paused", args.handler);
    }
    Ok(())
}

/// Runs `subscriptions`.
pub(crate) async fn list(ops: &dyn Operations, args: &JsonArg) -> Result<(), CliError> {
    let subscriptions = ops.subscriptions().await?;
    if args.json {
        let rows: Vec<Value> = subscriptions
            .iter()
            .map(|s| {
                json!({
                    "id": s.id.0,
                    "name": s.name,
                    "event_type": s.event_type,
                    "routing_key": s.routing_key,
                    "created_at": time_millis(s.created_at),
                    "paused_at": s.paused_at.map(time_millis),
                    "retired_at": s.retired_at.map(time_millis),
                    "liveness": liveness_json(s.liveness),
                    "orphan": s.liveness == Liveness::Orphan,
                    "open": s.open,
                    "dead": s.dead,
                })
            })
            .collect();
        println!("{}", Value::Array(rows));
        return Ok(());
    }
    if subscriptions.is_empty() {
        println!("no subscriptions");
        return Ok(());
    }
    let now = SystemTime::now();
    let mut table = Table::new(&[
        "HANDLER",
        "EVENT TYPE",
        "ROUTING KEY",
        "CREATED",
        "PAUSED",
        "RETIRED",
        "LIVENESS",
        "OPEN",
        "DEAD",
    ]);
    let mut orphans = 0;
    for s in &subscriptions {
        let mut liveness = liveness_cell(s.liveness);
        if s.liveness == Liveness::Orphan && s.retired_at.is_none() {
            orphans += 1;
            liveness.0 = "ORPHAN".to_owned();
        }
        table.styled_row(vec![
            (s.name.clone(), Style::Plain),
            (s.event_type.clone(), Style::Plain),
            (or_dash(s.routing_key.clone()), Style::Plain),
            (ago(s.created_at, now), Style::Plain),
            (or_dash(s.paused_at.map(|at| ago(at, now))), Style::Yellow),
            (or_dash(s.retired_at.map(|at| ago(at, now))), Style::Yellow),
            liveness,
            (s.open.to_string(), Style::Plain),
            (
                s.dead.to_string(),
                if s.dead > 0 { Style::Red } else { Style::Plain },
            ),
        ]);
    }
    print!("{}", table.render());
    if orphans > 0 {
        println!(
            "{}",
            paint(
                Stream::Stdout,
                Style::Yellow,
                &format!(
                    "{orphans} orphan(s): no live node of their namespace runs them (renamed or \
                     removed); retire one with `osa-events retire <handler>`"
                )
            )
        );
    }
    Ok(())
}

/// Runs `retire`.
pub(crate) async fn retire(ops: &dyn Operations, args: &RetireArgs) -> Result<(), CliError> {
    let info = subscription(ops, &args.handler).await?;
    if let Some(at) = info.retired_at {
        println!(
            "`{}` was retired {} already",
            info.name,
            ago(at, SystemTime::now())
        );
        return Ok(());
    }
    if let Liveness::Running { nodes } = info.liveness
        && !args.even_if_running
    {
        return Err(CliError::op(format!(
            "`{}` runs on {nodes} live node(s): stop them or remove the handler first, or pass \
             --even-if-running",
            info.name
        )));
    }
    println!(
        "`{}` ({}, {}): {} open deliveries and {} dead letters would be deleted, and it would \
         receive no delivery from now on",
        info.name, info.event_type, info.liveness, info.open, info.dead
    );
    let action = format!("retire `{}`", info.name);
    if confirm(args.confirm, &action)? == Decision::DryRun {
        return Ok(());
    }
    let mode = if args.even_if_running {
        RetireMode::EvenIfRunning
    } else {
        RetireMode::IfNotRunning
    };
    let retired = ops.retire(&info.name, mode).await?;
    println!(
        "retired `{}`: deleted {} open deliveries and {} dead letters",
        info.name, retired.open, retired.dead
    );
    Ok(())
}
