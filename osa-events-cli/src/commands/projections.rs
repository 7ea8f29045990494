//! `projections status` and `projections reset`.

use std::time::SystemTime;

use osa_events::ResetTo;
use osa_events::operations::Operations;
use osa_events::store::Store;
use serde_json::Value;

use crate::cli::{JsonArg, ResetArgs};
use crate::commands::status::{projection_json, projections_table};
use crate::error::CliError;
use crate::term::{Decision, confirm};

/// Runs `projections status`.
pub(crate) async fn status(ops: &dyn Operations, args: &JsonArg) -> Result<(), CliError> {
    let projections = ops.projections().await?;
    if args.json {
        println!(
            "{}",
            Value::Array(projections.iter().map(projection_json).collect())
        );
    } else {
        print!("{}", projections_table(&projections, SystemTime::now()));
    }
    Ok(())
}

/// Runs `projections reset`.
pub(crate) async fn reset(
    store: &osa_events::AnyStore,
    ops: &dyn Operations,
    args: &ResetArgs,
) -> Result<(), CliError> {
    let projection_store =
        Store::projections(store).ok_or_else(|| CliError::op("this store runs no projections"))?;
    // The store lists only the projections of the program that asks (none, in this tool), and a
    // reset by an unknown name would create a checkpoint: look the name up by itself first.
    let projection = projection_store.status(&args.name, &[]).await?;
    if projection.updated_at == SystemTime::UNIX_EPOCH {
        let listed = ops.projections().await?;
        let names: Vec<&str> = listed.iter().map(|p| p.name.as_str()).collect();
        return Err(CliError::op(format!(
            "no projection is named `{}` in this database: none has a checkpoint by that name \
             (check the name{})",
            args.name,
            if names.is_empty() {
                String::new()
            } else {
                format!("; known projections: {}", names.join(", "))
            }
        )));
    }
    let to = match args.to {
        ResetTo::Beginning => {
            "the beginning: it applies the whole log again (clear its read model first)".to_owned()
        }
        ResetTo::End => "the end: it applies only what commits from now on".to_owned(),
        ResetTo::AfterPosition(position) => {
            format!("position {position}: it applies what committed after that event")
        }
    };
    println!(
        "projection `{}` is at position {} (led by {}); it would be reset to {to}",
        args.name,
        projection.position,
        projection.leader.as_deref().unwrap_or("nobody")
    );
    let action = format!("reset projection `{}`", args.name);
    if confirm(args.confirm, &action)? == Decision::DryRun {
        return Ok(());
    }
    projection_store.reset(&args.name, args.to).await?;
    println!("reset projection `{}`", args.name);
    Ok(())
}
