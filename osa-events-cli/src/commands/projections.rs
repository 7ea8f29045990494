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
    store: &osa_events::PgStore,
    ops: &dyn Operations,
    args: &ResetArgs,
) -> Result<(), CliError> {
    let projections = ops.projections().await?;
    let Some(projection) = projections.iter().find(|p| p.name == args.name) else {
        let known: Vec<&str> = projections.iter().map(|p| p.name.as_str()).collect();
        return Err(CliError::op(format!(
            "no projection is named `{}` (known projections: {})",
            args.name,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
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
        "projection `{}` is at position {} with {} events to apply; it would be reset to {to}",
        projection.name, projection.position, projection.lag
    );
    let action = format!("reset projection `{}`", projection.name);
    if confirm(args.confirm, &action)? == Decision::DryRun {
        return Ok(());
    }
    let projection_store = store
        .projections()
        .ok_or_else(|| CliError::op("this store runs no projections"))?;
    projection_store.reset(&projection.name, args.to).await?;
    println!("reset projection `{}`", projection.name);
    Ok(())
}
