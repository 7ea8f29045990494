//! One module per command (or family of commands); [`run`] dispatches.

use osa_events::AnyStore;

use crate::cli::{Command, DeadCommand, PendingCommand, ProjectionsCommand};
use crate::error::CliError;
use crate::store::{connect, operations};
use change::Change;

mod change;
mod dashboard;
mod dead;
mod nodes;
mod projections;
mod prune;
mod replay;
mod status;
mod subscriptions;

/// Connects to `url` and runs `command`.
pub(crate) async fn run(url: Option<&str>, command: &Command) -> Result<(), CliError> {
    // What the command line alone can tell is told before connecting.
    match command {
        Command::Dead(DeadCommand::Retry(args)) => change::check(Change::Retry, args)?,
        Command::Dead(DeadCommand::Purge(args)) => change::check(Change::Purge, args)?,
        Command::Pending(PendingCommand::Cancel(args)) => change::check(Change::Cancel, args)?,
        _ => {}
    }
    if let Command::Dashboard(args) = command {
        // Checked before connecting: a refusal to listen needs no database.
        dashboard::options(args)?;
    }
    let store: AnyStore = connect(url).await?;
    if let Command::Migrate = command {
        store.migrate().await?;
        println!("migrated: {} is up to date", store.describe());
        return Ok(());
    }
    let ops = operations(&store)?;
    match command {
        Command::Migrate => unreachable!("handled above"),
        Command::Status(args) => status::run(ops, args).await,
        Command::Dead(DeadCommand::List(args)) => dead::list(ops, args).await,
        Command::Dead(DeadCommand::Show(args)) => dead::show(ops, args).await,
        Command::Dead(DeadCommand::Retry(args)) => change::run(ops, Change::Retry, args).await,
        Command::Dead(DeadCommand::Purge(args)) => change::run(ops, Change::Purge, args).await,
        Command::Pending(PendingCommand::Cancel(args)) => {
            change::run(ops, Change::Cancel, args).await
        }
        Command::Replay(args) => replay::run(ops, args).await,
        Command::Pause(args) => subscriptions::pause(ops, args).await,
        Command::Resume(args) => subscriptions::resume(ops, args).await,
        Command::Subscriptions(args) => subscriptions::list(ops, args).await,
        Command::Retire(args) => subscriptions::retire(ops, args).await,
        Command::Prune(args) => prune::run(ops, args).await,
        Command::Nodes(args) => nodes::run(ops, args).await,
        Command::Projections(ProjectionsCommand::Status(args)) => {
            projections::status(ops, args).await
        }
        Command::Projections(ProjectionsCommand::Reset(args)) => {
            projections::reset(&store, ops, args).await
        }
        Command::Dashboard(args) => dashboard::run(store, args).await,
    }
}
