//! `dead retry`, `dead purge` and `pending cancel`: count what the selection matches, show it,
//! confirm (a retry of a single dead letter goes ahead unasked), then change it in chunks of
//! `--chunk`, one transaction each, until done or Ctrl-C.
//!
//! The work is bounded by the count that was shown and confirmed: dead letters that arrive
//! while a purge runs are not purged with them.

use std::collections::BTreeMap;

use osa_events::operations::{DeliveryState, Operations, Selector};

use crate::cli::ChangeArgs;
use crate::commands::dead::{scan, selector};
use crate::error::CliError;
use crate::store::subscription;
use crate::term::{Decision, Interrupt, Progress, confirm};

/// Which deliveries a [`ChangeArgs`] command changes, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// `dead retry`.
    Retry,
    /// `dead purge`.
    Purge,
    /// `pending cancel`.
    Cancel,
}

impl Change {
    /// The states of the deliveries it changes: a cancel takes the waiting ones (behind their
    /// ordering key's head) with the pending.
    fn states(self) -> &'static [DeliveryState] {
        match self {
            Self::Retry | Self::Purge => &[DeliveryState::Dead],
            Self::Cancel => &[DeliveryState::Pending, DeliveryState::Waiting],
        }
    }

    /// The verb, as in "retry 12 dead letters".
    fn verb(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Purge => "purge",
            Self::Cancel => "cancel",
        }
    }

    /// The past tense, as in "retried 12 dead letters".
    fn done(self) -> &'static str {
        match self {
            Self::Retry => "retried",
            Self::Purge => "purged",
            Self::Cancel => "cancelled",
        }
    }

    /// What it changes, for `n` of them.
    fn noun(self, n: u64) -> &'static str {
        match (self, n) {
            (Self::Retry | Self::Purge, 1) => "dead letter",
            (Self::Retry | Self::Purge, _) => "dead letters",
            (Self::Cancel, 1) => "pending delivery",
            (Self::Cancel, _) => "pending deliveries",
        }
    }

    /// One chunk: one call, one transaction.
    async fn apply(self, ops: &dyn Operations, selector: &Selector) -> Result<u64, CliError> {
        Ok(match self {
            Self::Retry => ops.retry_dead(selector).await?,
            Self::Purge => ops.purge_dead(selector).await?,
            Self::Cancel => ops.cancel_pending(selector).await?,
        })
    }
}

/// Checks that `args` select something on purpose: a bare `dead purge` must not purge
/// everything by accident, so selecting all takes `--all`.
///
/// # Errors
///
/// A usage error when neither a filter nor `--all` is given.
pub(crate) fn check(change: Change, args: &ChangeArgs) -> Result<(), CliError> {
    if !args.all && !args.filters.any() {
        return Err(CliError::usage(format!(
            "say which {} to {}: give --handler, --type, --error, --since, --until or \
             --position (with --handler), or --all for every one",
            change.noun(2),
            change.verb()
        )));
    }
    Ok(())
}

/// Runs `change` on the selection of `args`.
pub(crate) async fn run(
    ops: &dyn Operations,
    change: Change,
    args: &ChangeArgs,
) -> Result<(), CliError> {
    check(change, args)?;
    if let Some(handler) = &args.filters.handler {
        subscription(ops, handler).await?;
    }
    let mut selector = selector(&args.filters);
    selector.position = args.position;

    // What matches, by handler.
    let mut by_handler: BTreeMap<String, u64> = BTreeMap::new();
    for state in change.states() {
        scan(ops, &selector, *state, u64::MAX, |page| {
            for delivery in page {
                *by_handler.entry(delivery.handler.clone()).or_default() += 1;
            }
        })
        .await?;
    }
    let total: u64 = by_handler.values().sum();
    if total == 0 {
        println!("no {} match: nothing to {}", change.noun(2), change.verb());
        return Ok(());
    }
    println!("{total} {} match:", change.noun(total));
    for (handler, n) in &by_handler {
        println!("  {handler}: {n}");
    }
    let action = format!("{} {total} {}", change.verb(), change.noun(total));
    // Retrying one dead letter only puts it back into work: that needs no confirmation.
    let ask = !(change == Change::Retry && total == 1) || args.confirm.dry_run;
    if ask && confirm(args.confirm, &action)? == Decision::DryRun {
        return Ok(());
    }

    let interrupt = Interrupt::install().await;
    let mut progress = Progress::new(change.done());
    let mut done = 0u64;
    while done < total && !interrupt.pressed() {
        let chunk = Selector {
            limit: Some(args.chunk.min(total - done)),
            ..selector.clone()
        };
        let changed = match change.apply(ops, &chunk).await {
            Ok(changed) => changed,
            Err(error) => {
                progress.finish();
                if done > 0 {
                    eprintln!(
                        "{} {done} {} before the error",
                        change.done(),
                        change.noun(done)
                    );
                }
                return Err(error);
            }
        };
        if changed == 0 {
            // The rest went meanwhile (a worker claimed it, another operator changed it).
            break;
        }
        done += changed;
        progress.update(done, Some(total), change.noun(2));
    }
    progress.finish();
    if done < total && interrupt.pressed() {
        println!(
            "interrupted: {} {done} of {total} {}; run the command again for the rest",
            change.done(),
            change.noun(total)
        );
        return Err(CliError::op("interrupted by Ctrl-C"));
    }
    println!("{} {done} {}", change.done(), change.noun(done));
    Ok(())
}
